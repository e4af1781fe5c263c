package geo

import (
	"context"
	"reflect"
	"strings"
	"testing"
)

// livePlan is the live configuration of a converged plan: the planned
// voters vote, leader leads, every node healthy and caught up.
func livePlan(p Plan, leader string) []Server {
	var live []Server
	for _, m := range p.Members {
		live = append(live, Server{ID: m.ID, Address: m.ClusterAddr, Voter: m.Voter, Leader: m.ID == leader, Healthy: true, CaughtUp: true})
	}
	return live
}

func mustPlan(t *testing.T, top *Topology) Plan {
	t.Helper()
	p, err := PlanFor(top)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A planned switchover A -> B, for every shape of two sites of 1..5
// nodes: B's nodes are promoted first, leadership moves to B's preferred
// node, then A's nodes are demoted; a healthy majority and a voting
// leader at every step. Stopping after any number of steps and planning
// again from what is live finishes it (the reconciler keeps no state).
func TestSwitchover(t *testing.T) {
	ctx := context.Background()
	for a := 1; a <= 5; a++ {
		for b := 1; b <= 5; b++ {
			top := topo(a, b)
			top.Sites[1].PreferredLeader = top.Sites[1].Nodes[len(top.Sites[1].Nodes)-1].ID
			before := mustPlan(t, top)
			topB, _ := top.WithPrimary("B")
			after := mustPlan(t, topB)
			full := newFakeRaft(livePlan(before, "a1")...)
			if _, err := converge(ctx, after, full, 20); err != nil {
				t.Fatalf("%d+%d: %v", a, b, err)
			}
			checkHistory(t, "switchover", full)
			if full.leader() != topB.Sites[1].PreferredLeader || !reflect.DeepEqual(full.voters(), sorted(after.Voters())) {
				t.Fatalf("%d+%d: leader %s voters %v, want %s %v", a, b, full.leader(), full.voters(), topB.Sites[1].PreferredLeader, after.Voters())
			}
			// Promotions before the transfer, the transfer before demotions.
			sawTransfer, sawDemote := false, false
			for _, c := range full.calls {
				switch {
				case strings.HasPrefix(c, "promote") && (sawTransfer || sawDemote):
					t.Fatalf("%d+%d: promotion after the transfer or a demotion: %v", a, b, full.calls)
				case strings.HasPrefix(c, "transfer"):
					sawTransfer = true
				case strings.HasPrefix(c, "demote") && !sawTransfer:
					t.Fatalf("%d+%d: demotion before the transfer: %v", a, b, full.calls)
				case strings.HasPrefix(c, "demote"):
					sawDemote = true
				}
			}
			// Interrupted after k steps, resumed from the live state.
			for k := 0; k < len(full.calls); k++ {
				f := newFakeRaft(livePlan(before, "a1")...)
				converge(ctx, after, f, k) // stops after k steps
				live, _ := f.Servers(ctx)
				g := newFakeRaft(live...)
				if d, err := converge(ctx, after, g, 20); err != nil || !d.Converged {
					t.Fatalf("%d+%d interrupted after %d: %v %s", a, b, k, err, d.Describe())
				}
				if !reflect.DeepEqual(g.voters(), full.voters()) || g.leader() != full.leader() {
					t.Fatalf("%d+%d interrupted after %d: ended at %v led by %s", a, b, k, g.voters(), g.leader())
				}
			}
		}
	}
}

func TestNextWaitsAndRefuses(t *testing.T) {
	p := mustPlan(t, topo(3, 2))

	// A planned voter that is behind is not promoted; the others are.
	live := livePlan(p, "a1")
	live[1].Voter, live[1].CaughtUp = false, false // a2
	live[2].Voter = false                          // a3
	d := Next(p, live)
	if d.Step == nil || *d.Step != (Step{Action: Promote, ID: "a3", Why: "a node of the primary site A"}) {
		t.Fatalf("want promote a3, got %s", d.Describe())
	}
	if !strings.Contains(strings.Join(d.Waiting, ";"), "a2 should vote and is catching up") {
		t.Fatalf("waiting %q", d.Waiting)
	}

	// Not joined yet: said, and nothing is added by the reconciler.
	d = Next(p, livePlan(p, "a1")[:4])
	if d.Step != nil || d.Converged || !strings.Contains(strings.Join(d.Waiting, ";"), "b2 (B) has not joined") {
		t.Fatalf("missing b2: %s", d.Describe())
	}

	// A switchover to B while a3 and B's only node are down: nothing can
	// be promoted or take over, and no voter is demoted while that leaves
	// the healthy voters without a majority.
	topB, _ := topo(3, 1).WithPrimary("B")
	pb := mustPlan(t, topB)
	live = livePlan(mustPlan(t, topo(3, 1)), "a1")
	live[2].Healthy, live[3].Healthy = false, false
	d = Next(pb, live)
	if d.Step != nil || d.Converged {
		t.Fatalf("degraded switchover: %s", d.Describe())
	}
	for _, w := range []string{"b1 should vote but is not healthy", "a1 leads but should not; no planned voter is ready to take over",
		"a2 keeps its vote until the planned voters vote and one of them leads"} {
		if !strings.Contains(d.Describe(), w) {
			t.Errorf("degraded switchover: %q lacks %q", d.Describe(), w)
		}
	}

	// Once B leads, a demotion that would leave the healthy voters
	// without a majority waits.
	live = []Server{{ID: "a1", Voter: true, Healthy: true, CaughtUp: true}, {ID: "a2", Voter: true, Healthy: false},
		{ID: "a3", Voter: true, Healthy: false}, {ID: "b1", Voter: true, Leader: true, Healthy: true, CaughtUp: true}}
	d = Next(pb, live)
	if d.Step == nil || d.Step.ID != "a2" {
		t.Fatalf("demoting a down voter first: %s", d.Describe())
	}
	live[1].Healthy = true
	live[3].Healthy = false
	live[3].Leader, live[0].Leader = false, true
	if d := Next(pb, live); d.Step != nil || !strings.Contains(d.Describe(), "a1 leads but should not") {
		t.Fatalf("b1 down again: %s", d.Describe())
	}
	if why := quorumAfter(live, map[string]bool{"a1": true, "a2": true, "a3": true, "b1": true}, "a1"); why != "leave 3 voter(s) with only 1 healthy, less than the 2 a quorum needs" {
		t.Fatalf("quorumAfter: %q", why)
	}

	// A server the topology does not list is removed (the leader never).
	live = append(livePlan(p, "a1"), Server{ID: "old", Voter: false, Healthy: false})
	if d := Next(p, live); d.Step == nil || d.Step.Action != Remove || d.Step.ID != "old" {
		t.Fatalf("want remove old, got %s", d.Describe())
	}
	live = append(livePlan(p, ""), Server{ID: "old", Voter: true, Leader: true, Healthy: true, CaughtUp: true})
	if d := Next(p, live); d.Step == nil || d.Step.Action != Transfer || d.Step.ID != "a1" {
		t.Fatalf("an unlisted leader hands over first, got %s", d.Describe())
	}
}

// The preferred leader: while it is down another primary-site voter
// leads and status says leadership goes back; once it is back and caught
// up, leadership moves to it.
func TestPreferredLeaderReturns(t *testing.T) {
	top := topo(3, 2)
	top.Sites[0].PreferredLeader = "a1"
	p := mustPlan(t, top)
	live := livePlan(p, "a2")
	live[0].Healthy, live[0].CaughtUp = false, false
	d := Next(p, live)
	if d.Step != nil || d.Converged || !strings.Contains(d.Describe(), "leadership goes back to a1 once it is a healthy, caught-up voter") {
		t.Fatalf("a1 down: %s", d.Describe())
	}
	live[0].Healthy = true
	if d := Next(p, live); d.Step != nil {
		t.Fatalf("a1 back but behind: %s", d.Describe())
	}
	live[0].CaughtUp = true
	if d := Next(p, live); d.Step == nil || d.Step.Action != Transfer || d.Step.ID != "a1" {
		t.Fatalf("a1 caught up: %s", d.Describe())
	}
	// A leader in a secondary site (it voted by min_voters) hands over
	// to a primary-site voter as soon as one is ready.
	top = topo(1, 2)
	top.MinVoters = 3
	p = mustPlan(t, top)
	live = livePlan(p, "b1")
	if d := Next(p, live); d.Step == nil || d.Step.Action != Transfer || d.Step.ID != "a1" {
		t.Fatalf("secondary leader: %s", d.Describe())
	}
	live[0].Healthy = false
	if d := Next(p, live); d.Step != nil || d.Converged || !strings.Contains(d.Describe(), "leadership goes to the primary site A once") {
		t.Fatalf("secondary leader, primary down: %s", d.Describe())
	}
}
