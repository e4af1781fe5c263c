package test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// checkOutput is what `check --format json` prints.
type checkOutput struct {
	Sound    bool   `json:"sound"`
	Starts   bool   `json:"starts"`
	Refusal  string `json:"refusal"`
	SetAside string `json:"set_aside"`
	Files    []struct {
		Name        string `json:"name"`
		State       string `json:"state"`
		Detail      string `json:"detail"`
		BlocksStart bool   `json:"blocks_start"`
	} `json:"files"`
	Recovery []string `json:"recovery"`
}

func (c checkOutput) state(name string) string {
	for _, f := range c.Files {
		if f.Name == name {
			return f.State
		}
	}
	return ""
}

func runCheck(t *testing.T, tr *harness.Transcript, bin, cfg string) (checkOutput, string, int) {
	t.Helper()
	out, errOut, code := harness.Run(t, tr, nil, bin, "check", "--config", cfg, "--format", "json")
	var c checkOutput
	if err := json.Unmarshal([]byte(out), &c); err != nil && code != 3 {
		t.Fatalf("check --format json printed %q (%s): %v", out, errOut, err)
	}
	return c, errOut, code
}

// crashed says whether a node's output shows a Go panic or a fatal
// runtime error (a goroutine dump).
func crashed(out string) bool {
	return strings.Contains(out, "panic:") || strings.Contains(out, "goroutine ") || strings.Contains(out, "fatal error:")
}

// startOrRefuse starts a node and waits until its API serves or it exits;
// it returns the node and, if it exited, its exit code (-1 if it serves).
func startOrRefuse(t *testing.T, tr *harness.Transcript, prefix []string, bin, cfg, addr string, env ...string) (*harness.Node, int) {
	t.Helper()
	n := harness.StartNodeIn(t, tr, prefix, bin, cfg, addr, env...)
	code := -1
	harness.Eventually(t, 2*time.Minute, addr+" to serve or exit", func() bool {
		if n.Exited() {
			code = n.Wait(t, time.Second)
			return true
		}
		_, _, c := harness.Run(t, &harness.Transcript{}, nil, bin, "status", "--address", addr, "--timeout", "2s")
		return c == 0 || c == 2
	})
	return n, code
}

// boltUsed is how many bytes of a bbolt file its pages use (the newer
// meta page's high-water mark times its page size).
func boltUsed(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var best, txid uint64
	var psize uint32
	for _, off := range []int64{0, 4096} {
		b := make([]byte, 16+64)
		if _, err := f.ReadAt(b, off); err != nil {
			continue
		}
		m := b[16:]
		if binary.LittleEndian.Uint32(m) != 0xED0CDAED {
			continue
		}
		if tx := binary.LittleEndian.Uint64(m[48:]); best == 0 || tx > txid {
			best, txid, psize = binary.LittleEndian.Uint64(m[40:]), tx, binary.LittleEndian.Uint32(m[8:])
		}
	}
	if best == 0 {
		t.Fatalf("%s: no meta page", path)
	}
	return int64(best) * int64(psize)
}

// randomPages overwrites 64 KiB of a file with random bytes, on page
// boundaries, in the middle of what its pages use (from page 2 in a
// small file): the damage of the issue ("64 KiB of random bytes
// mid-file").
func randomPages(t *testing.T, path string, used int64) {
	t.Helper()
	off := (used/2 - 32<<10) &^ 4095
	if off < 2*4096 {
		off = 2 * 4096
	}
	b := make([]byte, 64<<10)
	rand.Read(b)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// storageNode is a single node with secrets s0..s{n-1} in kv/, stopped.
type storageNode struct {
	cfg, addr, dir, data string
	res                  initOutput
	snap                 string // a snapshot taken after the first 20 secrets
}

func newStorageNode(t *testing.T, tr *harness.Transcript, bin string, secrets int) *storageNode {
	t.Helper()
	cfg, addr, dir := singleNode(t)
	s := &storageNode{cfg: cfg, addr: addr, dir: dir, data: filepath.Join(dir, "data")}
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	s.res = initCluster(t, bin, addr, "--shares", "1", "--threshold", "1")
	waitState(t, tr, bin, addr, "active")
	c := apiClient(t, addr, s.res.RootToken)
	harness.MountKVv2(t, c, "kv")
	for i := range secrets {
		if i == 20 {
			s.snap = filepath.Join(dir, "before.snap")
			if _, errOut, code := harness.Run(t, tr, []byte(s.res.RootToken+"\n"), bin, "snapshot", "save", s.snap, "--address", addr); code != 0 {
				t.Fatalf("snapshot save: %s", errOut)
			}
		}
		if _, err := c.KVv2("kv").Put(context.Background(), fmt.Sprintf("s%d", i), map[string]any{"v": fmt.Sprintf("value-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// The check refuses to run beside the node.
	if _, errOut, code := runCheck(t, tr, bin, cfg); code != 3 || !strings.Contains(errOut, "stop the appliance on this node first") {
		t.Fatalf("check beside a running node: exit %d: %s", code, errOut)
	}
	n.Signal(t, syscall.SIGTERM, time.Minute)
	return s
}

// secretsFrom checks that s{from}..s{to-1} read back through a started,
// unsealed node.
func (s *storageNode) secretsFrom(t *testing.T, from, to int) {
	t.Helper()
	kv := apiClient(t, s.addr, s.res.RootToken).KVv2("kv")
	for i := from; i < to; i++ {
		got, err := kv.Get(context.Background(), fmt.Sprintf("s%d", i))
		if err != nil || got.Data["v"] != fmt.Sprintf("value-%d", i) {
			t.Fatalf("s%d: %v", i, err)
		}
	}
}

// Issue 17, item 1: a node whose vault.db was deleted while raft/raft.db
// holds its log started silently as "uninitialized", and init then
// advised deleting raft/ and vault.db, the log that still held every
// secret. It now refuses to start (exit 5), names the missing file, says
// not to delete raft/ and how to recover; check says the same; following
// the advice (set-aside, snapshot restore --new-cluster) gives a working
// node with the snapshot's secrets, and raft/ kept aside.
func TestMissingVaultDBRefused(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	s := newStorageNode(t, tr, bin, 25)
	if c, _, code := runCheck(t, tr, bin, s.cfg); code != 0 || !c.Sound || !c.Starts {
		t.Fatalf("check on a sound data dir: exit %d %+v", code, c)
	}
	if err := os.Remove(filepath.Join(s.data, "vault.db")); err != nil {
		t.Fatal(err)
	}
	// A marker of an init beside it changes nothing: no start, no advice
	// to delete.
	if err := os.WriteFile(filepath.Join(s.data, "init-in-progress"), []byte(time.Now().UTC().Format(time.RFC3339Nano)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the same at every start: no crash loop into emptiness
		n, code := startOrRefuse(t, tr, nil, bin, s.cfg, s.addr)
		out := n.Output.String()
		if code != 5 {
			t.Fatalf("start without vault.db: exit %d (want 5):\n%s", code, out)
		}
		for _, want := range []string{"vault.db is missing, but raft/raft.db holds this node's Raft log", "do not delete it",
			"--set-aside", "snapshot restore FILE --new-cluster --config " + s.cfg, "put it back"} {
			if !strings.Contains(out, want) {
				t.Errorf("the refusal does not say %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "delete "+filepath.Join(s.data, "raft")) || crashed(out) {
			t.Fatalf("the refusal advises deleting raft/ or crashed:\n%s", out)
		}
	}
	c, _, code := runCheck(t, tr, bin, s.cfg)
	if code != 5 || c.Sound || c.Starts || c.state("vault.db") != "missing" || c.state("raft/raft.db") != "ok" || len(c.Recovery) == 0 {
		t.Fatalf("check without vault.db: exit %d %+v", code, c)
	}
	// The recovery, as the message gives it.
	out, errOut, code := harness.Run(t, tr, nil, bin, "check", "--config", s.cfg, "--set-aside", "--empty", "--yes")
	if code != 0 || !strings.Contains(out, "set aside in") {
		t.Fatalf("check --set-aside: exit %d: %s %s", code, out, errOut)
	}
	asides, _ := filepath.Glob(filepath.Join(s.data, "set-aside-*", "raft", "raft.db"))
	if len(asides) != 1 {
		t.Fatalf("raft/raft.db was not kept aside: %v", asides)
	}
	if out, errOut, code := harness.Run(t, tr, nil, bin, "snapshot", "restore", s.snap, "--new-cluster", "--config", s.cfg); code != 0 {
		t.Fatalf("snapshot restore --new-cluster: exit %d: %s %s", code, out, errOut)
	}
	n := harness.StartNode(t, tr, bin, s.cfg, s.addr)
	n.WaitServing(t, tr)
	unsealWith(t, tr, bin, s.addr, s.res.Shares[:1])
	s.secretsFrom(t, 0, 20)
	if st, _ := status(t, tr, bin, s.addr); st.InitInterrupted != "" {
		t.Fatalf("the rebuilt node claims an interrupted init: %s", st.InitInterrupted)
	}
	n.Signal(t, syscall.SIGTERM, time.Minute)
}

// Issue 17, item 2: 64 KiB of random bytes in the middle of vault.db made
// `server` panic in bbolt's consistency check (exit 2, a goroutine dump:
// a crash loop under Restart=on-failure); raft.db likewise, and a
// truncated file died of SIGBUS. Each now refuses to start, every time,
// with exit 5 and a message naming the file, the damage and what to do;
// `check` finds the same damage offline. raft.db damaged on a cluster of
// one: the rebuild from vault.db it advises loses nothing.
func TestDamagedStorageRefused(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	s := newStorageNode(t, tr, bin, 30)
	golden := filepath.Join(s.dir, "golden")
	if err := os.Rename(s.data, golden); err != nil {
		t.Fatal(err)
	}
	fresh := func() {
		os.RemoveAll(s.data)
		if out, err := exec.Command("cp", "-a", golden, s.data).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
	}
	for _, tc := range []struct {
		file, fault string
	}{
		{"vault.db", "random pages"}, {"vault.db", "truncated"},
		{"raft/raft.db", "random pages"}, {"raft/raft.db", "truncated"},
	} {
		t.Run(tc.file+" "+tc.fault, func(t *testing.T) {
			fresh()
			path := filepath.Join(s.data, filepath.FromSlash(tc.file))
			used := boltUsed(t, path)
			if tc.fault == "random pages" {
				randomPages(t, path, used)
			} else if err := os.Truncate(path, used/2+123); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				n, code := startOrRefuse(t, tr, nil, bin, s.cfg, s.addr)
				out := n.Output.String()
				if code != 5 || crashed(out) {
					t.Fatalf("start: exit %d (want 5, no crash):\n%s", code, out)
				}
				if !strings.Contains(out, tc.file+" is damaged") || !strings.Contains(out, "What to do") || !strings.Contains(out, "--set-aside") {
					t.Fatalf("the refusal does not name %s and what to do:\n%s", tc.file, out)
				}
			}
			c, _, code := runCheck(t, tr, bin, s.cfg)
			if code != 5 || c.state(tc.file) != "damaged" || c.Starts {
				t.Fatalf("check: exit %d %+v", code, c)
			}
			out, _, code := harness.Run(t, tr, nil, bin, "check", "--config", s.cfg)
			if code != 5 || !strings.Contains(out, tc.file) || !strings.Contains(out, "damaged") || !strings.Contains(out, "The node refuses to start") {
				t.Fatalf("check (table): exit %d:\n%s", code, out)
			}
			if tc.file != "raft/raft.db" {
				return
			}
			// A cluster of one with a sound vault.db: rebuild raft/ from it.
			if !strings.Contains(c.SetAside, "restarts from vault.db") {
				t.Fatalf("check does not offer the rebuild from vault.db: %+v", c)
			}
			if out, errOut, code := harness.Run(t, tr, nil, bin, "check", "--config", s.cfg, "--set-aside", "--yes"); code != 0 || !strings.Contains(out, "peers.json") {
				t.Fatalf("check --set-aside: exit %d: %s %s", code, out, errOut)
			}
			n := harness.StartNode(t, tr, bin, s.cfg, s.addr)
			n.WaitServing(t, tr)
			unsealWith(t, tr, bin, s.addr, s.res.Shares[:1])
			s.secretsFrom(t, 0, 30)
			n.Signal(t, syscall.SIGTERM, time.Minute)
			if c, _, code := runCheck(t, tr, bin, s.cfg); code != 0 || !c.Sound {
				t.Fatalf("check after the rebuild: exit %d %+v", code, c)
			}
		})
	}
}
