package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// snapshotInfo is what `snapshot inspect --format json` prints.
type snapshotInfo struct {
	Index    uint64 `json:"index"`
	FileSize int64  `json:"file_size"`
	SHA256   string `json:"sha256"`
	Entries  int    `json:"entries"`
	Seal     struct {
		Cluster    string `json:"cluster"`
		Generation uint32 `json:"generation"`
	} `json:"seal"`
}

// snapshotNode is a running single node, initialized, with KV v2 at kv/.
type snapshotNode struct {
	addr string
	res  initOutput
	n    *harness.Node
}

func startSnapshotNode(t *testing.T, tr *harness.Transcript, bin string) *snapshotNode {
	t.Helper()
	cfg, addr, _ := singleNode(t)
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	res := initCluster(t, bin, addr, "--shares", "1", "--threshold", "1")
	waitState(t, tr, bin, addr, "active")
	harness.MountKVv2(t, apiClient(t, addr, res.RootToken), "kv")
	return &snapshotNode{addr: addr, res: res, n: n}
}

// snapshot save, inspect and restore on real nodes: the file is whole,
// 0600, and says what it is; a restore brings every secret back as it was;
// a truncated, a bit-flipped and another cluster's snapshot are refused
// with what is wrong and change nothing; restore asks first. No secret
// value or token appears in any output.
func TestSnapshotSaveRestore(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	a := startSnapshotNode(t, tr, bin)
	kv := apiClient(t, a.addr, a.res.RootToken).KVv2("kv")
	ctx := context.Background()
	value := func(i int) string { return fmt.Sprintf("secret-value-%d-%s", i, strings.Repeat("x", 8)) }
	for i := range 20 {
		if _, err := kv.Put(ctx, fmt.Sprintf("s%d", i), map[string]any{"v": value(i)}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "a.snap")
	run := func(stdin string, args ...string) (string, string, int) {
		var in []byte
		if stdin != "" {
			in = []byte(stdin + "\n")
		}
		return harness.Run(t, tr, in, bin, args...)
	}
	if out, errOut, code := run(a.res.RootToken, "snapshot", "save", file, "--address", a.addr); code != 0 || !strings.Contains(out, "Saved "+file) {
		t.Fatalf("snapshot save: exit %d: %s %s", code, out, errOut)
	}
	if mode, _, _ := fileMode(t, file); mode != 0o600 {
		t.Errorf("the snapshot's mode is %o, want 600", mode)
	}
	if _, errOut, code := run(a.res.RootToken, "snapshot", "save", file, "--address", a.addr); code != 1 || !strings.Contains(errOut, "exists") {
		t.Errorf("snapshot save over a file: exit %d: %s", code, errOut)
	}
	inspect := func(path string) (snapshotInfo, string, int) {
		out, errOut, code := run("", "snapshot", "inspect", path, "--format", "json")
		var info snapshotInfo
		json.Unmarshal([]byte(out), &info)
		return info, errOut, code
	}
	info, errOut, code := inspect(file)
	raw, _ := os.ReadFile(file)
	sum := sha256.Sum256(raw)
	st, _ := status(t, tr, bin, a.addr)
	if code != 0 || info.Index == 0 || info.Entries < 20 || info.SHA256 != hex.EncodeToString(sum[:]) || info.FileSize != int64(len(raw)) ||
		info.Seal.Cluster == "" || info.Seal.Generation != 1 {
		t.Fatalf("snapshot inspect: exit %d %s: %+v", code, errOut, info)
	}
	if out, _, code := run("", "snapshot", "inspect", file); code != 0 || !strings.Contains(out, "seal generation 1") {
		t.Errorf("snapshot inspect (table): exit %d: %s", code, out)
	}

	// The data moves on after the snapshot.
	kv.Put(ctx, "s0", map[string]any{"v": "changed"})
	kv.DeleteMetadata(ctx, "s1")
	kv.Put(ctx, "after", map[string]any{"v": "not in the snapshot"})
	unchanged := func(what string) {
		t.Helper()
		if s, err := kv.Get(ctx, "after"); err != nil || s.Data["v"] != "not in the snapshot" {
			t.Fatalf("%s changed the data: %v", what, err)
		}
	}

	// Damaged files: refused, offline and by restore, nothing changed.
	truncated := filepath.Join(dir, "truncated.snap")
	os.WriteFile(truncated, raw[:len(raw)/2], 0o600)
	flipped := filepath.Join(dir, "flipped.snap")
	bad := append([]byte{}, raw...)
	bad[len(bad)/2] ^= 0x40
	os.WriteFile(flipped, bad, 0o600)
	for _, f := range []string{truncated, flipped} {
		if _, errOut, code := inspect(f); code != 1 || !strings.Contains(errOut, "not a complete snapshot") {
			t.Errorf("inspect %s: exit %d: %s", filepath.Base(f), code, errOut)
		}
		if _, errOut, code := run(a.res.RootToken, "snapshot", "restore", f, "--yes", "--address", a.addr); code != 1 ||
			!strings.Contains(errOut, "not a complete snapshot") || !strings.Contains(errOut, "nothing was changed") {
			t.Errorf("restore %s: exit %d: %s", filepath.Base(f), code, errOut)
		}
	}
	unchanged("damaged snapshots")

	// Another cluster's snapshot: refused, nothing changed.
	b := startSnapshotNode(t, tr, bin)
	other := filepath.Join(dir, "b.snap")
	if _, errOut, code := run(b.res.RootToken, "snapshot", "save", other, "--address", b.addr); code != 0 {
		t.Fatalf("snapshot save on the other cluster: exit %d: %s", code, errOut)
	}
	if _, errOut, code := run(a.res.RootToken, "snapshot", "restore", other, "--yes", "--address", a.addr); code != 1 ||
		!strings.Contains(errOut, "is a snapshot of cluster") || !strings.Contains(errOut, st.Seal.Cluster) {
		t.Errorf("restore of another cluster's snapshot: exit %d: %s", code, errOut)
	}
	unchanged("another cluster's snapshot")

	// Without --yes (no terminal) restore says what it would do.
	if _, errOut, code := run(a.res.RootToken, "snapshot", "restore", file, "--address", a.addr); code != 64 || !strings.Contains(errOut, "add --yes") {
		t.Errorf("restore without --yes: exit %d: %s", code, errOut)
	}
	unchanged("restore without --yes")

	if out, errOut, code := run(a.res.RootToken, "snapshot", "restore", file, "--yes", "--address", a.addr); code != 0 || !strings.Contains(out, "Restored") {
		t.Fatalf("snapshot restore: exit %d: %s %s", code, out, errOut)
	}
	harness.Eventually(t, time.Minute, "the restored data", func() bool {
		s, err := kv.Get(ctx, "s0")
		return err == nil && s.Data["v"] == value(0)
	})
	for i := range 20 {
		s, err := kv.Get(ctx, fmt.Sprintf("s%d", i))
		if err != nil || s.Data["v"] != value(i) {
			t.Fatalf("after the restore, s%d: %v", i, err)
		}
	}
	if s, err := kv.Get(ctx, "after"); err == nil && s != nil {
		t.Fatal("a secret written after the snapshot is still there after the restore")
	}
	scanForSecrets(t, tr.String(), append([]string{a.res.RootToken, b.res.RootToken, value(3), "not in the snapshot"}, a.res.Shares...))
}

// A lost cluster rebuilt from its snapshot (the acceptance's "restored into
// a fresh cluster of the same seal"): on a new node with an empty data dir,
// `snapshot restore FILE --new-cluster` makes it a cluster of one holding
// the snapshot; with the same HSM in its config it unseals by itself, with
// Shamir only it takes the old shares; every secret reads back with the
// old cluster's token. A data dir that holds a cluster is refused.
func TestSnapshotNewCluster(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	hsm := harness.NewSoftHSM(t, "gitlab-secrets")
	hsm.GenerateAESKey(t, "kek")
	cfg, addr := nodeConfig(t, dir, "node-1", "127.0.0.1", "", hsmSeal(t, hsm, dir, "kek", true))
	n := harness.StartNode(t, tr, bin, cfg, addr, hsm.Env()...)
	n.WaitServing(t, tr)
	res := initCluster(t, bin, addr)
	waitState(t, tr, bin, addr, "active")
	c := apiClient(t, addr, res.RootToken)
	harness.MountKVv2(t, c, "kv")
	ctx := context.Background()
	for i := range 30 {
		if _, err := c.KVv2("kv").Put(ctx, fmt.Sprintf("s%d", i), map[string]any{"v": fmt.Sprintf("value-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "lost.snap")
	if _, errOut, code := harness.Run(t, tr, []byte(res.RootToken+"\n"), bin, "snapshot", "save", file, "--address", addr); code != 0 {
		t.Fatalf("snapshot save: exit %d: %s", code, errOut)
	}
	n.Signal(t, syscall.SIGTERM, time.Minute) // the cluster is lost

	for _, tc := range []struct {
		name, seal string
	}{
		{"hsm", hsmSeal(t, hsm, dir, "kek", false)},
		{"shares", "seal {\n  shamir {\n    shares = 3\n    threshold = 2\n  }\n}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, addr := nodeConfig(t, dir, "rebuilt-"+tc.name, "127.0.0.1", "", tc.seal)
			out, errOut, code := harness.Run(t, tr, nil, bin, "snapshot", "restore", file, "--new-cluster", "--config", cfg)
			if code != 0 || !strings.Contains(out, "now holds") {
				t.Fatalf("restore --new-cluster: exit %d: %s %s", code, out, errOut)
			}
			if _, errOut, code := harness.Run(t, tr, nil, bin, "snapshot", "restore", file, "--new-cluster", "--config", cfg); code != 1 || !strings.Contains(errOut, "already holds") {
				t.Errorf("restore --new-cluster over a cluster: exit %d: %s", code, errOut)
			}
			n := harness.StartNode(t, tr, bin, cfg, addr, hsm.Env()...)
			defer n.Signal(t, syscall.SIGTERM, time.Minute)
			n.WaitServing(t, tr)
			if tc.name == "shares" {
				submitShares(t, tr, bin, addr, res.Shares[1:]...)
			}
			waitState(t, tr, bin, addr, "active")
			kv := apiClient(t, addr, res.RootToken).KVv2("kv")
			for i := range 30 {
				s, err := kv.Get(ctx, fmt.Sprintf("s%d", i))
				if err != nil || s.Data["v"] != fmt.Sprintf("value-%d", i) {
					t.Fatalf("s%d in the rebuilt cluster: %v", i, err)
				}
			}
			if _, err := kv.Put(ctx, "new", map[string]any{"v": "written in the rebuilt cluster"}); err != nil {
				t.Fatalf("a write in the rebuilt cluster: %v", err)
			}
			for _, line := range strings.Split(n.Output.String(), "\n") {
				if strings.Contains(line, "[WARN]") || strings.Contains(line, "[ERROR]") {
					t.Errorf("the rebuilt node logged: %s", line)
				}
			}
		})
	}
}
