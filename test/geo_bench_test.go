package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// TestGeoBench is `make bench`'s Geo section (GSA_BENCH_GEO=1; figures,
// no assertions on them): 3 + 2 nodes, site B 20 ms away each way (a
// relay on its cluster addresses: this machine's kernel has no netem).
// It prints the commit latency with B's nodes as non-voters and as voters
// (min_voters 5), with all nodes up and with a site A voter paused (then a
// quorum needs B when B votes), the write gap of a killed leader inside site A, and of
// a planned switchover to B and back.
func TestGeoBench(t *testing.T) {
	if os.Getenv("GSA_BENCH_GEO") == "" {
		t.Skip("a benchmark: make bench runs it (GSA_BENCH_GEO=1)")
	}
	const delay = 20 * time.Millisecond
	c := newCluster(t, clusterOptions{geo: &geoLayout{
		sites:     []int{3, 2},
		preferred: map[string]string{"site-a": "node-1", "site-b": "node-4"},
		delay:     delay,
	}})
	defer c.stop()
	primary := []string{"node-1", "node-2", "node-3"}
	c.waitGeo("3 voters", converged(primary, "node-1"))
	c.mountKV()

	var rows [][2]string
	row := func(k, v string) { rows = append(rows, [2]string{k, v}) }
	// With one primary-site voter paused, a quorum needs a site B node
	// when B votes: that is what the design avoids.
	n3 := c.byID("node-3")
	nonVoters := commitLatency(t, c, 300)
	n3.n.Notify(syscall.SIGSTOP)
	nonVotersDown := commitLatency(t, c, 300)
	n3.n.Notify(syscall.SIGCONT)
	all := *c.topo
	all.MinVoters = 5
	c.setTopology(&all)
	c.waitGeo("5 voters", converged([]string{"node-1", "node-2", "node-3", "node-4", "node-5"}, "node-1"))
	voters := commitLatency(t, c, 300)
	n3.n.Notify(syscall.SIGSTOP)
	votersDown := commitLatency(t, c, 300)
	n3.n.Notify(syscall.SIGCONT)
	all.MinVoters = 0
	c.setTopology(&all)
	c.waitGeo("3 voters again", converged(primary, "node-1"))
	row("commit latency p50, site B non-voters", nonVoters[0].String())
	row("commit latency p99, site B non-voters", nonVoters[1].String())
	row("commit latency p50, site B voting (min_voters 5)", voters[0].String())
	row("commit latency p99, site B voting (min_voters 5)", voters[1].String())
	row("p50 ratio voting / non-voters", fmt.Sprintf("%.1fx", float64(voters[0])/float64(nonVoters[0])))
	row("commit latency p50, node-3 paused, B non-voters", nonVotersDown[0].String())
	row("commit latency p50, node-3 paused, B voting", votersDown[0].String())
	row("p50 ratio with node-3 paused, voting / non-voters", fmt.Sprintf("%.1fx", float64(votersDown[0])/float64(nonVotersDown[0])))

	l := startLoad(c, 4)
	gap := func(name string, do func()) {
		from := time.Now()
		do()
		row(name, l.maxGap(from, time.Now()).Round(time.Millisecond).String())
	}
	gap("write gap, leader killed in site A", func() {
		c.kill(c.byID("node-1"))
		c.waitGeo("a new leader", func(st statusOutput) bool {
			_, leader := geoVoters(st)
			return leader == "node-2" || leader == "node-3"
		})
	})
	c.start(c.byID("node-1"))
	c.unseal(c.byID("node-1"))
	c.waitGeo("node-1 back as leader", converged(primary, "node-1"))
	gap("write gap, planned switchover A -> B", func() {
		c.setTopology(c.withPrimary("site-b"))
		c.waitGeo("site B", converged([]string{"node-4"}, "node-4"))
	})
	gap("write gap, planned switchover B -> A", func() {
		c.setTopology(c.withPrimary("site-a"))
		c.waitGeo("site A", converged(primary, "node-1"))
	})
	l.stop()
	acked, lost := l.verify(t, c.leader())
	row("acknowledged keys read back", fmt.Sprintf("%d (lost %d)", acked, lost))

	// Disaster: site A killed under a writer; on each of B's nodes stop,
	// geo promote --force, start, unseal by shares (what an operator does).
	l = startLoad(c, 4)
	harness.Eventually(t, time.Minute, "writes under way", func() bool { return len(l.ackedNow()) >= 40 })
	for _, id := range primary {
		c.kill(c.byID(id))
	}
	lostAt := time.Now()
	before := l.ackedNow()
	siteB := []*member{c.byID("node-4"), c.byID("node-5")}
	for _, m := range siteB {
		m.n.Signal(t, syscall.SIGTERM, time.Minute)
	}
	promoted := time.Now()
	for _, m := range siteB {
		c.forcePromote(m, "site-b", "site-a")
	}
	commands := time.Since(promoted)
	for _, m := range siteB {
		c.start(m)
		c.unseal(m)
	}
	harness.Eventually(t, time.Minute, "a write after the promotion", func() bool {
		return l.lastAck().After(promoted)
	})
	first := l.firstAckAfter(promoted)
	st := c.waitGeo("the RPO recorded", func(st statusOutput) bool { return st.Geo.RPO != nil && len(st.Geo.Epoch.Survivors) == 2 })
	l.stop()
	row("disaster promotion, both promote --force commands", commands.Round(time.Millisecond).String())
	row("disaster promotion, first command to first write", first.Sub(promoted).Round(time.Millisecond).String()+" (restarts and unseals by shares included)")
	row("disaster promotion, site lost to first write", first.Sub(lostAt).Round(time.Millisecond).String()+" (B's nodes stopped too)")
	row("disaster promotion, RPO", fmt.Sprintf("at most %d entries, %.3f s (kept index %d)", st.Geo.RPO.LostEntriesAtMost, st.Geo.RPO.LostSeconds, st.Geo.RPO.KeptIndex))
	row("writes acknowledged before the loss, missing after it", fmt.Sprintf("%d of %d keys (within the RPO)", missing(c, c.byID("node-4"), before), len(before)))

	var b strings.Builder
	fmt.Fprintf(&b, "\nGeo (3 + 2 nodes on this machine, site B %v away each way)\n", delay)
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-55s %s\n", r[0], r[1])
	}
	t.Log(b.String())
}

// missing counts the keys of want that do not read back with at least
// their acknowledged value through m (a figure: the bench asserts nothing).
func missing(c *cluster, m *member, want map[string]int) int {
	kv := c.client(m).KVv2("kv")
	n := 0
	for k, v := range want {
		got, err := kv.Get(context.Background(), k)
		if err != nil || got == nil {
			n++
			continue
		}
		if x, _ := got.Data["v"].(json.Number).Int64(); int(x) < v {
			n++
		}
	}
	return n
}

// commitLatency times n sequential writes through the leader and returns
// the p50 and p99.
func commitLatency(t *testing.T, c *cluster, n int) [2]time.Duration {
	t.Helper()
	leader := c.leader()
	hc := c.httpClient()
	var d []time.Duration
	for i := range n {
		body := []byte(fmt.Sprintf(`{"data":{"v":%d}}`, i))
		req, _ := http.NewRequestWithContext(context.Background(), "PUT", leader.addr+"/v1/kv/data/bench", bytes.NewReader(body))
		req.Header.Set("X-Vault-Token", c.res.RootToken)
		start := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("write %d: HTTP %d", i, resp.StatusCode)
		}
		d = append(d, time.Since(start))
	}
	slices.Sort(d)
	return [2]time.Duration{d[len(d)/2].Round(10 * time.Microsecond), d[len(d)*99/100].Round(10 * time.Microsecond)}
}
