package appliance

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
)

// A second node on a data directory is refused at once, naming the
// process that holds it; once the first has closed, it starts.
func TestDataDirHasOneOwner(t *testing.T) {
	first := testConfig(t, &syncBuffer{})
	a := startNode(t, first)
	b, err := os.ReadFile(filepath.Join(first.DataDir, datadir.LockFile))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file: %q, %v", b, err)
	}

	second := testConfig(t, &syncBuffer{})
	second.DataDir = first.DataDir
	if _, err := Start(context.Background(), second); !errors.Is(err, datadir.ErrInUse) ||
		err.Error() != "data_dir "+first.DataDir+" is in use by process "+strconv.Itoa(os.Getpid())+
			": one node owns a data directory; stop that node first, or give this one its own data_dir" {
		t.Fatalf("second Start on the data dir: %v", err)
	}
	// The refused node opened nothing: its API port is free.
	if l, err := net.Listen("tcp", second.Listeners[0].Address); err != nil {
		t.Fatalf("the refused node left its API listener open: %v", err)
	} else {
		l.Close()
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	startNode(t, second)
}

// A cluster port in use fails Start with the address named, and Start
// undoes what it opened (the API listener, the data_dir lock).
func TestClusterPortInUse(t *testing.T) {
	cfg := testConfig(t, &syncBuffer{})
	busy, err := net.Listen("tcp", cfg.Cluster.Address)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), cfg)
	busy.Close()
	want := "cluster.address " + cfg.Cluster.Address + " is in use: bind: address already in use; stop the process listening there, or set another cluster.address"
	if err == nil || err.Error() != want {
		t.Fatalf("Start with the cluster port taken: %v, want %q", err, want)
	}
	if l, err := net.Listen("tcp", cfg.Listeners[0].Address); err != nil {
		t.Fatalf("the failed Start left its API listener open: %v", err)
	} else {
		l.Close()
	}
	startNode(t, cfg) // the lock was released
}
