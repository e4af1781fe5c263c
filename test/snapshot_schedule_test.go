package test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// snapshotsIn lists the scheduled snapshots in dir (hidden temp files
// left out) and whether any other file is there.
func snapshotsIn(dir string) (names []string, stray []string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "gitlab-secrets-appliance-") && strings.HasSuffix(e.Name(), ".snap") {
			names = append(names, e.Name())
		} else {
			stray = append(stray, e.Name())
		}
	}
	return names, stray
}

// Scheduled snapshots on a 3-node cluster under a writer: only the active
// node takes them, at the interval, keeping the newest 3; after the leader
// is killed the new one goes on and applies retention in its directory.
// Every snapshot inspects as whole; every acknowledged write reads back.
func TestScheduledSnapshots(t *testing.T) {
	c := newCluster(t, clusterOptions{size: 3, extra: "snapshot {\n  interval = \"1s\"\n  retain_count = 3\n}\n"})
	defer c.stop()
	c.mountKV()
	l := startLoad(c, 2)
	dirOf := func(m *member) string { return filepath.Join(c.dir, m.id, "snapshots") }
	// rotates waits until the node's directory saw at least n snapshots
	// come and go while never holding more than 3.
	rotates := func(m *member, n int) {
		t.Helper()
		seen := map[string]bool{}
		harness.Eventually(t, 2*time.Minute, fmt.Sprintf("%d snapshots taken by %s, 3 kept", n, m.id), func() bool {
			names, stray := snapshotsIn(dirOf(m))
			if len(names) > 3 {
				t.Fatalf("%s keeps %d snapshots, retain_count is 3: %v", m.id, len(names), names)
			}
			for _, s := range stray {
				if !strings.Contains(s, ".partial-") {
					t.Fatalf("%s's snapshot directory holds %s", m.id, s)
				}
			}
			for _, name := range names {
				seen[name] = true
			}
			return len(seen) >= n && len(names) == 3
		})
	}
	leader := c.leader()
	rotates(leader, 5)
	for _, m := range c.others(leader) {
		if names, _ := snapshotsIn(dirOf(m)); len(names) != 0 {
			t.Fatalf("standby %s took snapshots: %v", m.id, names)
		}
	}
	st, _ := status(t, c.tr, c.bin, leader.addr)
	if st.Snapshots == nil || st.Snapshots.LastSuccess == nil || st.Snapshots.LastSuccess.Index == 0 || !strings.HasPrefix(st.Snapshots.LastSuccess.File, dirOf(leader)) {
		t.Fatalf("the active node's status: %+v", st.Snapshots)
	}
	metrics, err := c.client(leader).Logical().ReadRaw("sys/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(metrics.Body)
	metrics.Body.Close()
	if !strings.Contains(string(body), "appliance.snapshot.last_success_timestamp") {
		t.Errorf("the metrics have no snapshot gauge: %.300s", body)
	}
	names, _ := snapshotsIn(dirOf(leader))
	if out, errOut, code := harness.Run(t, c.tr, nil, c.bin, "snapshot", "inspect", filepath.Join(dirOf(leader), names[len(names)-1])); code != 0 {
		t.Fatalf("inspect a scheduled snapshot: exit %d: %s %s", code, out, errOut)
	}

	c.kill(leader)
	next := c.leader()
	rotates(next, 4)
	c.start(leader)
	c.unseal(leader)
	l.finish(t, next, leader)
}

// A snapshot directory on a full disk (a 64 KiB tmpfs): the snapshot fails
// loudly (status, log), leaves no file with a snapshot's name, and the
// node keeps serving writes; when space is there, the next one is taken.
func TestScheduledSnapshotFullDisk(t *testing.T) {
	dir := t.TempDir()
	mnt := mountTmpfs(t, filepath.Join(dir, "snaps"), "64k")
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	cfg, addr := nodeConfig(t, dir, "node-1", "127.0.0.1", "", fmt.Sprintf("snapshot {\n  interval = \"1s\"\n  directory = %q\n}\n", mnt))
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	res := initCluster(t, bin, addr, "--shares", "1", "--threshold", "1")
	waitState(t, tr, bin, addr, "active")
	c := apiClient(t, addr, res.RootToken)
	harness.MountKVv2(t, c, "kv")
	// Random values: the snapshot does not compress below the tmpfs.
	for i := range 100 {
		b := make([]byte, 2048)
		rand.Read(b)
		if _, err := c.KVv2("kv").Put(context.Background(), fmt.Sprintf("k%d", i), map[string]any{"v": hex.EncodeToString(b)}); err != nil {
			t.Fatal(err)
		}
	}
	var last string
	harness.Eventually(t, time.Minute, "a snapshot failing for want of space", func() bool {
		st, _ := status(t, tr, bin, addr)
		if st.Snapshots != nil && st.Snapshots.Last != nil {
			last = st.Snapshots.Last.Error
		}
		return strings.Contains(last, "space")
	})
	t.Logf("the snapshot's error: %s", last)
	// Whatever has a snapshot's name is whole (one may have fit before
	// the data grew).
	names, stray := snapshotsIn(mnt)
	if len(stray) != 0 {
		t.Fatalf("the full directory holds %v", stray)
	}
	for _, name := range names {
		if _, errOut, code := harness.Run(t, tr, nil, bin, "snapshot", "inspect", filepath.Join(mnt, name)); code != 0 {
			t.Fatalf("%s in the full directory: %s", name, errOut)
		}
	}
	before := len(names)
	if _, err := c.KVv2("kv").Put(context.Background(), "still", map[string]any{"v": "serving"}); err != nil {
		t.Fatalf("a write while snapshots fail: %v", err)
	}
	harness.Eventually(t, 10*time.Second, "the failure in the log", func() bool {
		return strings.Contains(n.Output.String(), "[ERROR] appliance: snapshot failed")
	})
	if out, err := exec.Command("mount", "-o", "remount,size=16m", mnt).CombinedOutput(); err != nil {
		t.Fatalf("growing the tmpfs: %v %s", err, out)
	}
	harness.Eventually(t, 2*time.Minute, "a snapshot once space is there", func() bool {
		st, _ := status(t, tr, bin, addr)
		names, _ := snapshotsIn(mnt)
		return len(names) > before && st.Snapshots.Last != nil && st.Snapshots.Last.Error == ""
	})
}
