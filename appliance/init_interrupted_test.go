package appliance

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	baoraft "github.com/openbao/openbao/physical/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/atomicfile"
)

// TestInitKilledBetweenBarrierAndSealConfig: OpenBao's init writes the
// barrier's keyring, then the seal configuration. A node killed between
// the two (CI met it once) made every later init fail with OpenBao's
// "barrier reports initialized but no seal configuration found". The
// state is made here exactly: a finished init with the seal configuration
// taken out of the FSM offline, and the marker an unfinished init leaves.
func TestInitKilledBetweenBarrierAndSealConfig(t *testing.T) {
	initStarted := time.Now().UTC().Format(time.RFC3339Nano) + "\n" // as Init writes it
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	a := startNode(t, cfg)
	initAndUnseal(t, a)
	a.Close()

	fsm, err := baoraft.NewFSM(cfg.DataDir, cfg.NodeID, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := fsm.Delete(context.Background(), "core/seal-config"); err != nil {
		t.Fatal(err)
	}
	fsm.Close()
	if err := os.WriteFile(filepath.Join(cfg.DataDir, datadir.InitMarker), []byte(initStarted), 0o600); err != nil {
		t.Fatal(err)
	}

	b := startNode(t, cfg)
	ctx := context.Background()
	st := b.Status(ctx)
	if st.State != client.StateUninitialized || !strings.Contains(st.InitInterrupted, "stopped before it finished") {
		t.Fatalf("status: state %s, init_interrupted %q", st.State, st.InitInterrupted)
	}
	if sum := st.Summary(); !strings.Contains(sum, "delete") {
		t.Fatalf("summary does not say what to do: %s", sum)
	}
	if _, err := b.Init(ctx, client.InitRequest{Shares: 3, Threshold: 2}); !errors.Is(err, ErrInterruptedInit) || !strings.Contains(err.Error(), "vault.db") {
		t.Fatalf("init: want the interrupted init explained, got %v", err)
	}
}

// TestInitMarker: a node killed after OpenBao's init wrote everything but
// before the answer left it looks initialized, and nobody holds its shares
// or root token. The marker Init leaves until the answer is ready says so;
// once the operator deleted the Raft state, init works and the stale
// marker goes.
func TestInitMarker(t *testing.T) {
	initStarted := time.Now().UTC().Format(time.RFC3339Nano) + "\n"
	cfg := testConfig(t, &syncBuffer{})
	a := startNode(t, cfg)
	initAndUnseal(t, a)
	marker := filepath.Join(cfg.DataDir, datadir.InitMarker)
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the marker outlived a finished init: %v", err)
	}
	a.Close()
	if err := os.WriteFile(marker, []byte(initStarted), 0o600); err != nil {
		t.Fatal(err)
	}

	b := startNode(t, cfg)
	ctx := context.Background()
	if st := b.Status(ctx); !st.Initialized || !strings.Contains(st.InitInterrupted, "never left this node") {
		t.Fatalf("status: initialized %v, init_interrupted %q", st.Initialized, st.InitInterrupted)
	}
	if _, err := b.Init(ctx, client.InitRequest{Shares: 3, Threshold: 2}); !errors.Is(err, ErrInterruptedInit) {
		t.Fatalf("init: want the interrupted init explained, got %v", err)
	}
	b.Close()
	for _, p := range []string{"raft", "vault.db"} {
		if err := os.RemoveAll(filepath.Join(cfg.DataDir, p)); err != nil {
			t.Fatal(err)
		}
	}
	c := startNode(t, cfg)
	if st := c.Status(ctx); st.Initialized || st.InitInterrupted != "" {
		t.Fatalf("after the advice: initialized %v, init_interrupted %q", st.Initialized, st.InitInterrupted)
	}
	initAndUnseal(t, c)
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the stale marker stayed: %v", err)
	}
}

// TestInitWithholdsAnswerWhenMarkerStays: an init whose marker cannot be
// removed withholds its answer, so that a standing marker always means
// that nobody holds the cluster's keys; status then advises starting
// over, which is true.
func TestInitWithholdsAnswerWhenMarkerStays(t *testing.T) {
	cfg := testConfig(t, &syncBuffer{})
	a := startNode(t, cfg)
	removeInitMarker = func(string) error { return errors.New("read-only file system") }
	defer func() { removeInitMarker = atomicfile.Remove }()
	ctx := context.Background()
	res, err := a.Init(ctx, client.InitRequest{Shares: 3, Threshold: 2})
	if err == nil || res != nil || !strings.Contains(err.Error(), "withheld") {
		t.Fatalf("init: %v %v", res, err)
	}
	if st := a.Status(ctx); !strings.Contains(st.InitInterrupted, "never left this node") {
		t.Fatalf("status: %q", st.InitInterrupted)
	}
}
