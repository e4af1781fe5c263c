package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-secure-stdlib/reloadutil"
	"github.com/openbao/openbao/command/server"
	vaulthttp "github.com/openbao/openbao/http"
	"github.com/openbao/openbao/internalshared/listenerutil"
	"github.com/openbao/openbao/physical/raft"
	"github.com/openbao/openbao/sdk/v2/logical"
	"github.com/openbao/openbao/vault"
	vaultseal "github.com/openbao/openbao/vault/seal"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo/reconciler"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/bao"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/quietlog"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/raftx"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/snapshot"
)

// Appliance is one running node: the embedded OpenBao core on Raft storage,
// its API listeners and the appliance's own endpoints under /appliance/v1/.
//
// Close stops it in this order: stop accepting API requests and let those
// in flight finish (up to ShutdownTimeout), seal and shut down the core
// (which stops Raft and the cluster listener), close the Raft and FSM
// databases, release the data directory's lock (LockFile). A write
// the API acknowledged is in the Raft log on disk before its response is
// sent, so it survives.
type Appliance struct {
	cfg         *config.Config                // as started; never modified
	live        atomic.Pointer[config.Config] // as reloaded; read it through config()
	reloadMu    sync.Mutex                    // serializes Reload
	lock        *datadir.Lock                 // held from Start to the end of Close
	logger      hclog.InterceptLogger
	core        *vault.Core
	raft        *raft.RaftBackend
	raftH       *raftx.Handle          // the hashicorp/raft instance inside raft
	geo         *reconciler.Reconciler // the Geo topology and reconciler; nil without a geo block
	leaders     *raftx.LeaderWatch     // cancels forwards to a leader that is no longer it
	disk        *datadir.DiskGuard     // refuses writes before the data dir is full
	storage     *datadir.Report        // the data dir as the start found it (startCheck)
	snaps       *snapshot.Schedule     // the snapshot schedule, nil without a snapshot block
	seal        *seal.Seal
	barrier     vault.Seal
	kick        chan struct{} // wakes the unseal loop
	servers     []*http.Server
	listeners   []listenerutil.Listener
	certs       []listenerutil.ReloadableCertGetter // TLS listeners' certificates, for Reload
	apiAddr     string
	clusterAddr string
	started     time.Time

	// The core's reload functions: each file audit device it set up
	// registers one ("audit_file|<path>") that reopens its file.
	reloadFuncs     *map[string][]reloadutil.ReloadFunc
	reloadFuncsLock *sync.RWMutex

	initMu          sync.Mutex   // one init at a time
	initRunning     atomic.Bool  // an init holds initMu (its marker is not a leftover)
	unsealMu        sync.Mutex   // the seal keeper's unseal and an operator's sys/seal exclude each other
	gitlabBootstrap atomic.Value // string: how the GitLab bootstrap after init went

	ready       chan struct{}
	restart     chan struct{} // closed when a restart was asked for (restart.go)
	restartOnce sync.Once
	stopped     chan struct{}
	errc        chan error
	closeOnce   sync.Once
	closeErr    error
	bg          sync.WaitGroup
	bgCtx       context.Context // ends when Close begins
	bgCancel    context.CancelFunc
}

// ShutdownTimeout bounds how long Close waits for API requests in flight.
const ShutdownTimeout = 10 * time.Second

// ErrAlreadyInitialized refuses a second init.
var ErrAlreadyInitialized = errors.New("the cluster is already initialized")

// Start validates cfg, opens storage, builds the core and starts serving.
// If any step fails, Start undoes the steps before it and returns the error;
// a *ConfigError when cfg is invalid. The node starts sealed: unseal it with
// Unseal (or the API) once it is initialized.
func Start(ctx context.Context, cfg *config.Config) (a *Appliance, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var topo *geo.Topology
	if cfg.Geo != nil {
		topo = cfg.Geo.Validated() // read once, by Validate
		cfg = cfg.WithGeo(topo)
	}
	a = &Appliance{
		disk:    datadir.NewDiskGuard(cfg.DataDir),
		cfg:     cfg,
		started: time.Now(),
		ready:   make(chan struct{}),
		restart: make(chan struct{}),
		stopped: make(chan struct{}),
		errc:    make(chan error, 1),
		kick:    make(chan struct{}, 1),
	}
	// undo holds what to close if a later step fails. Its funcs must not
	// read a: the deferred func runs after `return nil, err` set it to nil.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			a = nil
		}
	}()

	out := cfg.LogOutput
	if out == nil {
		out = os.Stderr
	}
	a.logger = quietlog.New(hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:       "appliance",
		Level:      hclog.LevelFromString(cfg.LogLevel),
		Output:     out,
		JSONFormat: cfg.LogFormat == "json",
	}))
	// The leader watch sets Raft's timeouts to raft.heartbeat_timeout (validated).
	heartbeat, _ := time.ParseDuration(cfg.Raft.HeartbeatTimeout)
	a.leaders = raftx.NewLeaderWatch(raftx.TuneTimeouts(heartbeat, time.Duration(cfg.Raft.PerformanceMultiplier)*time.Second, a.logger))
	if ignored := scrubEnvironment(); len(ignored) > 0 {
		a.logger.Warn("ignoring OpenBao/Vault environment variables: the appliance takes its settings from its config file only",
			"variables", strings.Join(ignored, ","))
	}
	bao.QuietGRPC()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: cannot create %s: %w", cfg.DataDir, config.PathCause(err))
	}
	// One owner per data directory, before anything opens what is in it: a
	// second node on it is refused now, not after bbolt's lock timeout.
	if a.lock, err = datadir.Acquire(cfg.DataDir); err != nil {
		return nil, err
	}
	lock := a.lock
	undo = append(undo, func() { lock.Release() })
	// Every file OpenBao opens is verified first: a damaged one refuses
	// the start with its name and what to do, instead of a panic in
	// bbolt, and a missing one instead of a node that looks empty.
	if a.storage, err = datadir.StartCheck(cfg); err != nil {
		return nil, err
	}
	if a.storage != nil {
		lvl := hclog.Debug
		if a.storage.Elapsed > 2*time.Second {
			lvl = hclog.Info
		}
		a.logger.Log(lvl, "data dir verified", "vault_db", a.storage.VaultDetail(), "raft_db", a.storage.RaftDetail(), "elapsed", a.storage.Elapsed.Round(time.Millisecond))
	}

	// API listeners first: a port in use is the commonest failure and the
	// cheapest to find.
	raw := bao.ServerConfig(cfg, "", "")
	ui := &cli.BasicUi{Reader: strings.NewReader(""), Writer: io.Discard, ErrorWriter: io.Discard}
	for i, lc := range raw.Listeners {
		ln, _, certs, err := server.NewListener(lc, a.logger, io.Discard, ui)
		if err != nil {
			return nil, fmt.Errorf("listener[%d]: cannot listen on %s: %w", i, lc.Address, err)
		}
		if certs != nil {
			a.certs = append(a.certs, certs)
		}
		undo = append(undo, func() { ln.Close() })
		lc.MaxRequestSize = vaulthttp.DefaultMaxRequestSize
		// As newer OpenBao releases by default: sys/rekey/* is served by
		// the system backend only (and sys/rekey-recovery-key/* not at
		// all); httpapi's ceremonyGate wants a sudo token for what is left.
		lc.DisableUnauthedRekeyEndpoints = true
		lc.MaxRequestDuration = vault.DefaultMaxRequestDuration
		a.listeners = append(a.listeners, listenerutil.Listener{Listener: ln, Config: lc})
	}
	stopKeys, err := a.serveGitLabKeys()
	if err != nil {
		return nil, err
	}
	undo = append(undo, stopKeys)
	a.apiAddr = cfg.APIAddr
	if a.apiAddr == "" {
		// The configured host (a name for TLS) with the bound port (the
		// config may say 0).
		l := cfg.Listeners[0]
		host, _, _ := net.SplitHostPort(l.Address)
		_, port, _ := net.SplitHostPort(a.listeners[0].Listener.Addr().String())
		l.Address = net.JoinHostPort(host, port)
		a.apiAddr = l.URL()
	}
	clusterTCP, err := a.resolveClusterAddr()
	if err != nil {
		return nil, err
	}
	raw = bao.CoreConfig(cfg, a.apiAddr, a.clusterAddr, a.listeners) // now with the addresses and the bound listeners

	metrics, err := bao.SetupTelemetry(cfg.Telemetry, Version)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}

	backend, err := raft.NewRaftBackend(raw.Storage.Config, a.logger.Named("storage.raft"))
	if err != nil {
		return nil, fmt.Errorf("data_dir: cannot open Raft storage in %s: %w", cfg.DataDir, err)
	}
	a.raft = backend.(*raft.RaftBackend)
	var ok bool
	if a.raftH, ok = raftx.New(a.raft); !ok {
		a.raft.Close()
		return nil, errors.New("this build's OpenBao Raft backend is not the one the appliance was written for (physical/raft.RaftBackend fields raft, l): build with the pinned OpenBao version")
	}
	storage := a.raft
	undo = append(undo, func() { storage.Close() })
	// An init marker without Raft state is stale (its init wrote nothing,
	// or the operator removed the state): it goes before anything can
	// write, so that it never stands beside data an init did not write.
	if has, err := a.raft.HasState(); err == nil && !has {
		a.removeStaleInitMarker()
	}

	if err := a.newSeal(); err != nil {
		return nil, err
	}
	barrierSeal, err := vault.NewAutoSeal(vaultseal.NewAccess(a.seal))
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	a.barrier = barrierSeal
	multiSeal := a.seal
	undo = append(undo, func() { multiSeal.Finalize(context.Background()) })
	coreConfig := &vault.CoreConfig{
		RawConfig:          raw,
		Physical:           a.raft,
		HAPhysical:         a.raft,
		StorageType:        "raft",
		RedirectAddr:       a.apiAddr,
		ClusterAddr:        a.clusterAddr,
		Seal:               barrierSeal,
		AuditBackends:      bao.AuditBackends,
		LogicalBackends:    bao.LogicalBackends(),
		CredentialBackends: map[string]logical.Factory{},
		BuiltinRegistry:    bao.Registry{},
		Logger:             a.logger,
		LogLevel:           cfg.LogLevel,
		AllLoggers:         []hclog.Logger{a.logger},
		MetricsHelper:      metrics.Helper,
		MetricSink:         metrics.Sink,
		DisableSSCTokens:   true,
		// The Geo reconciler decides who votes; autopilot would promote
		// every healthy non-voter.
		DisableAutopilot: cfg.Geo != nil,
	}
	core, err := vault.NewCore(coreConfig)
	if err != nil {
		return nil, fmt.Errorf("cannot create the OpenBao core: %w", err)
	}
	a.core = core
	a.reloadFuncs, a.reloadFuncsLock = coreConfig.ReloadFuncs, coreConfig.ReloadFuncsLock
	undo = append(undo, func() { core.Shutdown() })

	core.SetClusterListenerAddrs([]*net.TCPAddr{clusterTCP})
	api := a.httpAPI()
	core.SetClusterHandler(api.Cluster()) // requests a standby forwards

	bgCtx, cancel := context.WithCancel(context.Background())
	a.bgCtx, a.bgCancel = bgCtx, cancel
	undo = append(undo, cancel)
	if len(cfg.Raft.RetryJoin) > 0 {
		if err := core.InitiateRetryJoin(bgCtx); err != nil {
			return nil, fmt.Errorf("raft.retry_join: %w", err)
		}
	}

	// Geo and the snapshot schedule before the API serves and the seal
	// keeper runs: both ask them.
	if cfg.Snapshot != nil {
		a.snaps = snapshot.NewSchedule(a.snapshotNode(), *cfg.Snapshot)
	}
	if topo != nil {
		if a.geo, err = newReconciler(a, cfg.Geo, topo); err != nil {
			return nil, err
		}
	}
	for _, ln := range a.listeners {
		srv := api.Server(ln, a.listeners)
		a.servers = append(a.servers, srv)
		a.bg.Add(1)
		go func(l net.Listener) {
			defer a.bg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.fail(fmt.Errorf("API listener %s: %w", l.Addr(), err))
			}
		}(ln.Listener)
	}
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		a.sealKeeper(bgCtx)
	}()
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		a.watchDisk(bgCtx)
	}()
	if a.snaps != nil {
		a.bg.Add(1)
		go func() {
			defer a.bg.Done()
			a.snaps.Run(bgCtx)
		}()
	}
	if a.geo != nil {
		a.bg.Add(1)
		go func() {
			defer a.bg.Done()
			a.geo.Run(bgCtx)
		}()
		a.bg.Add(1)
		go func() {
			defer a.bg.Done()
			a.geo.LeaseLoop(bgCtx)
		}()
	}
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		a.leaders.Run(bgCtx, a.raftH)
	}()
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		select {
		case <-core.ShutdownDone():
			a.fail(errors.New("the OpenBao core shut down"))
		case <-bgCtx.Done():
		}
	}()

	a.logger.Info("appliance started", "node_id", cfg.NodeID, "api_addr", a.apiAddr,
		"cluster_addr", a.clusterAddr, "data_dir", cfg.DataDir, "version", Version)
	close(a.ready)
	return a, nil
}

// resolveClusterAddr picks the cluster listen address (a free port if the
// config says port 0) and the advertised cluster URL. It binds the address
// once and lets it go: OpenBao opens the cluster listener only when the
// node becomes active, and a port in use then is only logged, leaving an
// active node that no other node can reach.
func (a *Appliance) resolveClusterAddr() (*net.TCPAddr, error) {
	listen := a.cfg.Cluster.Address
	l, err := net.Listen("tcp", listen)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("cluster.address %s is in use: %v; stop the process listening there, or set another cluster.address", listen, bindError(err))
	case err != nil:
		return nil, fmt.Errorf("cluster.address: cannot listen on %s: %v", listen, bindError(err))
	}
	if strings.HasSuffix(listen, ":0") {
		listen = l.Addr().String()
	}
	l.Close()
	tcp, err := net.ResolveTCPAddr("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("cluster.address: %w", err)
	}
	a.clusterAddr = a.cfg.ClusterAddr
	if a.clusterAddr == "" {
		a.clusterAddr = "https://" + config.Advertisable(listen)
	}
	return tcp, nil
}

// bindError is a listen error without the address, which the message
// around it names: "bind: address already in use".
func bindError(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// fail reports an error that stops the node from serving; the first wins.
func (a *Appliance) fail(err error) {
	select {
	case a.errc <- err:
	default:
	}
}

// Ready is closed once the API listeners serve (the node may be sealed).
func (a *Appliance) Ready() <-chan struct{} { return a.ready }

// Stopped is closed when Close has finished.
func (a *Appliance) Stopped() <-chan struct{} { return a.stopped }

// Err delivers a fatal error from a running node (a listener died, the core
// shut itself down). The caller should Close the node.
func (a *Appliance) Err() <-chan error { return a.errc }

// APIAddr is the URL of this node's API.
func (a *Appliance) APIAddr() string { return a.apiAddr }

// Close stops the node in the documented order. It is safe to call more
// than once and from several goroutines; all get the first call's result.
func (a *Appliance) Close() error {
	a.closeOnce.Do(func() {
		var errs []error
		if a.geo != nil && a.geo.FencedReason() != "" {
			// A fenced node's answers are not to be trusted: no drain.
			// The gate refuses everything already; what is in flight
			// loses its connection.
			a.logger.Info("stopping at once, fenced: closing the API listeners without draining")
			for _, s := range a.servers {
				s.Close()
			}
		} else {
			a.logger.Info("stopping: draining API requests")
			ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
			defer cancel()
			for _, s := range a.servers {
				if err := s.Shutdown(ctx); err != nil {
					errs = append(errs, fmt.Errorf("API listener: %w", err))
					s.Close()
				}
			}
		}
		a.bgCancel()
		a.logger.Info("stopping: sealing and shutting down the core")
		if err := a.core.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("core shutdown: %w", err))
		}
		a.bg.Wait()
		if err := a.seal.Finalize(context.Background()); err != nil {
			errs = append(errs, fmt.Errorf("closing the HSM session: %w", err))
		}
		if err := a.raft.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing Raft storage: %w", err))
		}
		if err := a.lock.Release(); err != nil {
			errs = append(errs, fmt.Errorf("releasing the data_dir lock: %w", err))
		}
		a.closeErr = errors.Join(errs...)
		a.logger.Info("stopped", "error", a.closeErr)
		close(a.stopped)
	})
	<-a.stopped
	return a.closeErr
}

// scrubEnvironment removes BAO_* and VAULT_* variables from this process's
// environment and returns their names. OpenBao's core reads many of them
// (raft path, node id, seal type, ...) and must not be reconfigured behind
// the config file's back. It runs in Start, not in the server command:
// Start is where OpenBao's Raft backend and core are built (the offline
// commands read the data dir's files themselves), so whoever calls it is
// covered, and the warning goes to the node's log in its format.
func scrubEnvironment() []string {
	var names []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "BAO_") || strings.HasPrefix(name, "VAULT_") {
			names = append(names, name)
			os.Unsetenv(name)
		}
	}
	return names
}
