package appliance

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
)

// copyDir copies a stopped node's data dir (files and directories).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStartRefusesDamagedStorage: a node whose vault.db or raft.db is
// damaged, emptied or gone refuses to start with a *StorageError naming
// the file and what to do, and never advises deleting raft/; one whose
// raft.db alone is gone, as its cluster's only voter, is rebuilt by
// SetAside from vault.db with every secret.
func TestStartRefusesDamagedStorage(t *testing.T) {
	cfg := testConfig(t, &syncBuffer{})
	a, res, _ := startWithSecret(t, cfg, "kept")
	a.Close()
	golden := filepath.Join(t.TempDir(), "golden")
	copyDir(t, cfg.DataDir, golden)

	for _, tc := range []struct {
		name   string
		damage func(dir string) error
		want   []string
	}{
		{"vault.db deleted", func(d string) error { return os.Remove(filepath.Join(d, "vault.db")) },
			[]string{"vault.db is missing, but raft/raft.db holds this node's Raft log", "do not delete it", "snapshot restore", "--set-aside"}},
		{"vault.db emptied", func(d string) error { return os.Truncate(filepath.Join(d, "vault.db"), 0) },
			[]string{"vault.db is empty (0 bytes), but raft/raft.db holds"}},
		{"vault.db random pages", func(d string) error { return scribble(filepath.Join(d, "vault.db"), 2*4096, 64<<10) },
			[]string{"vault.db is damaged: page"}},
		{"vault.db truncated", func(d string) error { return os.Truncate(filepath.Join(d, "vault.db"), 3*4096+100) },
			[]string{"vault.db is damaged: truncated"}},
		{"raft.db random pages", func(d string) error { return scribble(filepath.Join(d, "raft", "raft.db"), 2*4096, 64<<10) },
			[]string{"raft/raft.db is damaged: page"}},
		{"raft.db deleted", func(d string) error { return os.Remove(filepath.Join(d, "raft", "raft.db")) },
			[]string{"raft/raft.db is missing, but vault.db holds this node's data", "rebuild raft/ from vault.db"}},
		{"peers.json damaged", func(d string) error {
			return os.WriteFile(filepath.Join(d, "raft", "peers.json"), []byte("[{"), 0o600)
		}, []string{"raft/peers.json: does not parse", "raft/peers.json: it is the Raft configuration"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.RemoveAll(cfg.DataDir)
			copyDir(t, golden, cfg.DataDir)
			if err := tc.damage(cfg.DataDir); err != nil {
				t.Fatal(err)
			}
			_, err := Start(context.Background(), cfg)
			var se *datadir.StorageError
			if !errors.As(err, &se) || !errors.Is(err, datadir.ErrDamaged) {
				t.Fatalf("start: want a StorageError, got %v", err)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("the refusal does not say %q:\n%s", w, msg)
				}
			}
			if strings.Contains(msg, "delete "+filepath.Join(cfg.DataDir, "raft")) {
				t.Errorf("the refusal advises deleting raft/:\n%s", msg)
			}
			// The lock was released: the check runs.
			r, err := datadir.Check(cfg)
			if err != nil || r.Sound() || !r.StartRefused() {
				t.Fatalf("check after the refusal: %v sound %v", err, r != nil && r.Sound())
			}
		})
	}

	// raft.db gone, vault.db sound, a cluster of one: SetAside keeps
	// vault.db and makes the node its only voter again.
	os.RemoveAll(cfg.DataDir)
	copyDir(t, golden, cfg.DataDir)
	os.Remove(filepath.Join(cfg.DataDir, "raft", "raft.db"))
	if _, _, err := datadir.SetAside(cfg, false, false); err == nil || !strings.Contains(err.Error(), "Add --yes") {
		t.Fatalf("set-aside without --yes: %v", err)
	}
	rep, _, err := datadir.SetAside(cfg, false, true)
	if err != nil || rep.PeersFile == "" || len(rep.Moved) != 1 {
		t.Fatalf("set-aside: %+v %v", rep, err)
	}
	if _, err := os.Stat(filepath.Join(rep.SetAside, "raft")); err != nil {
		t.Fatalf("raft/ was not kept: %v", err)
	}
	b := startNode(t, cfg)
	unsealWithShares(t, b, res.UnsealShares[:2]...)
	got, err := baoClient(t, b, res.RootToken).KVv2("kv").Get(context.Background(), "k")
	if err != nil || got.Data["v"] != "kept" {
		t.Fatalf("after the rebuild: %v %v", got, err)
	}
	b.Close()
	if r, err := datadir.Check(cfg); err != nil || !r.Sound() {
		t.Fatalf("check after the rebuild: %v %+v", err, r.Files)
	}
}

// scribble overwrites n bytes at off with random bytes.
func scribble(path string, off int64, n int) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131 + 7)
	}
	_, err = f.WriteAt(b, off)
	return err
}

// TestInitAdviceOnlyWhenProvable: a marker that stands beside Raft data
// older than the init it names (a cluster in use whose marker came back
// from a backup, or was left by hand) never makes status or init advise
// deleting the data.
func TestInitAdviceOnlyWhenProvable(t *testing.T) {
	cfg := testConfig(t, &syncBuffer{})
	a, _, _ := startWithSecret(t, cfg, "in use")
	a.Close()
	marker := filepath.Join(cfg.DataDir, datadir.InitMarker)
	if err := os.WriteFile(marker, []byte(time.Now().UTC().Format(time.RFC3339Nano)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startNode(t, cfg)
	ctx := context.Background()
	advice := "delete " + filepath.Join(cfg.DataDir, "raft")
	st := b.Status(ctx)
	if !strings.Contains(st.InitInterrupted, "cannot be shown to come from that init alone") || !strings.Contains(st.InitInterrupted, "do not delete it") || strings.Contains(st.InitInterrupted, advice) {
		t.Fatalf("status: %q", st.InitInterrupted)
	}
	if _, err := b.Init(ctx, client.InitRequest{Shares: 3, Threshold: 2}); err == nil || strings.Contains(err.Error(), advice) {
		t.Fatalf("init: %v", err)
	}
	b.Close()
	r, err := datadir.Check(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var f *datadir.File
	for i := range r.Files {
		if r.Files[i].Name == datadir.InitMarker {
			f = &r.Files[i]
		}
	}
	if f == nil || !strings.Contains(f.Action, "keep it") {
		t.Fatalf("check: %+v", r.Files)
	}
}
