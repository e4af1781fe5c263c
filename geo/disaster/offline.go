package disaster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	baoraft "github.com/openbao/openbao/physical/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo/reconciler"
	bolt "go.etcd.io/bbolt"
)

// offlineTopology is the topology an offline command works from; the node
// must be in it.
func offlineTopology(cfg *config.Config) (*geo.Topology, error) {
	if cfg.Geo == nil {
		return nil, errors.New("the config has no geo block: Geo commands need the topology")
	}
	t := cfg.Geo.Validated()
	if t == nil {
		var err error
		if t, err = cfg.Geo.Topology(); err != nil {
			return nil, err
		}
	}
	if _, _, ok := t.SiteOf(cfg.NodeID); !ok {
		return nil, fmt.Errorf("node_id %s is not a node of the topology", cfg.NodeID)
	}
	return t, nil
}

func siteNames(t *geo.Topology) []string {
	var out []string
	for _, s := range t.Sites {
		out = append(out, s.Name)
	}
	return out
}

// offlineState is what a stopped node's data says.
type offlineState struct {
	voters   []string
	epoch    geo.Epoch
	survivor geo.Survivor
}

// readOfflineState reads a stopped node's FSM (its applied index, the
// Raft configuration it applied, the epoch in Raft) and its log's end.
func readOfflineState(cfg *config.Config) (offlineState, error) {
	var st offlineState
	logDB := filepath.Join(cfg.DataDir, "raft", "raft.db")
	if _, err := os.Stat(logDB); err != nil {
		return st, fmt.Errorf("this node has no Raft data (%s): it has nothing to promote; it can join the promoted site once that runs", logDB)
	}
	// bbolt panics on a damaged file: verify both first (see datadir.Damage).
	for _, p := range []string{filepath.Join(cfg.DataDir, "vault.db"), logDB} {
		if d := datadir.Damage(p); d != "" {
			return st, fmt.Errorf("%s: %s: this node's data cannot be promoted; promote the site's other nodes, and see `gitlab-secrets-appliance check --config <config file>` for this one", p, d)
		}
	}
	fsm, err := baoraft.NewFSM(cfg.DataDir, cfg.NodeID, hclog.NewNullLogger())
	if err != nil {
		return st, fmt.Errorf("cannot open %s: %w", filepath.Join(cfg.DataDir, "vault.db"), err)
	}
	idx, conf := fsm.LatestState()
	inRaft, kerr := reconciler.ReadEpochKey(context.Background(), fsm)
	fsm.Close()
	if kerr != nil {
		return st, kerr
	}
	if conf != nil {
		for _, s := range conf.Servers {
			if hraft.ServerSuffrage(s.Suffrage) == hraft.Voter {
				st.voters = append(st.voters, s.Id)
			}
		}
	}
	file, err := datadir.ReadEpochFile(cfg.DataDir)
	if err != nil {
		return st, err
	}
	st.epoch = file
	if inRaft.Number > file.Number {
		st.epoch = inRaft
	}
	st.survivor = geo.Survivor{Node: cfg.NodeID, AppliedIndex: idx.Index}
	store, err := openLogStore(logDB)
	if err != nil {
		return st, err
	}
	defer store.Close()
	last, err := store.LastIndex()
	if err != nil {
		return st, err
	}
	st.survivor.LastIndex = last
	if last > 0 {
		var l hraft.Log
		if err := store.GetLog(last, &l); err == nil {
			st.survivor.LastTerm, st.survivor.LastAt = l.Term, l.AppendedAt.UTC()
		}
	}
	return st, nil
}

// openLogStore opens raft.db as OpenBao does.
func openLogStore(path string) (*raftboltdb.BoltStore, error) {
	s, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bolt.Options{
		Timeout: time.Second, FreelistType: bolt.FreelistMapType, NoFreelistSync: true,
	}})
	if err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", path, err)
	}
	return s, nil
}
