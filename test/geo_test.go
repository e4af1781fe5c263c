package test

import (
	"context"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// waitGeo polls the active node's status until cond holds.
func (c *cluster) waitGeo(what string, cond func(st statusOutput) bool) statusOutput {
	c.t.Helper()
	var st statusOutput
	harness.Eventually(c.t, 3*time.Minute, what, func() bool {
		for _, m := range c.nodes {
			if m.n == nil || m.n.Exited() {
				continue
			}
			s, ok := tryStatus(c.t, c.tr, c.bin, m.addr)
			if ok && s.State == "active" && s.Ready && s.Geo != nil && cond(s) {
				st = s
				return true
			}
		}
		return false
	})
	return st
}

// converged: the reconciler has nothing left to do, with these voters
// and this leader ("" = any).
func converged(voters []string, leader string) func(statusOutput) bool {
	return func(st statusOutput) bool {
		v, l := geoVoters(st)
		return st.Geo.Reconciler == "converged" && slices.Equal(v, voters) && (leader == "" || l == leader)
	}
}

// 3 primary + 2 secondary nodes from one topology: the primary nodes vote,
// the preferred node leads, writes through every node succeed and a
// secondary node reads them; under a writer the leader is killed (kill -9,
// then SIGSTOP) and a primary-site node takes over, the preferred node
// gets leadership back once it returns; then a planned switchover to site
// B and back through the topology file, and one through gitlab-cluster.json.
// Every acknowledged write reads back.
func TestGeoSites(t *testing.T) {
	c := newCluster(t, clusterOptions{geo: &geoLayout{
		sites:     []int{3, 2},
		preferred: map[string]string{"site-a": "node-2", "site-b": "node-5"},
	}})
	defer c.stop()
	primary := []string{"node-1", "node-2", "node-3"}
	st := c.waitGeo("3 voters led by node-2", converged(primary, "node-2"))
	for _, n := range st.Geo.Nodes {
		if n.DesiredVoter != (n.Site == "site-a") || !n.InRaft {
			t.Fatalf("node %+v", n)
		}
	}
	c.mountKV()
	for _, m := range c.nodes {
		if _, err := c.client(m).KVv2("kv").Put(context.Background(), "via-"+m.id, map[string]any{"v": 1}); err != nil {
			t.Fatalf("write through %s: %v", m.id, err)
		}
	}
	harness.Eventually(t, time.Minute, "node-5 to read every write", func() bool {
		for _, m := range c.nodes {
			if s, err := c.client(c.byID("node-5")).KVv2("kv").Get(context.Background(), "via-"+m.id); err != nil || s == nil {
				return false
			}
		}
		return true
	})

	l := startLoad(c, 4)
	from := time.Now()
	phase := func(name string) {
		now := time.Now()
		t.Logf("%-40s write gap %v", name, l.maxGap(from, now).Round(time.Millisecond))
		from = now
	}
	// kill -9 of the preferred leader: another primary-site node leads.
	c.kill(c.byID("node-2"))
	st = c.waitGeo("a primary-site leader after node-2's death", func(st statusOutput) bool {
		_, leader := geoVoters(st)
		return leader == "node-1" || leader == "node-3"
	})
	if !strings.Contains(st.Geo.Reconciler, "leadership goes back to node-2") {
		t.Errorf("while node-2 is down the reconciler says %q", st.Geo.Reconciler)
	}
	c.start(c.byID("node-2"))
	c.unseal(c.byID("node-2"))
	c.waitGeo("node-2 to lead again", converged(primary, "node-2"))
	phase("kill -9 leader, back, leadership back")

	// SIGSTOP of the leader for longer than an election.
	n2 := c.byID("node-2")
	n2.n.Notify(syscall.SIGSTOP)
	c.waitGeo("a primary-site leader while node-2 is paused", func(st statusOutput) bool {
		_, leader := geoVoters(st)
		return leader == "node-1" || leader == "node-3"
	})
	n2.n.Notify(syscall.SIGCONT)
	c.waitGeo("node-2 to lead again after SIGCONT", converged(primary, "node-2"))
	phase("SIGSTOP leader, SIGCONT, leadership back")

	// Planned switchover to site B through the topology file, and back.
	c.setTopology(c.withPrimary("site-b"))
	st = c.waitGeo("site B to lead", converged([]string{"node-5"}, "node-5"))
	if st.Geo.PrimarySite != "site-b" || st.Geo.PrimarySource != "topology" {
		t.Errorf("after the switchover: primary %s from %s", st.Geo.PrimarySite, st.Geo.PrimarySource)
	}
	phase("switchover to B (topology file)")
	c.setTopology(c.withPrimary("site-a"))
	c.waitGeo("site A to lead again", converged(primary, "node-2"))
	phase("switchover back to A (topology file)")

	// Geo's own promotion: gitlab-ctl geo promote writes gitlab-cluster.json
	// on node-4; Omnibus then renders the topology with B primary, and on
	// failing back the file is deleted and A is primary again.
	if err := os.WriteFile(c.clusterFile(c.byID("node-4")), []byte(`{"primary": true, "secondary": false}`), 0o600); err != nil {
		t.Fatal(err)
	}
	st = c.waitGeo("site B to lead by gitlab-cluster.json", converged([]string{"node-5"}, "node-5"))
	if st.Geo.PrimarySource != "gitlab-cluster.json on node-4" {
		t.Errorf("primary source %q", st.Geo.PrimarySource)
	}
	phase("switchover to B (gitlab-cluster.json)")
	c.setTopology(c.withPrimary("site-b"))
	c.waitGeo("the topology to name site B", func(st statusOutput) bool {
		return st.Geo.PrimarySite == "site-b" && st.Geo.PrimarySource == "topology"
	})
	os.Remove(c.clusterFile(c.byID("node-4")))
	c.setTopology(c.withPrimary("site-a"))
	c.waitGeo("site A to lead after failing back", converged(primary, "node-2"))
	phase("fail back to A")

	l.stop()
	acked, lost := l.verify(t, c.leader())
	t.Logf("%d keys acknowledged, %d lost; answers: %s", acked, lost, l.kindsSummary())
	if lost != 0 {
		t.Fatalf("%d acknowledged writes lost", lost)
	}
	if bad := l.serverErrors(); len(bad) > 0 {
		t.Fatalf("HTTP 5xx other than 503: %v", bad)
	}
}
