package appliance

import (
	"context"
	"time"

	hraft "github.com/hashicorp/raft"
	"github.com/openbao/openbao/sdk/v2/logical"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/appliance/httpapi"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo/reconciler"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// httpAPI is the node's HTTP layer (see package httpapi).
func (a *Appliance) httpAPI() *httpapi.API {
	return httpapi.New(httpapi.Config{Node: httpNode{a}, Core: a.core, Errors: httpErrors, NodeID: a.cfg.NodeID, DataDir: a.cfg.DataDir, Logger: a.logger})
}

// httpErrors are the node's errors by the HTTP status they answer.
var httpErrors = httpapi.Errors{
	NotFound:  []error{ErrNoGeo},
	Forbidden: []error{ErrUnauthorized, ErrGeoUnauthorized, ErrResetRefused, logical.ErrPermissionDenied},
	Conflict: []error{ErrAlreadyInitialized, ErrInitRunning, reconciler.ErrFenced, ErrNotActive, ErrGeoNotActive, reconciler.ErrPreflight,
		seal.ErrChangePending, seal.ErrNoChange},
	RestartForbidden: []error{ErrRestartUnauthorized},
	RestartConflict:  []error{ErrRestartActive, ErrRestartSealed},
}

// httpNode is the node as package httpapi sees it: *Appliance's exported
// operations, and the rest under the names httpapi.Node gives them.
type httpNode struct{ *Appliance }

func (n httpNode) Readiness() httpapi.Readiness   { return n.readiness() }
func (n httpNode) State() string                  { return n.state() }
func (n httpNode) LeaseDuration() time.Duration   { return n.leaseDuration() }
func (n httpNode) SoleVoter() bool                { return n.leaders.SoleVoter() }
func (n httpNode) LeaderChanged() <-chan struct{} { return n.leaders.Changed() }
func (n httpNode) Context() context.Context       { return n.bgCtx }

func (n httpNode) LeadershipConfirmed() time.Time {
	return n.leaders.Confirmed()
}

func (n httpNode) LastContact() time.Time {
	var t time.Time
	n.raftH.With(func(r *hraft.Raft) { t = r.LastContact() })
	return t
}

func (n httpNode) GeoLease() (reason string, geo bool) { return n.geoLease(), n.geo != nil }

func (n httpNode) GeoPeer(ctx context.Context) (client.PeerStatus, error) {
	if n.geo == nil {
		return client.PeerStatus{}, ErrNoGeo
	}
	return n.geo.Peer(ctx), nil
}

func (n httpNode) AuthorizeSudo(ctx context.Context, token, path string, denied error) error {
	_, err := n.authorizeSudo(ctx, token, path, denied)
	return err
}

func (n httpNode) CheckDisk() client.DiskStatus {
	n.checkDisk()
	return n.disk.Status()
}

func (n httpNode) DiskFull() { n.disk.MarkLow() }

// OperatorSeal: the seal keeper cannot unseal in between, both hold
// unsealMu.
func (n httpNode) OperatorSeal(sealNode func()) {
	a := n.Appliance
	a.unsealMu.Lock()
	defer a.unsealMu.Unlock()
	wasSealed := a.core.Sealed()
	sealNode()
	if !wasSealed && a.core.Sealed() {
		a.seal.Forget(true)
		a.logger.Info("sealed by an operator (sys/seal): the node forgot its seal key; it unseals with Shamir shares, or with the HSM after a restart")
	}
}

func (n httpNode) ShamirProgress() (submitted, threshold, shares int) {
	return n.seal.ShamirProgress()
}

func (n httpNode) UnsealProgress(ctx context.Context) client.UnsealProgress {
	return n.unsealProgress(ctx)
}

func (n httpNode) RequestRestart(ctx context.Context, token string, handOver bool) (bool, error) {
	return n.requestRestart(ctx, token, handOver)
}
