package appliance

import (
	"context"
	"errors"
	"slices"

	"github.com/openbao/openbao/helper/namespace"
	"github.com/openbao/openbao/sdk/v2/logical"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
)

// GeoPolicyPath guards planned switchovers: a token needs sudo on it
// (root tokens have it). GitLab Rails' policy never grants it.
const GeoPolicyPath = "sys/appliance/geo"

// Errors of Geo operations.
var (
	ErrNoGeo           = errors.New("this node has no geo block")
	ErrGeoNotActive    = errors.New("Geo switchovers run on the active node: send the command to the leader (see `status`)")
	ErrGeoUnauthorized = errors.New("permission denied: the token needs the sudo capability on " + GeoPolicyPath)
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
	if !a.geo.Active() {
		return client.PromoteResult{}, ErrGeoNotActive
	}
	auth, err := a.authorizeSudo(ctx, token, GeoPolicyPath, ErrGeoUnauthorized)
	if err != nil && !a.geo.Active() {
		err = ErrGeoNotActive // leadership moved while the token was checked
	}
	a.auditOp(ctx, "sys/appliance/geo/promote", auth, map[string]any{"site": req.Site, "dry_run": req.DryRun}, nil, err)
	if err != nil {
		return client.PromoteResult{}, err
	}
	res, err := a.geo.Preflight(ctx, req.Site)
	if err == nil && !req.DryRun {
		err = a.geo.Promote(ctx, req.Site, "geo promote by "+auth.DisplayName)
		res.Started = err == nil
	}
	a.auditOp(ctx, "sys/appliance/geo/promote", auth, nil, map[string]any{"site": req.Site, "started": res.Started}, err)
	return res, err
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
