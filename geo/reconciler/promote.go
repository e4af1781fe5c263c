package reconciler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
)

// ErrPreflight: a planned switchover's pre-flight checks failed.
var ErrPreflight = errors.New("pre-flight checks failed: nothing changed")

// Preflight checks that site can take over now and returns the plan.
func (g *Reconciler) Preflight(ctx context.Context, site string) (client.PromoteResult, error) {
	g.mu.Lock()
	topo, current := g.topo, g.primary.Topology.Primary().Name
	g.mu.Unlock()
	target, err := topo.WithPrimary(site)
	if err != nil {
		return client.PromoteResult{}, err
	}
	plan, err := geo.PlanFor(target)
	if err != nil {
		return client.PromoteResult{}, err
	}
	res := client.PromoteResult{Site: site, From: current, Voters: plan.Voters(), Leader: plan.Leader, Notes: plan.Notes}
	check := func(name string, ok bool, format string, args ...any) {
		res.Checks = append(res.Checks, client.GeoCheck{Check: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	peers := g.pollPeers(ctx, topo, PollWait)
	live, err := (&raftMembership{g: g, peers: peers}).Servers(ctx)
	if err != nil {
		return res, err
	}
	inRaft := map[string]geo.Server{}
	for _, s := range live {
		inRaft[s.ID] = s
	}
	s, _ := target.Site(site)
	healthy := 0
	for _, n := range s.Nodes {
		name := "node " + n.ID
		ps, reached := peers[n.ID]
		_, joined := inRaft[n.ID]
		switch {
		case n.ID == g.nodeID:
			check(name, true, "this node, active")
			healthy++
		case !joined:
			check(name, false, "not in the Raft configuration: start it and unseal it so that it joins")
		case !reached:
			check(name, false, "does not answer at %s", n.APIAddr)
		case ps.Sealed || !ps.Initialized:
			check(name, false, "sealed: unseal it first")
		case !ps.Ready:
			check(name, false, "not caught up: %s", ps.NotReady)
		default:
			check(name, true, "unsealed, caught up (applied index %d)", ps.AppliedIndex)
			if slices.Contains(res.Voters, n.ID) {
				healthy++
			}
		}
	}
	need := len(res.Voters)/2 + 1
	check("quorum", healthy >= len(res.Voters), "%d of the %d planned voters (%v) are ready; a quorum is %d, a planned switchover wants them all",
		healthy, len(res.Voters), res.Voters, need)
	for _, c := range res.Checks {
		if !c.OK {
			return res, ErrPreflight
		}
	}
	return res, nil
}

// Promote records site as the primary, in Raft, for every active node.
func (g *Reconciler) Promote(ctx context.Context, site, source string) error {
	g.mu.Lock()
	base := g.topo.Primary().Name
	g.mu.Unlock()
	if err := g.writeOverride(ctx, &geo.Override{Site: site, TopologyPrimary: base, Source: source, At: time.Now().UTC()}); err != nil {
		return fmt.Errorf("recording the new primary: %w", err)
	}
	g.logger.Info("geo: planned switchover recorded", "site", site, "source", source)
	return nil
}
