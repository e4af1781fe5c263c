package appliance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/openbao/openbao/helper/namespace"
	"github.com/openbao/openbao/sdk/v2/logical"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
)

// GeoPolicyPath guards planned switchovers: a token needs sudo on it
// (root tokens have it). GitLab Rails' policy never grants it.
const GeoPolicyPath = "sys/appliance/geo"

// Errors of Geo operations.
var (
	ErrNoGeo           = errors.New("this node has no geo block")
	ErrGeoNotActive    = errors.New("Geo switchovers run on the active node: send the command to the leader (see `status`)")
	ErrGeoUnauthorized = errors.New("permission denied: the token needs the sudo capability on " + GeoPolicyPath)
	ErrGeoPreflight    = errors.New("pre-flight checks failed: nothing changed")
)

// GeoPromote starts a planned switchover to req.Site (every node up):
// pre-flight checks first (the site's nodes reachable, unsealed and
// caught up; its planned voters enough for a quorum), then it records
// the site as primary in Raft; the reconciler promotes the site's nodes,
// moves leadership to its preferred node and demotes the old site's, one
// safe step at a time. It returns once the switchover is recorded; a
// switchover interrupted half-way is finished by any active node, and
// running the command again is harmless. A topology file that names
// another primary later wins (Geo stays the source of truth).
func (a *Appliance) GeoPromote(ctx context.Context, token string, req client.PromoteRequest) (client.PromoteResult, error) {
	if a.geo == nil {
		return client.PromoteResult{}, ErrNoGeo
	}
	if !a.geo.active() {
		return client.PromoteResult{}, ErrGeoNotActive
	}
	auth, err := a.authorizeSudo(ctx, token, GeoPolicyPath, ErrGeoUnauthorized)
	if err != nil && !a.geo.active() {
		err = ErrGeoNotActive // leadership moved while the token was checked
	}
	a.auditOp(ctx, "sys/appliance/geo/promote", auth, map[string]any{"site": req.Site, "dry_run": req.DryRun}, nil, err)
	if err != nil {
		return client.PromoteResult{}, err
	}
	res, err := a.geo.preflight(ctx, req.Site)
	if err == nil && !req.DryRun {
		err = a.geo.promote(ctx, req.Site, "geo promote by "+auth.DisplayName)
		res.Started = err == nil
	}
	a.auditOp(ctx, "sys/appliance/geo/promote", auth, nil, map[string]any{"site": req.Site, "started": res.Started}, err)
	return res, err
}

// preflight checks that site can take over now and returns the plan.
func (g *geoRun) preflight(ctx context.Context, site string) (client.PromoteResult, error) {
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
	peers := g.pollPeers(ctx, topo, geoPollWait)
	live, err := (&raftMembership{a: g.a, peers: peers}).Servers(ctx)
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
		case n.ID == g.a.cfg.NodeID:
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
			return res, ErrGeoPreflight
		}
	}
	return res, nil
}

// promote records site as the primary, in Raft, for every active node.
func (g *geoRun) promote(ctx context.Context, site, source string) error {
	g.mu.Lock()
	base := g.topo.Primary().Name
	g.mu.Unlock()
	if err := g.writeOverride(ctx, &geo.Override{Site: site, TopologyPrimary: base, Source: source, At: time.Now().UTC()}); err != nil {
		return fmt.Errorf("recording the new primary: %w", err)
	}
	g.a.logger.Info("geo: planned switchover recorded", "site", site, "source", source)
	return nil
}

// authorizeSudo checks that token has sudo (or root) on path; denied is
// the error when it does not.
func (a *Appliance) authorizeSudo(ctx context.Context, token, path string, denied error) (*logical.Auth, error) {
	if token == "" {
		return nil, denied
	}
	ctx = namespace.RootContext(ctx)
	resp, err := a.core.HandleRequest(ctx, &logical.Request{
		Operation:   logical.UpdateOperation,
		Path:        "sys/capabilities-self",
		ClientToken: token,
		Data:        map[string]interface{}{"paths": []string{path}},
	})
	if err != nil || resp == nil || resp.IsError() {
		return nil, denied
	}
	caps, _ := resp.Data[path].([]string)
	te, err := a.core.LookupToken(ctx, token)
	if err != nil || te == nil {
		return nil, denied
	}
	auth := &logical.Auth{
		ClientToken: token, Accessor: te.Accessor, DisplayName: te.DisplayName,
		Policies: te.Policies, EntityID: te.EntityID, TokenType: te.Type,
	}
	if slices.Contains(caps, "root") || slices.Contains(caps, "sudo") {
		return auth, nil
	}
	return auth, denied
}
