// Package httpapi is a node's HTTP layer: the appliance's own endpoints
// under /appliance/v1/, the bao-compatible answers to what multi-unseal
// changes (sys/init, sys/unseal, sys/seal-status, sys/seal), the gates in
// front of OpenBao's handler (readiness, disk, key ceremonies, FIPS,
// detailed policy lists) and the one mapping of the node's errors to
// HTTP status codes. It reaches the node through Node, and OpenBao's core
// directly for what OpenBao's own handler and namespaces need.
package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	vaulthttp "github.com/openbao/openbao/http"
	"github.com/openbao/openbao/internalshared/configutil"
	"github.com/openbao/openbao/internalshared/listenerutil"
	"github.com/openbao/openbao/vault"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/appliance/filter"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/gitlab"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// Node is what the handlers ask of the running node: what the gates in
// front of OpenBao look at (Gate) and the operations the endpoints run
// (Operations).
type Node interface {
	Gate
	Operations
}

// Gate is the node as the gates see it: its readiness, its leadership
// and how recently a quorum confirmed it, its Geo lease, its disk.
type Gate interface {
	// Readiness is whether the node can answer API requests now; it
	// never blocks on another node.
	Readiness() Readiness
	// State is the node's client.State*, without probing anything.
	State() string
	// LeaseDuration is how recently a quorum must have confirmed a
	// leader's leadership for it to serve.
	LeaseDuration() time.Duration
	// LeadershipConfirmed is when the last round that confirmed this
	// node's leadership started; SoleVoter: this node is the only voter.
	LeadershipConfirmed() time.Time
	SoleVoter() bool
	// LeaderChanged is closed at the next change of Raft's state or
	// leader.
	LeaderChanged() <-chan struct{}
	// LastContact is when Raft last heard from a leader (zero while Raft
	// is not running).
	LastContact() time.Time
	// Context ends when the node begins to close.
	Context() context.Context
	// GeoLease is why the node cannot vouch for an answer now because of
	// its Geo epoch ("" when it can); geo is false without Geo.
	GeoLease() (reason string, geo bool)
	// CheckDisk looks at the data dir's free space; DiskFull marks it
	// low (a write found no space left).
	CheckDisk() client.DiskStatus
	DiskFull()
	// AuthorizeSudo checks that token has sudo (or root) on path; denied
	// is the error when it does not (the key ceremonies' gate).
	AuthorizeSudo(ctx context.Context, token, path string, denied error) error
}

// Operations are what the /appliance/v1 and bao-compatible endpoints run
// on the node.
type Operations interface {
	// GeoPeer is this node's PeerStatus, or the error that it has no Geo.
	GeoPeer(ctx context.Context) (client.PeerStatus, error)
	// OperatorSeal runs seal (OpenBao's sys/seal) excluding the node's own
	// unseal, and makes the node forget its seal key if it sealed it.
	OperatorSeal(seal func())
	// ShamirProgress is the unseal attempt's shares so far, and the
	// Shamir enrollment's threshold and share count.
	ShamirProgress() (submitted, threshold, shares int)

	Status(ctx context.Context) client.Status
	Init(ctx context.Context, req client.InitRequest) (*client.InitResult, error)
	Unseal(ctx context.Context, share string) (client.UnsealProgress, error)
	ResetUnseal(ctx context.Context, share string) error
	UnsealProgress(ctx context.Context) client.UnsealProgress
	StartSealChange(ctx context.Context, token, op string, c client.SealChange) (seal.ChangeStatus, error)
	AuthorizeSealChange(ctx context.Context, token, nonce, key string) (seal.ChangeStatus, error)
	VerifySealChange(ctx context.Context, nonce, share string) (seal.ChangeStatus, error)
	CancelSealChange(ctx context.Context, token, nonce string) error
	PendingSealChange() *seal.ChangeStatus
	BootstrapGitLab(ctx context.Context, token string) ([]gitlab.Step, error)
	GeoPromote(ctx context.Context, token string, req client.PromoteRequest) (client.PromoteResult, error)
	RequestRestart(ctx context.Context, token string, handOver bool) (handedOver bool, err error)
}

// Config is what New needs.
type Config struct {
	Node   Node
	Core   *vault.Core
	Errors Errors // the node's errors by status (see Errors)
	NodeID string
	// DataDir names the data dir in the disk gate's answers.
	DataDir string
	// Logger takes the servers' errors and the warnings of answers held
	// back (the Geo lease).
	Logger hclog.Logger
}

// API is a node's HTTP layer.
type API struct {
	n        Node
	core     *vault.Core
	errs     Errors
	nodeID   string
	dataDir  string
	logger   hclog.Logger
	keySlots chan struct{} // unseal, authorize and verify attempts running (keySlot)
	gate     gateState
	admin    http.Handler
}

// New builds the HTTP layer of the node cfg names.
func New(cfg Config) *API {
	h := &API{
		n: cfg.Node, core: cfg.Core, errs: cfg.Errors, nodeID: cfg.NodeID, dataDir: cfg.DataDir, logger: cfg.Logger,
		keySlots: make(chan struct{}, maxKeyAttempts),
	}
	h.admin = h.adminHandler()
	return h
}

// Cluster is the handler of the requests a standby forwards to this node.
// They pass the same filter and ceremony gate here, on the active node, and
// find the same endpoints (the legacy rekey ones off), as on the listener
// that took them.
func (h *API) Cluster() http.Handler {
	return filter.Wrap(h.core, h.diskGate(h.ceremonyGate(h.detailedPolicies(vaulthttp.Handler.Handler(&vault.HandlerProperties{
		Core: h.core, ListenerConfig: &configutil.Listener{DisableUnauthedRekeyEndpoints: true},
	})))))
}

// Server is the HTTP server of the API listener ln (all: every API
// listener): /appliance/v1/ beside OpenBao's API behind the gates.
func (h *API) Server(ln listenerutil.Listener, all []listenerutil.Listener) *http.Server {
	api := vaulthttp.Handler.Handler(&vault.HandlerProperties{
		Core:           h.core,
		ListenerConfig: ln.Config,
		AllListeners:   all,
	})
	if len(ln.Config.XForwardedForAuthorizedAddrs) > 0 {
		api = vaulthttp.WrapForwardedForHandler(api, ln.Config)
	}
	mux := http.NewServeMux()
	mux.Handle(adminPrefix, h.admin)
	mux.Handle("/", h.readyGate(h.diskGate(h.baoCompat(h.ceremonyGate(h.detailedPolicies(api))))))
	return &http.Server{
		Handler:           filter.Wrap(h.core, mux), // the filter runs before anything reads the request
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          h.logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
}
