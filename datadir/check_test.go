package datadir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	baoraft "github.com/openbao/openbao/physical/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
)

// TestRaftLogGapCoveredBySnapshot: a node that installed a snapshot keeps
// the log entries before it until they are compacted, so its log may jump
// (1, then 78 after a snapshot at 77): sound while vault.db (the
// snapshot) holds every entry of the gap, damaged when it does not (Raft
// would panic on the entry it cannot find).
func TestRaftLogGapCoveredBySnapshot(t *testing.T) {
	for _, tc := range []struct {
		applied uint64
		refused bool
	}{{77, false}, {90, false}, {50, true}} {
		cfg := config.NewConfig()
		cfg.NodeID, cfg.DataDir = "node-1", filepath.Join(t.TempDir(), "data")
		os.MkdirAll(filepath.Join(cfg.DataDir, "raft"), 0o700)
		store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft", "raft.db")})
		if err != nil {
			t.Fatal(err)
		}
		logs := []*hraft.Log{{Index: 1, Term: 1, Type: hraft.LogCommand, Data: []byte("x")}}
		for i := uint64(78); i <= 100; i++ {
			logs = append(logs, &hraft.Log{Index: i, Term: 3, Type: hraft.LogCommand, Data: []byte("x")})
		}
		if err := store.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
		store.SetUint64([]byte("CurrentTerm"), 3)
		store.Close()
		fsm, err := baoraft.NewFSM(cfg.DataDir, cfg.NodeID, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		fsm.Close()
		db, err := bolt.Open(filepath.Join(cfg.DataDir, "vault.db"), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		iv, _ := proto.Marshal(&baoraft.IndexValue{Term: 3, Index: tc.applied})
		cv, _ := proto.Marshal(&baoraft.ConfigurationValue{Index: 1, Servers: []*baoraft.Server{{Id: "node-1", Address: "127.0.0.1:1", Suffrage: int32(hraft.Voter)}}})
		err = db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("config"))
			b.Put([]byte("latest_indexes"), iv)
			return b.Put([]byte("latest_config"), cv)
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		r := inspectDataDir(cfg, false)
		if r.vault.index != tc.applied {
			t.Fatalf("applied index %d, want %d", r.vault.index, tc.applied)
		}
		if r.StartRefused() != tc.refused || tc.refused && !strings.Contains(r.Refusal, "jumps from entry 1 to 78") {
			t.Errorf("applied %d: refused %v (%s), want %v", tc.applied, r.StartRefused(), r.Refusal, tc.refused)
		}
	}
}
