package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// A full disk (the data dir on a small tmpfs): writes fail with a clear
// error while reads keep working, nothing acknowledged is lost, and when
// space returns the node takes writes again without a restart; a restart
// afterwards opens the same data. Needs root to mount the tmpfs.
func TestFullDisk(t *testing.T) {
	dir := t.TempDir()
	// 256 MiB: the guard's line is 5 % of it (12.8 MiB), and the node keeps
	// 32 MiB allocated past the end of each of its two bbolt files.
	mnt := mountTmpfs(t, filepath.Join(dir, "small"), "256m")
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	listen := harness.FreeAddr(t, "127.0.0.1")
	cfg := filepath.Join(dir, "appliance.hcl")
	os.WriteFile(cfg, []byte(fmt.Sprintf("node_id = \"node-1\"\ndata_dir = %q\nlistener {\n  address = %q\n  tls_disable = true\n}\n",
		filepath.Join(mnt, "data"), listen)), 0o600)
	addr := "http://" + listen
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	res := initCluster(t, bin, addr, "--shares", "1", "--threshold", "1")
	waitState(t, tr, bin, addr, "active")
	c := apiClient(t, addr, res.RootToken)
	harness.MountKVv2(t, c, "kv")

	// Fill the disk but for the guard's line and 40 MiB (room for a top-up
	// of both files' reserves), then write until writes fail.
	filler := filepath.Join(mnt, "filler")
	fill(t, filler, mnt, 256<<20/20+40<<20)
	hc := &http.Client{Timeout: 30 * time.Second}
	value := strings.Repeat("v", 16<<10)
	acked := map[string]bool{}
	var refusal string
	for i := 0; i < 5000 && refusal == ""; i++ {
		key := fmt.Sprintf("k%d", i)
		code, body := put(hc, addr, res.RootToken, key, value)
		switch {
		case code == http.StatusOK:
			acked[key] = true
		default:
			refusal = fmt.Sprintf("%d %s", code, body)
		}
	}
	t.Logf("%d writes acknowledged, then: %s", len(acked), refusal)
	if refusal == "" || len(acked) == 0 {
		t.Fatal("the disk never filled up")
	}
	if n.Exited() {
		t.Fatalf("the node died when the disk filled up:\n%s", n.Output)
	}
	if !strings.HasPrefix(refusal, "507 ") || !strings.Contains(refusal, "nearly full") {
		t.Errorf("the refusal is not the appliance's 507 saying the disk is full: %s", refusal)
	}
	// If a write beat the guard to the last bytes, Raft's leader stepped
	// down; with the room kept in its log file it is elected again.
	var st struct {
		Ready bool `json:"ready"`
		Disk  struct {
			Low bool `json:"low"`
		} `json:"disk"`
	}
	harness.Eventually(t, time.Minute, "a ready node that says its disk is low", func() bool {
		_, err := adminCall(hc, addr, "", "status", nil, &st)
		return err == nil && st.Disk.Low && st.Ready
	})
	// Reads keep working, every acknowledged write is there.
	for k := range acked {
		got, err := c.KVv2("kv").Get(context.Background(), k)
		if err != nil || got.Data["v"] != value {
			t.Fatalf("reading %s on a full disk: %v", k, err)
		}
	}
	// Space returns: writes work again, no restart.
	os.Remove(filler)
	harness.Eventually(t, time.Minute, "writes after space returned", func() bool {
		code, _ := put(hc, addr, res.RootToken, "after", "space is back")
		return code == http.StatusOK
	})
	// Something else fills the disk to the last byte: writes are refused,
	// writes already in Raft's log and Raft's bookkeeping go into the room
	// the guard keeps in the bbolt files (the node does not die), reads go
	// on, and again writes come back when the space does.
	// Two writers race the filler, so that writes reach Raft's log while
	// the last bytes go (what once made OpenBao's FSM panic).
	other := filepath.Join(mnt, "other")
	stop := make(chan struct{})
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("race%d-%d", w, i)
				if code, _ := put(hc, addr, res.RootToken, key, value); code == http.StatusOK {
					mu.Lock()
					acked[key] = true
					mu.Unlock()
				}
			}
		}()
	}
	fill(t, other, mnt, 0)
	close(stop)
	wg.Wait()
	if n.Exited() {
		t.Fatalf("the node died when another process filled its disk:\n%s", tail(n.Output.String(), 40))
	}
	var last string
	defer func() {
		if t.Failed() {
			t.Logf("the last answer to a write was: %s\nthe node's log:\n%s", last, tail(n.Output.String(), 40))
		}
	}()
	harness.Eventually(t, time.Minute, "writes refused on a disk filled by another process", func() bool {
		code, body := put(hc, addr, res.RootToken, "full", value)
		last = fmt.Sprintf("%d %s", code, body)
		return code == http.StatusInsufficientStorage
	})
	harness.Eventually(t, time.Minute, "the node ready on a full disk", func() bool {
		_, err := adminCall(hc, addr, "", "status", nil, &st)
		return err == nil && st.Ready
	})
	for k := range acked {
		if got, err := c.KVv2("kv").Get(context.Background(), k); err != nil || got.Data["v"] != value {
			t.Fatalf("reading %s on a disk filled by another process: %v", k, err)
		}
	}
	os.Remove(other)
	harness.Eventually(t, time.Minute, "writes after the other process's file went", func() bool {
		code, _ := put(hc, addr, res.RootToken, "after2", "space is back again")
		return code == http.StatusOK
	})
	// A restart opens the same data; nothing acknowledged is lost.
	n.Signal(t, syscall.SIGTERM, time.Minute)
	n = harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	unsealWith(t, tr, bin, addr, res.Shares)
	for k := range acked {
		if got, err := c.KVv2("kv").Get(context.Background(), k); err != nil || got.Data["v"] != value {
			t.Fatalf("after the restart, %s: %v", k, err)
		}
	}
}

// mountTmpfs mounts a tmpfs of size at path (created) for the test's
// life; without root, or where tmpfs cannot be mounted, the test is
// skipped and says so.
func mountTmpfs(t *testing.T, path, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root; the test did not run")
	}
	os.Mkdir(path, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", path).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); the test did not run", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", path).Run() })
	return path
}

// fill writes a file until free bytes are left on the filesystem of dir.
// The node allocates room in its own files meanwhile, so the free space is
// read again for every MiB; a write that finds the disk full is what a
// fill to the last byte wants, and a failure for any other fill.
func fill(t *testing.T, path, dir string, free int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		size := int64(st.Bavail)*int64(st.Bsize) - free
		if size <= 0 {
			return
		}
		n := min(size, int64(len(buf)))
		if _, err := f.Write(buf[:n]); err != nil {
			if free == 0 && errors.Is(err, syscall.ENOSPC) {
				return // to the last byte, racing the node's own writes
			}
			t.Fatalf("filling the disk to %d bytes free: %v", free, err)
		}
	}
}

func put(hc *http.Client, addr, token, key, value string) (int, string) {
	body, _ := json.Marshal(map[string]any{"data": map[string]string{"v": value}})
	req, _ := http.NewRequest("PUT", addr+"/v1/kv/data/"+key, bytes.NewReader(body))
	req.Header.Set("X-Vault-Token", token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(bytes.TrimSpace(b))
}
