package test

import (
	"context"
	"crypto/rand"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openbao/openbao/api/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/snapshot"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// damageCase is one storage fault: a file of a stopped node's data dir
// and what happens to it.
type damageCase struct {
	file  string // relative to the data dir
	fault string // "truncated", "random pages", "deleted"
}

func (d damageCase) String() string { return d.file + " " + d.fault }

// storageDamageShort runs in make test: one refusal of each kind of
// file, the rebuild from peers, and a harmless file.
var storageDamageShort = []damageCase{
	{"vault.db", "random pages"},
	{"raft/raft.db", "deleted"},
	{"seal-header.json", "truncated"},
}

// storageDamageAll is every fault on every file of a node's data dir.
func storageDamageAll() []damageCase {
	var out []damageCase
	for _, f := range []string{"vault.db", "raft/raft.db", "seal-header.json", ".lock"} {
		for _, fault := range []string{"truncated", "random pages", "deleted"} {
			out = append(out, damageCase{f, fault})
		}
	}
	return append(out, damageCase{"raft/snapshots", "deleted"})
}

// TestStorageDamage is the storage half of the fault campaign: a 3-node
// cluster under load; per case one node is stopped, one file of its data
// dir truncated, overwritten with 64 KiB of random pages, or deleted, and
// the node started again. Each case must end in either a working node
// (ready, caught up, a voter) or a refusal: exit code 5 and a message
// naming the file and what to do, which is then followed (remove the
// peer, `check --set-aside --empty`, start, unseal: rebuilt from its
// peers). Never a panic or a fatal runtime error, never a node that
// serves as uninitialized. Every acknowledged write is read back after
// every case, and at the end every node's vault.db holds the same
// secrets (digests of every logical/ entry, compared offline), so the
// rebuilt nodes hold every acknowledged write too.
//
// make test runs storageDamageShort; GSA_STORAGE_DAMAGE=all (make chaos)
// every fault on every file (storageDamageAll).
func TestStorageDamage(t *testing.T) {
	cases := storageDamageShort
	if os.Getenv("GSA_STORAGE_DAMAGE") == "all" {
		cases = storageDamageAll()
	}
	c := newCluster(t, clusterOptions{size: 3})
	defer c.stop()
	c.mountKV()
	l := startLoad(c, 3)
	defer l.stop()
	hc := c.httpClient()
	var summary []string
	for i, dc := range cases {
		c.waitHealthy(hc, l)
		m := c.nodes[i%len(c.nodes)]
		start := time.Now()
		outcome := c.damageAndRecover(hc, m, dc)
		c.waitHealthy(hc, l)
		acked, lost := l.verify(t, c.leader())
		line := fmt.Sprintf("%-30s %s: %-45s %6s  acked %5d lost %d", dc, m.id, outcome, time.Since(start).Round(time.Second), acked, lost)
		t.Log(line)
		summary = append(summary, line)
		if lost > 0 {
			t.Fatalf("%s: %d acknowledged writes lost", dc, lost)
		}
	}
	l.stop()
	c.sameStorage(l)
	t.Logf("storage damage, %d cases:\n%s", len(cases), strings.Join(summary, "\n"))
	if bad := l.serverErrors(); len(bad) > 0 {
		t.Errorf("%d answers were server errors other than 503, e.g.:\n%s", len(bad), strings.Join(bad[:min(len(bad), 10)], "\n"))
	}
}

// damageAndRecover stops m, damages dc in its data dir, starts it and
// brings it back as the refusal says; it returns what happened.
func (c *cluster) damageAndRecover(hc *http.Client, m *member, dc damageCase) string {
	t := c.t
	t.Helper()
	c.logRaft("before " + dc.String())
	m.n.Signal(t, syscall.SIGTERM, 2*time.Minute)
	damageFile(t, filepath.Join(c.dir, m.id, filepath.FromSlash(dc.file)), dc.fault)
	var prefix []string
	if m.netHost != nil {
		prefix = m.netHost.Prefix()
	}
	n, code := startOrRefuse(t, c.tr, prefix, c.bin, m.cfg, m.addr, c.env...)
	m.n = n
	out := n.Output.String()
	if crashed(out) {
		t.Fatalf("%s: the node crashed:\n%s", dc, out)
	}
	outcome := "started"
	c.logRaft("after the stop of " + m.id)
	if code >= 0 {
		if code != 5 || !strings.Contains(out, dc.file) || !strings.Contains(out, "What to do") || !strings.Contains(out, "remove-peer "+m.id) {
			t.Fatalf("%s: exit %d, want 5 and a message naming the file and the recovery:\n%s", dc, code, out)
		}
		// The recovery the message gives first for a node of a cluster.
		c.leaderOrDump()
		if _, err := c.client(c.leader()).Logical().Write("sys/storage/raft/remove-peer", map[string]any{"server_id": m.id}); err != nil {
			t.Fatalf("remove-peer %s: %v", m.id, err)
		}
		if o, e, code := harness.Run(t, c.tr, nil, c.bin, "check", "--config", m.cfg, "--set-aside", "--empty", "--yes"); code != 0 {
			t.Fatalf("%s: check --set-aside: exit %d: %s %s", dc, code, o, e)
		}
		c.start(m)
		outcome = "refused (exit 5), rebuilt from its peers"
	} else if st, _ := status(t, c.tr, c.bin, m.addr); !st.Initialized || st.State == "uninitialized" {
		t.Fatalf("%s: the node serves as %s: silent emptiness\n%s", dc, st.State, out)
	}
	c.unseal(m)
	c.untilReady(hc, m, time.Now())
	c.allVote()
	if crashed(m.n.Output.String()) {
		t.Fatalf("%s: the node crashed:\n%s", dc, m.n.Output.String())
	}
	return outcome
}

// allVote waits until the active node's Raft configuration makes every
// node a voter, committed: a node that rejoined is a non-voter until
// autopilot promotes it, and a promotion the leader appended may be lost
// with its leadership (then the node, which saw it, says it votes, and
// stopping another node leaves no quorum). The configuration is read,
// a write is committed through the same active node, and the
// configuration is read again: entries commit in order.
func (c *cluster) allVote() {
	t := c.t
	t.Helper()
	voters := func(cl *api.Client) bool {
		sec, err := cl.Logical().Read("sys/storage/raft/configuration")
		if err != nil || sec == nil {
			return false
		}
		conf, _ := sec.Data["config"].(map[string]any)
		servers, _ := conf["servers"].([]any)
		n := 0
		for _, s := range servers {
			if m, _ := s.(map[string]any); m["voter"] == true {
				n++
			}
		}
		return n == len(c.nodes) && len(servers) == n
	}
	harness.Eventually(t, 3*time.Minute, "every node to vote, committed", func() bool {
		l := c.leader()
		cl := c.client(l)
		if !voters(cl) {
			return false
		}
		if _, err := cl.KVv2("kv").Put(context.Background(), "voters-committed", map[string]any{"at": time.Now().String()}); err != nil {
			return false
		}
		st, _ := tryStatus(t, c.tr, c.bin, l.addr)
		return st.State == "active" && voters(cl)
	})
}

// leaderOrDump waits for an active node; if none comes within 2 minutes,
// every running node writes its goroutines (SIGQUIT) and the test fails
// with their logs.
func (c *cluster) leaderOrDump() {
	t := c.t
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		for _, m := range c.nodes {
			if m.n == nil || m.n.Exited() {
				continue
			}
			if st, ok := tryStatus(t, c.tr, c.bin, m.addr); ok && st.State == "active" && st.Ready {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.logRaft("no leader")
	for _, m := range c.nodes {
		if m.n != nil && !m.n.Exited() {
			m.n.Notify(syscall.SIGQUIT)
		}
	}
	time.Sleep(5 * time.Second)
	dump := filepath.Join(os.TempDir(), fmt.Sprintf("storage-damage-%d.log", time.Now().Unix()))
	var b strings.Builder
	for _, m := range c.nodes {
		if m.n != nil {
			fmt.Fprintf(&b, "==== %s\n%s\n", m.id, m.n.Output.String())
		}
	}
	os.WriteFile(dump, []byte(b.String()), 0o600)
	t.Fatalf("no active node for 2 minutes; every node's log and goroutines are in %s", dump)
}

// logRaft logs every running node's view of Raft (GSA_TEST_LOGS).
func (c *cluster) logRaft(when string) {
	if os.Getenv("GSA_TEST_LOGS") == "" {
		return
	}
	for _, m := range c.nodes {
		if m.n == nil || m.n.Exited() {
			continue
		}
		out, _, _ := harness.Run(c.t, &harness.Transcript{}, nil, c.bin, "status", "--format", "json", "--address", m.addr, "--timeout", "5s")
		c.t.Logf("%s: %s: %s", when, m.id, out)
	}
}

// damageFile applies a fault to path: truncated to half of what it uses,
// 64 KiB of random bytes on page boundaries mid-file (a small file:
// wholly overwritten), or deleted (a directory with what is in it).
func damageFile(t *testing.T, path, fault string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	bolt := strings.HasSuffix(path, ".db")
	switch fault {
	case "deleted":
		err = os.RemoveAll(path)
	case "truncated":
		size := fi.Size() / 2
		if bolt {
			size = boltUsed(t, path)/2 + 123
		}
		err = os.Truncate(path, size)
	case "random pages":
		if bolt {
			randomPages(t, path, boltUsed(t, path))
			return
		}
		b := make([]byte, max(fi.Size(), 1))
		rand.Read(b)
		err = os.WriteFile(path, b, 0o600)
	default:
		t.Fatalf("fault %q", fault)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// sameStorage waits until every node applied the leader's last index,
// stops them, and compares their storage offline: every logical/ entry
// the same on every node.
func (c *cluster) sameStorage(l *load) {
	t := c.t
	t.Helper()
	leader := c.leader()
	harness.Eventually(t, 2*time.Minute, "every node to apply the same index", func() bool {
		lst, _ := status(t, c.tr, c.bin, leader.addr)
		for _, m := range c.nodes {
			if st, _ := status(t, c.tr, c.bin, m.addr); st.Raft.AppliedIndex < lst.Raft.CommitIndex {
				return false
			}
		}
		return true
	})
	c.stop()
	key := make([]byte, 32)
	rand.Read(key)
	var first snapshot.Digests
	for i, m := range c.nodes {
		d, err := datadir.StorageDigests(filepath.Join(c.dir, m.id), key, "logical/")
		if err != nil {
			t.Fatalf("%s: %v", m.id, err)
		}
		if i == 0 {
			first = d
			if len(d) < len(l.ackedNow()) {
				t.Fatalf("%s holds %d logical entries for %d acknowledged keys", m.id, len(d), len(l.ackedNow()))
			}
			continue
		}
		if !maps.Equal(first, d) {
			t.Fatalf("%s's storage differs from %s's: %d entries missing or different, %d extra", m.id, c.nodes[0].id, len(first.Missing(d)), len(d.Missing(first)))
		}
	}
}
