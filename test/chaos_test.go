package test

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// The fault campaign: a 3-node cluster (two nodes unseal by the HSM, one
// by shares) under 6 writers (2 per node) and a reader per node, and one fault per
// round. Every round ends with every acknowledged write read back; no
// write may be lost and no node may answer 500. Each round also runs 9
// register clients (reads, unique writes, check-and-set on 4 new keys,
// see registers): their history must be linearizable, with indeterminate
// operations kept, and every stored version written at most once. GSA_CHAOS_ROUNDS sets the
// rounds (`make chaos ROUNDS=50`); `make test` runs one round of each
// fault.
func TestChaos(t *testing.T) {
	rounds := len(chaosFaults)
	if v, err := strconv.Atoi(os.Getenv("GSA_CHAOS_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	hsm := harness.NewSoftHSM(t, "gitlab-secrets")
	hsm.GenerateAESKey(t, "kek")
	nw, err := harness.NewNet(t, 3)
	if err != nil {
		t.Logf("no private network (%v): nodes run on loopback and the partition fault is left out", err)
		nw = nil
	}
	c := newCluster(t, clusterOptions{size: 3, env: hsm.Env(), net: nw, seals: func(i int, dir string) string {
		if i == 2 {
			return "seal {\n  shamir {\n    shares = 3\n    threshold = 2\n  }\n}\n"
		}
		return hsmSeal(t, hsm, dir, "kek", true)
	}})
	defer c.stop()
	c.mountKV()
	l := startLoad(c, 6)
	defer l.stop()
	hc := c.httpClient()

	if os.Getenv("GSA_TEST_LOGS") != "" {
		defer func() { t.Log(c.tr.String()) }()
	}
	only := os.Getenv("GSA_CHAOS_ONLY") // a fault's name: run just that one
	var results []chaosRound
	for r, i := 0, 0; r < rounds; i++ {
		f := chaosFaults[i%len(chaosFaults)]
		if f.needsNet && nw == nil || only != "" && f.name != only {
			continue
		}
		c.waitHealthy(hc, l)
		regs := startRegisters(c, fmt.Sprintf("lin-r%d", r+1), 4, 9)
		start := time.Now()
		before := l.snapshotKinds()
		res := f.run(c, hc)
		c.waitHealthy(hc, l)
		res.fault, res.gap = f.name, l.maxGap(start, time.Now())
		res.answers = l.kindsSince(before)
		res.acked, res.lost = l.verify(t, c.leader())
		res.lin = regs.check(t, c.leader())
		results = append(results, res)
		t.Logf("round %2d %-28s gap %6s  not ready %-16s acked %4d lost %d  ops %d (indeterminate %d %v, versions %d, violations %d)  %s", r+1, f.name,
			res.gap.Round(time.Millisecond), res.notReadyText(), res.acked, res.lost, res.lin.ops, res.lin.unknown, res.lin.why, res.lin.versions, len(res.lin.problems), res.answers)
		for _, p := range res.lin.problems {
			t.Errorf("round %d (%s): %s", r+1, f.name, p)
		}
		if !res.lin.from.IsZero() {
			c.logsBetween(res.lin.from.Add(-2*time.Second), res.lin.to.Add(2*time.Second))
		}
		r++
	}
	l.stop()
	t.Log(chaosSummary(results))
	for _, res := range results {
		if res.lost > 0 {
			t.Errorf("%s: %d acknowledged writes lost", res.fault, res.lost)
		}
	}
	if bad := l.serverErrors(); len(bad) > 0 {
		t.Errorf("%d answers were server errors other than 503, e.g.:\n%s", len(bad), strings.Join(bad[:min(len(bad), 10)], "\n"))
	}
}

// chaosFault is one kind of fault; run does it and brings the cluster
// back, returning the restarted nodes' not-ready windows.
type chaosFault struct {
	name     string
	needsNet bool
	run      func(c *cluster, hc *http.Client) chaosRound
}

type chaosRound struct {
	fault       string
	gap         time.Duration
	notReady    []time.Duration // per restarted node: from its start to ready
	acked, lost int
	answers     string
	lin         regResult // the registers' history and audit
}

func (r chaosRound) notReadyText() string {
	if len(r.notReady) == 0 {
		return "-"
	}
	var s []string
	for _, d := range r.notReady {
		s = append(s, d.Round(100*time.Millisecond).String())
	}
	return strings.Join(s, ",")
}

// downtime is how long a killed or stopped node stays away.
const downtime = 3 * time.Second

var chaosFaults = []chaosFault{
	{name: "kill -9 leader", run: func(c *cluster, hc *http.Client) chaosRound {
		l := c.leader()
		c.kill(l)
		return chaosRound{notReady: c.restartAfter(hc, downtime, l)}
	}},
	{name: "kill -9 follower", run: func(c *cluster, hc *http.Client) chaosRound {
		f := c.others(c.leader())[0]
		c.kill(f)
		return chaosRound{notReady: c.restartAfter(hc, downtime, f)}
	}},
	{name: "kill -9 two followers", run: func(c *cluster, hc *http.Client) chaosRound {
		fs := c.others(c.leader())
		for _, f := range fs {
			c.kill(f)
		}
		return chaosRound{notReady: c.restartAfter(hc, downtime, fs...)}
	}},
	{name: "SIGSTOP leader 5s", run: func(c *cluster, hc *http.Client) chaosRound {
		l := c.leader()
		l.n.Notify(syscall.SIGSTOP)
		paused := time.Now()
		c.leaderAmong(c.others(l))                          // the others elect one of them
		time.Sleep(time.Until(paused.Add(5 * time.Second))) // the fault lasts 5 s (election timeout: 1 s)
		l.n.Notify(syscall.SIGCONT)
		return chaosRound{notReady: []time.Duration{c.untilReady(hc, l, time.Now())}}
	}},
	{name: "restart follower (shares)", run: func(c *cluster, hc *http.Client) chaosRound {
		m := c.nodes[2] // the node without an HSM (if it leads, it hands over)
		m.n.Signal(c.t, syscall.SIGTERM, time.Minute)
		return chaosRound{notReady: c.restartAfter(hc, 0, m)}
	}},
	{name: "restart follower (HSM)", run: func(c *cluster, hc *http.Client) chaosRound {
		var m *member
		for _, o := range c.others(c.leader()) {
			if o != c.nodes[2] {
				m = o
			}
		}
		m.n.Signal(c.t, syscall.SIGTERM, time.Minute)
		return chaosRound{notReady: c.restartAfter(hc, 0, m)}
	}},
	{name: "partition leader 5s", needsNet: true, run: func(c *cluster, hc *http.Client) chaosRound {
		l := c.leader()
		if err := l.netHost.Cut(); err != nil {
			c.t.Fatal(err)
		}
		cut := time.Now()
		c.leaderAmong(c.others(l))
		time.Sleep(time.Until(cut.Add(5 * time.Second))) // the partition lasts 5 s
		if err := l.netHost.Heal(); err != nil {
			c.t.Fatal(err)
		}
		return chaosRound{notReady: []time.Duration{c.untilReady(hc, l, time.Now())}}
	}},
}

// restartAfter starts ms again once they have been down for d, unseals
// them (their HSM, or shares) and returns each one's time from start to
// ready.
func (c *cluster) restartAfter(hc *http.Client, d time.Duration, ms ...*member) []time.Duration {
	time.Sleep(d) // the node's downtime: part of the fault
	var starts []time.Time
	for _, m := range ms {
		starts = append(starts, time.Now())
		c.start(m)
		c.unseal(m)
	}
	var out []time.Duration
	for i, m := range ms {
		out = append(out, c.untilReady(hc, m, starts[i]))
	}
	return out
}

// untilReady polls m's sys/health until it is ready; the time since from.
func (c *cluster) untilReady(hc *http.Client, m *member, from time.Time) time.Duration {
	c.t.Helper()
	harness.Eventually(c.t, 3*time.Minute, m.id+" to be ready", func() bool {
		code, _ := health(hc, m.addr)
		return code == http.StatusOK
	})
	return time.Since(from)
}

// leaderAmong waits until one of ms is active.
func (c *cluster) leaderAmong(ms []*member) *member {
	c.t.Helper()
	var l *member
	harness.Eventually(c.t, 2*time.Minute, "an active node among the others", func() bool {
		for _, m := range ms {
			if st, _ := status(c.t, c.tr, c.bin, m.addr); st.State == "active" {
				l = m
				return true
			}
		}
		return false
	})
	return l
}

// waitHealthy waits until every node is ready and writes are acknowledged.
func (c *cluster) waitHealthy(hc *http.Client, l *load) {
	c.t.Helper()
	for _, m := range c.nodes {
		c.untilReady(hc, m, time.Now())
	}
	l.mu.Lock()
	n := len(l.acks)
	l.mu.Unlock()
	harness.Eventually(c.t, time.Minute, "acknowledged writes", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.acks) > n+20
	})
}

func (l *load) snapshotKinds() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.kinds))
	for k, v := range l.kinds {
		out[k] = v
	}
	return out
}

// kindsSince sums, by answer (the node left out), what was not a 200
// since before.
func (l *load) kindsSince(before map[string]int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	sum := map[string]int{}
	for k, v := range l.kinds {
		if d := v - before[k]; d > 0 {
			_, answer, _ := strings.Cut(k, " ")
			if !strings.HasSuffix(answer, " 200") {
				sum[answer] += d
			}
		}
	}
	var keys []string
	for k := range sum {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s:%d ", k, sum[k])
	}
	return strings.TrimSpace(b.String())
}

// chaosSummary is the campaign's figures per fault: write gaps and
// not-ready windows (median, max), acknowledged and lost writes.
func chaosSummary(results []chaosRound) string {
	byFault := map[string][]chaosRound{}
	var order []string
	for _, r := range results {
		if _, ok := byFault[r.fault]; !ok {
			order = append(order, r.fault)
		}
		byFault[r.fault] = append(byFault[r.fault], r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-28s %6s %10s %10s %12s %12s %8s %5s %8s %6s %5s\n", "fault", "rounds", "gap p50", "gap max", "notready p50", "notready max", "acked", "lost", "reg ops", "indet", "viol")
	var acked, lost, ops, indet, viol int
	for _, f := range order {
		var gaps, nr []time.Duration
		a, lo, o, in, v := 0, 0, 0, 0, 0
		for _, r := range byFault[f] {
			gaps = append(gaps, r.gap)
			nr = append(nr, r.notReady...)
			a, lo = max(a, r.acked), lo+r.lost
			o, in, v = o+r.lin.ops, in+r.lin.unknown, v+len(r.lin.problems)
		}
		acked, lost, ops, indet, viol = max(acked, a), lost+lo, ops+o, indet+in, viol+v
		fmt.Fprintf(&b, "%-28s %6d %10s %10s %12s %12s %8d %5d %8d %6d %5d\n", f, len(byFault[f]),
			median(gaps), maxOf(gaps), median(nr), maxOf(nr), a, lo, o, in, v)
	}
	fmt.Fprintf(&b, "total: %d rounds, %d keys acknowledged, %d lost; %d register operations, %d indeterminate, %d violations\n", len(results), acked, lost, ops, indet, viol)
	return b.String()
}

func median(d []time.Duration) string {
	if len(d) == 0 {
		return "-"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2].Round(10 * time.Millisecond).String()
}

func maxOf(d []time.Duration) string {
	if len(d) == 0 {
		return "-"
	}
	return slices.Max(d).Round(10 * time.Millisecond).String()
}
