package geo

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// wantVoters is the rule PlanFor must follow, written independently: the
// primary site's nodes, topped up from the secondary sites in file order
// to min_voters, minus the last non-preferred one when even.
func wantVoters(t *Topology) []string {
	primary := t.Primary()
	var v []string
	for _, n := range primary.Nodes {
		v = append(v, n.ID)
	}
	for _, s := range t.Sites {
		for _, n := range s.Nodes {
			if !s.Primary && len(v) < t.MinVoters {
				v = append(v, n.ID)
			}
		}
	}
	if len(v)%2 == 0 {
		for i := len(v) - 1; i >= 0; i-- {
			if v[i] != primary.PreferredLeader {
				v = append(v[:i], v[i+1:]...)
				break
			}
		}
	}
	return v
}

// TestPlanTable: every shape of 1..4 sites with 1..7 nodes each (the
// primary first, middle or last, with and without a preferred leader and
// min_voters 3): the voters follow the rule, the preferred leader always
// votes, and from a freshly formed cluster (the first primary node alone
// a voter, every other node joined as a non-voter) the reconciler
// reaches the plan without ever losing a healthy majority.
func TestPlanTable(t *testing.T) {
	n := 0
	for sites := 1; sites <= 4; sites++ {
		for size := 1; size <= 7; size++ {
			for _, primaryAt := range []int{0, sites - 1} {
				for _, minVoters := range []int{0, 3} {
					for _, preferLast := range []bool{false, true} {
						sizes := make([]int, sites)
						for i := range sizes {
							sizes[i] = size - i%2 // sites of unequal sizes
							if sizes[i] < 1 {
								sizes[i] = 1
							}
						}
						top := topo(sizes...)
						top.MinVoters = minVoters
						for i := range top.Sites {
							top.Sites[i].Primary = i == primaryAt
						}
						ps := &top.Sites[primaryAt]
						if preferLast {
							ps.PreferredLeader = ps.Nodes[len(ps.Nodes)-1].ID
						}
						name := fmt.Sprintf("%v/primary=%s/min=%d/preferred=%q", sizes, ps.Name, minVoters, ps.PreferredLeader)
						checkPlan(t, name, top)
						n++
					}
				}
			}
		}
	}
	t.Logf("%d topologies planned and converged", n)
}

func checkPlan(t *testing.T, name string, top *Topology) {
	t.Helper()
	p, err := PlanFor(top)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	want := wantVoters(top)
	if got := p.Voters(); !reflect.DeepEqual(sorted(got), sorted(want)) {
		t.Fatalf("%s: voters %v, want %v", name, got, want)
	}
	if len(want)%2 == 0 {
		t.Fatalf("%s: an even number of voters %v", name, want)
	}
	primary := top.Primary()
	if primary.PreferredLeader != "" {
		if m, _ := p.Member(primary.PreferredLeader); !m.Voter {
			t.Fatalf("%s: the preferred leader %s does not vote", name, primary.PreferredLeader)
		}
	}
	borrowed := 0
	for _, m := range p.Members {
		if m.Why == "" {
			t.Fatalf("%s: %s has no reason", name, m.ID)
		}
		if m.Voter && m.Site != primary.Name {
			borrowed++
		}
	}
	if borrowed > 0 && top.MinVoters == 0 {
		t.Fatalf("%s: secondary nodes vote without min_voters", name)
	}
	if costs := strings.Contains(strings.Join(p.Notes, " "), "cross-site commit latency"); costs != (borrowed > 0) {
		t.Fatalf("%s: %d cross-site voters but notes %q", name, borrowed, p.Notes)
	}
	self := p.Members[0].ID
	rj := p.RetryJoin(self)
	if len(rj) != len(p.Members)-1 {
		t.Fatalf("%s: retry_join %v", name, rj)
	}
	k := countOthersIn(p, primary.Name, self)
	for i, addr := range rj {
		if m := memberByAPI(p, addr); m.ID == self || (m.Site == primary.Name) != (i < k) {
			t.Fatalf("%s: retry_join %v does not list the other primary-site nodes first", name, rj)
		}
	}

	// A cluster as it forms: the first node of the primary site
	// initialized it and leads; every other node joined as a non-voter.
	first := primary.Nodes[0].ID
	var live []Server
	for _, m := range p.Members {
		live = append(live, Server{ID: m.ID, Address: m.ClusterAddr, Voter: m.ID == first, Leader: m.ID == first, Healthy: true, CaughtUp: true})
	}
	f := newFakeRaft(live...)
	d, err := converge(context.Background(), p, f, 3*len(p.Members)+2)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !d.Converged {
		t.Fatalf("%s: stopped without converging: %s", name, d.Describe())
	}
	if got := f.voters(); !reflect.DeepEqual(got, sorted(want)) {
		t.Fatalf("%s: converged to voters %v, want %v", name, got, want)
	}
	if l := f.leader(); primary.PreferredLeader != "" && l != primary.PreferredLeader {
		t.Fatalf("%s: leader %s, preferred %s", name, l, primary.PreferredLeader)
	}
	checkHistory(t, name, f)
}

func memberByAPI(p Plan, addr string) Member {
	for _, m := range p.Members {
		if m.APIAddr == addr {
			return m
		}
	}
	return Member{}
}

func countOthersIn(p Plan, site, self string) int {
	n := 0
	for _, m := range p.Members {
		if m.Site == site && m.ID != self {
			n++
		}
	}
	return n
}

// checkHistory: every configuration the fake passed through had a leader
// that voted and a healthy majority of its voters.
func checkHistory(t *testing.T, name string, f *fakeRaft) {
	t.Helper()
	for i, conf := range f.history {
		voters, healthy, leaderVotes := 0, 0, false
		for _, s := range conf {
			if s.Voter {
				voters++
				if s.Healthy {
					healthy++
				}
				leaderVotes = leaderVotes || s.Leader
			}
		}
		if !leaderVotes || healthy < voters/2+1 {
			t.Fatalf("%s: configuration %d %+v lost its leader or its healthy majority (calls %v)", name, i, conf, f.calls)
		}
	}
}

func TestPlanExamples(t *testing.T) {
	// 4 primary nodes: 3 voters, the odd one out never the preferred leader.
	top := topo(4, 2)
	top.Sites[0].PreferredLeader = "a4"
	p, _ := PlanFor(top)
	if got := p.Voters(); !reflect.DeepEqual(got, []string{"a1", "a2", "a4"}) {
		t.Fatalf("4 primary nodes: voters %v", got)
	}
	if m, _ := p.Member("a3"); m.Voter || !strings.Contains(m.Why, "4 voters survive as many failures as 3") {
		t.Fatalf("a3: %+v", m)
	}
	// 1 primary node with min_voters 3: the first two secondary nodes
	// vote, and the plan says what that costs.
	top = topo(1, 1, 2)
	top.MinVoters = 3
	p, _ = PlanFor(top)
	if got := p.Voters(); !reflect.DeepEqual(got, []string{"a1", "b1", "c1"}) {
		t.Fatalf("min_voters 3: voters %v", got)
	}
	if !strings.Contains(strings.Join(p.Notes, " "), "b1 (B), c1 (C) vote beside the primary site A") {
		t.Fatalf("notes %q", p.Notes)
	}
	// 1 node and no min_voters: it says a single voter survives nothing.
	p, _ = PlanFor(topo(1, 3))
	if !strings.Contains(strings.Join(p.Notes, " "), "1 voter: losing it stops writes") {
		t.Fatalf("notes %q", p.Notes)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}
