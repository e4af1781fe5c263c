package test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openbao/openbao/api/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// waitGeo polls every running node's status until the active node's
// satisfies cond. The nodes are asked at once, each call with
// geoStatusWait to answer: a paused or starved node costs the round one
// deadline and holds up nobody else (asked one after the other with the
// CLI's default deadline of 1 minute, a paused node made each round last
// a minute, and a 3-minute wait saw the others three times; before the
// CLI had deadlines, once). The wait is for the condition, not for a
// time: geoWait is long enough for an election on a starved machine.
func (c *cluster) waitGeo(what string, cond func(st statusOutput) bool) statusOutput {
	c.t.Helper()
	var st, last statusOutput
	var lastViews string
	defer func() {
		if c.t.Failed() && last.Geo != nil {
			b, _ := json.Marshal(last)
			c.t.Logf("the active node's last status: %s", b)
		}
		if c.t.Failed() && lastViews != "" {
			c.t.Logf("what every node said last:\n%s", lastViews)
		}
	}()
	harness.Eventually(c.t, geoWait, what, func() bool {
		views := c.geoStatuses()
		var lines []string
		found := false
		for _, v := range views {
			lines = append(lines, v.String())
			s := v.st
			if !found && v.ok && s.State == "active" && s.Ready && s.Geo != nil {
				last = s
				if cond(s) {
					st, found = s, true
				}
			}
		}
		lastViews = strings.Join(lines, "\n")
		return found
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
	harness.Eventually(t, time.Minute, "node-1, now a replica, to say site B is primary", func() bool {
		s, ok := tryStatus(t, c.tr, c.bin, c.byID("node-1").addr)
		return ok && s.Geo != nil && s.Geo.PrimarySite == "site-b" && s.Geo.Reconciler == "standby: the active node reconciles"
	})
	phase("switchover to B (topology file)")
	c.setTopology(c.withPrimary("site-a"))
	c.waitGeo("site A to lead again", converged(primary, "node-2"))
	phase("switchover back to A (topology file)")

	// geo promote: a dry run changes nothing; a token without sudo on
	// sys/appliance/geo is refused; a switchover whose leader is killed
	// half-way is finished by running it again; then back to A.
	leader := c.leader()
	out, _, code := harness.Run(t, c.tr, []byte(c.res.RootToken+"\n"), c.bin, "geo", "promote", "--site", "site-b", "--dry-run", "--address", leader.addr)
	if code != 0 || !strings.Contains(out, "ok   node node-5") || !strings.Contains(out, "ok   quorum") {
		t.Fatalf("dry run: exit %d: %s", code, out)
	}
	out, _, _ = harness.Run(t, c.tr, []byte(c.res.RootToken+"\n"), c.bin, "geo", "promote", "--site", "site-b", "--dry-run", "--format", "json", "--address", leader.addr)
	if !strings.Contains(out, `"started": false`) {
		t.Fatalf("dry run (json): %s", out)
	}
	if st := c.waitGeo("site A still primary after the dry run", converged(primary, "node-2")); st.Geo.PrimarySite != "site-a" {
		t.Fatalf("the dry run moved the primary to %s", st.Geo.PrimarySite)
	}
	weak, err := c.client(leader).Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"default"}})
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, code := harness.Run(t, c.tr, []byte(weak.Auth.ClientToken+"\n"), c.bin, "geo", "promote", "--site", "site-b", "--address", leader.addr)
	if code != 1 || !strings.Contains(errOut, "needs the sudo capability on sys/appliance/geo") {
		t.Fatalf("a token without sudo: exit %d: %s", code, errOut)
	}
	if _, errOut, code := harness.Run(t, c.tr, []byte(c.res.RootToken+"\n"), c.bin, "geo", "promote", "--site", "site-b", "--wait", "0", "--address", leader.addr); code != 0 {
		t.Fatalf("promote --wait 0: exit %d: %s", code, errOut)
	}
	c.kill(leader)
	c.start(leader)
	c.unseal(leader)
	if out, errOut, code := harness.Run(t, c.tr, []byte(c.res.RootToken+"\n"), c.bin, "geo", "promote", "--site", "site-b", "--address", c.byID("node-4").addr); code != 0 || !strings.Contains(out, "Site site-b is primary: node-5 leads") {
		t.Fatalf("promote again: exit %d: %s %s", code, out, errOut)
	}
	st = c.waitGeo("site B to lead after geo promote", converged([]string{"node-5"}, "node-5"))
	if !strings.HasPrefix(st.Geo.PrimarySource, "geo promote by ") {
		t.Errorf("primary source %q", st.Geo.PrimarySource)
	}
	phase("geo promote to B, leader killed half-way, again")
	if _, errOut, code := harness.Run(t, c.tr, []byte(c.res.RootToken+"\n"), c.bin, "geo", "promote", "--site", "site-a", "--address", c.byID("node-5").addr); code != 0 {
		t.Fatalf("promote back to A: exit %d: %s", code, errOut)
	}
	c.waitGeo("site A to lead after geo promote", converged(primary, "node-2"))
	phase("geo promote back to A")

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

	l.finish(t, c.leader())
}

// 4 nodes in one site: exactly 3 vote. A node removed from the topology
// leaves Raft (and the even count's non-voter is promoted); the node added
// back (fresh data) joins as a non-voter, is promoted, and the odd one out
// is demoted again. A topology file that does not validate changes
// nothing and every node says why. A writer runs throughout.
func TestGeoMembership(t *testing.T) {
	c := newCluster(t, clusterOptions{geo: &geoLayout{sites: []int{4}}})
	defer c.stop()
	three := []string{"node-1", "node-2", "node-3"}
	c.waitGeo("3 of 4 nodes to vote", converged(three, ""))
	c.mountKV()
	l := startLoad(c, 3)

	full := c.topo
	without := *full
	without.Sites = slices.Clone(full.Sites)
	without.Sites[0].Nodes = slices.DeleteFunc(slices.Clone(full.Sites[0].Nodes), func(n geo.Node) bool { return n.ID == "node-3" })
	c.setTopology(&without)
	st := c.waitGeo("node-3 to leave and node-4 to vote", converged([]string{"node-1", "node-2", "node-4"}, ""))
	for _, n := range st.Geo.Nodes {
		if n.ID == "node-3" {
			t.Fatalf("node-3 still listed: %+v", n)
		}
	}
	n3 := c.byID("node-3")
	c.kill(n3)
	if err := os.RemoveAll(filepath.Join(c.dir, n3.id)); err != nil {
		t.Fatal(err)
	}
	c.setTopology(full)
	c.start(n3)
	c.unseal(n3)
	c.waitGeo("node-3 back as a voter, node-4 a non-voter again", converged(three, ""))

	// Two primaries: refused; nothing changes.
	bad := *full
	bad.Sites = append(slices.Clone(full.Sites), geo.Site{Name: "site-z", Primary: true, Nodes: []geo.Node{{ID: "node-9", APIAddr: "http://127.0.0.9:1", ClusterAddr: "https://127.0.0.9:2"}}})
	c.setTopology(&bad)
	for _, m := range c.nodes {
		harness.Eventually(t, time.Minute, m.id+" to refuse the topology", func() bool {
			s, ok := tryStatus(t, c.tr, c.bin, m.addr)
			return ok && s.Geo != nil && strings.Contains(s.Geo.TopologyError, "2 primary sites (site-a, site-z)")
		})
	}
	if st := c.waitGeo("the same 3 voters", converged(three, "")); len(st.Geo.Nodes) != 4 {
		t.Fatalf("a refused topology changed the view: %+v", st.Geo.Nodes)
	}
	c.setTopology(full)
	harness.Eventually(t, time.Minute, "the topology error to clear", func() bool {
		s, ok := tryStatus(t, c.tr, c.bin, c.leader().addr)
		return ok && s.Geo != nil && s.Geo.TopologyError == ""
	})

	l.finish(t, c.leader())
}

// 3 + 2 nodes, each in its own network namespace (root only): cutting off
// the preferred leader moves leadership to another site A node and back
// once it is reachable again; cutting off the whole of site B does not
// stop writes (its nodes do not vote), and once it is back its nodes
// catch up (lag <= 64). A writer runs throughout; every acknowledged
// write reads back.
func TestGeoPartitions(t *testing.T) {
	nw, err := harness.NewNet(t, 5)
	if err != nil {
		t.Skipf("no private network: %v", err)
	}
	c := newCluster(t, clusterOptions{net: nw, geo: &geoLayout{
		sites:     []int{3, 2},
		preferred: map[string]string{"site-a": "node-2"},
	}})
	defer c.stop()
	primary := []string{"node-1", "node-2", "node-3"}
	c.waitGeo("3 voters led by node-2", converged(primary, "node-2"))
	c.mountKV()
	l := startLoad(c, 4)
	from := time.Now()
	phase := func(name string) {
		now := time.Now()
		t.Logf("%-40s write gap %v", name, l.maxGap(from, now).Round(time.Millisecond))
		from = now
	}

	n2 := c.byID("node-2")
	if err := n2.netHost.Cut(); err != nil {
		t.Fatal(err)
	}
	c.waitGeo("a site A leader while node-2 is cut off", func(st statusOutput) bool {
		_, leader := geoVoters(st)
		return leader == "node-1" || leader == "node-3"
	})
	if err := n2.netHost.Heal(); err != nil {
		t.Fatal(err)
	}
	c.waitGeo("node-2 to lead again", converged(primary, "node-2"))
	phase("preferred leader cut off, healed")

	for _, id := range []string{"node-4", "node-5"} {
		if err := c.byID(id).netHost.Cut(); err != nil {
			t.Fatal(err)
		}
	}
	cutAt := time.Now()
	harness.Eventually(t, time.Minute, "writes acknowledged while site B is cut off", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		n := 0
		for _, a := range l.acks {
			if a.After(cutAt) {
				n++
			}
		}
		return n >= 100
	})
	for _, id := range []string{"node-4", "node-5"} {
		if err := c.byID(id).netHost.Heal(); err != nil {
			t.Fatal(err)
		}
	}
	c.waitGeo("site B back", func(st statusOutput) bool {
		for _, n := range st.Geo.Nodes {
			if n.Site == "site-b" && (n.Lag > 64 || !n.InRaft) {
				return false
			}
		}
		return converged(primary, "node-2")(st)
	})
	phase("site B cut off, healed")

	l.finish(t, c.byID("node-5"), c.leader())
}
