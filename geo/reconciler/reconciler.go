// Package reconciler is a Geo node's runtime: the loop that follows the
// topology and gitlab-cluster.json and, on the active node, moves Raft
// membership and leadership one safe step at a time; the peers' polls;
// the Geo epochs, the fencing of a node a disaster promotion left behind
// and the epoch lease that keeps such a node from answering; the planned
// switchover's pre-flight and record. It reaches the node it runs in
// through Node and the node's Raft (Config); it never imports the
// appliance.
package reconciler

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
	baoraft "github.com/openbao/openbao/physical/raft"
	"github.com/openbao/openbao/sdk/v2/physical"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/raftx"
)

// Geo reconciler timing: how often a node looks at its files and, when
// active, at the cluster; how soon it looks again after taking a step;
// how long a peer has to answer the epoch checks (short: they keep the
// lease, see lease.go) and the reconciler (longer: a starved peer
// that answers in 1.5 s is slow, not gone, and the reconciler's view of
// it must say so); how long a node must have been ready, at every poll,
// before leadership is handed to it.
const (
	geoTick       = time.Second
	geoAfterStep  = 200 * time.Millisecond
	geoPeerWait   = 800 * time.Millisecond
	PollWait      = 2 * time.Second
	geoStepWait   = 15 * time.Second
	geoSettleTime = 5 * time.Second
)

// geoOverrideKey holds the geo.Override in Raft (outside the barrier: it
// is no secret, and every node reads it from its own FSM).
const geoOverrideKey = "appliance/geo/primary"

// Node is what the reconciler needs of the node it runs in, besides its
// Raft (Config): its core, its readiness, its leader watch, and a way to
// stop it.
type Node interface {
	// Sealed: the node's core is sealed.
	Sealed() bool
	// Initialized: the node's core is initialized.
	Initialized(ctx context.Context) (bool, error)
	// CoreActive: the node's core is the active one (OpenBao's HA lock).
	CoreActive() bool
	// Readiness is whether the node is ready and, if not, why.
	Readiness() (ready bool, reason string)
	// LeaderChanged is closed at the next change of Raft's state or
	// leader.
	LeaderChanged() <-chan struct{}
	// LeaderConfirmed: a quorum confirmed this node's leadership within
	// its lease (the leader watch asks Raft's VerifyLeader, as readiness
	// does).
	LeaderConfirmed() bool
	// Fail stops the node with err.
	Fail(err error)
}

// Config is what a Reconciler is built from: the node's identity, its
// geo block and the topology it validated, its logger and its Raft.
type Config struct {
	NodeID   string
	DataDir  string
	Geo      *config.Geo
	Topology *geo.Topology
	Logger   hclog.Logger
	// Raft is the node's Raft backend (the override and the epoch are
	// raw keys in it, outside the barrier; membership changes go through
	// it) and RaftH the hashicorp/raft instance inside it.
	Raft  *baoraft.RaftBackend
	RaftH *raftx.Handle
}

// Reconciler is a node's Geo state: the topology it follows (the last one
// that validated), its gitlab-cluster.json, and on the active node the
// reconciler's view.
type Reconciler struct {
	node    Node
	nodeID  string
	dataDir string
	logger  hclog.Logger
	raft    *baoraft.RaftBackend
	raftH   *raftx.Handle
	client  *http.Client

	mu          sync.Mutex
	cfg         *config.Geo
	topo        *geo.Topology
	topoErr     string
	topoStamp   fileStamp
	role        geo.Role
	roleAt      time.Time
	roleErr     string
	roleStamp   fileStamp
	primary     geo.Resolution
	plan        geo.Plan
	decision    string
	lastStep    *client.GeoStepEntry
	nodes       []client.GeoNodeView
	peerContact map[string]time.Time
	// readySince is, per node, when the active node's polls began to find
	// it ready without a break (see settled).
	readySince map[string]time.Time

	// The epoch (see epoch.go): this node's (its file's), why it is
	// fenced ("" if not), and whether it has looked at its peers' epochs
	// yet.
	localEpoch   geo.Epoch
	fenced       string
	fenceChecked bool
	// lease is the epoch lease (lease.go).
	lease epochLease
}

// fileStamp tells a changed file from an unchanged one without reading it.
type fileStamp struct {
	mod  time.Time
	size int64
	ok   bool
}

func stampOf(path string) fileStamp {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mod: st.ModTime(), size: st.Size(), ok: true}
}

// New builds the reconciler of node from c; Run and LeaseLoop start it.
func New(c Config, node Node) (*Reconciler, error) {
	cfg, topo := c.Geo, c.Topology
	hc, err := PeerClient(cfg)
	if err != nil {
		return nil, err
	}
	epoch, err := datadir.ReadEpochFile(c.DataDir)
	if err != nil {
		return nil, err
	}
	g := &Reconciler{
		node:        node,
		nodeID:      c.NodeID,
		dataDir:     c.DataDir,
		logger:      c.Logger,
		raft:        c.Raft,
		raftH:       c.RaftH,
		client:      hc,
		cfg:         cfg,
		topo:        topo,
		peerContact: map[string]time.Time{},
		readySince:  map[string]time.Time{},
		localEpoch:  epoch,
	}
	if cfg.TopologyFile != "" {
		g.topoStamp = stampOf(cfg.TopologyFile)
	}
	g.readClusterFile()
	g.primary = geo.Resolve(topo, nil, nil)
	g.plan, _ = geo.PlanFor(g.primary.Topology)
	g.decision = "starting"
	return g, nil
}

// Reload takes a geo block from a reloaded config (SIGHUP).
func (g *Reconciler) Reload(cfg *config.Geo) {
	g.mu.Lock()
	g.cfg = cfg
	g.topoStamp = fileStamp{} // read it again
	g.mu.Unlock()
	g.refreshTopology(true)
}

// refreshTopology re-reads the topology when its file changed (or when
// forced). One that does not validate is refused with its problems, and
// the node runs on the one it had.
func (g *Reconciler) refreshTopology(force bool) {
	g.mu.Lock()
	cfg := g.cfg
	stamp := fileStamp{}
	if cfg.TopologyFile != "" {
		stamp = stampOf(cfg.TopologyFile)
		if !force && stamp == g.topoStamp {
			g.mu.Unlock()
			return
		}
	} else if !force {
		g.mu.Unlock()
		return
	}
	g.topoStamp = stamp
	g.mu.Unlock()

	t, err := cfg.Topology()
	if err == nil {
		if _, _, ok := t.SiteOf(g.nodeID); !ok {
			err = fmt.Errorf("node_id %s is not a node of it", g.nodeID)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		g.topoErr = err.Error()
		g.logger.Error("geo: the new topology is refused; running on the previous one", "error", err)
		return
	}
	g.topoErr = ""
	g.topo = t
	g.logger.Info("geo: topology loaded", "primary_site", t.Primary().Name, "sites", len(t.Sites))
}

func (g *Reconciler) readClusterFile() {
	path := g.cfg.ClusterFile
	stamp := stampOf(path)
	if stamp == g.roleStamp {
		return
	}
	g.roleStamp = stamp
	if !stamp.ok {
		g.role, g.roleAt, g.roleErr = geo.RoleUnknown, time.Time{}, ""
		return
	}
	src, err := os.ReadFile(path)
	if err == nil {
		g.role, err = geo.ParseClusterFile(src)
	}
	if err != nil {
		g.role, g.roleErr = geo.RoleUnknown, fmt.Sprintf("%s: %v", path, err)
		g.logger.Error("geo: cannot read gitlab-cluster.json; it says nothing until fixed", "file", path, "error", err)
		return
	}
	g.roleAt, g.roleErr = stamp.mod, ""
	g.logger.Info("geo: gitlab-cluster.json read", "file", path, "role", g.role)
}

// Run is the reconciler's loop; it acts only while this node is active.
func (g *Reconciler) Run(ctx context.Context) {
	wait := geoTick
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-g.node.LeaderChanged():
			// At once: a leader that stepped down because a node answered
			// with a far higher term (a promoted site's, see termJump)
			// learns of the newer epoch before it can be elected again.
		}
		wait = geoTick
		g.refreshTopology(false)
		g.mu.Lock()
		g.readClusterFile()
		topo := g.topo
		g.mu.Unlock()
		peers := g.pollPeers(ctx, topo, PollWait)
		g.checkFence(ctx, peers)
		g.fenceRunning()
		active := g.Active()
		if !g.node.Sealed() {
			g.syncEpoch(ctx, active, peers)
		}
		if took := g.reconcile(ctx, active, peers); took {
			wait = geoAfterStep
		}
	}
}

// Active: this node's core is active and its Raft leads.
func (g *Reconciler) Active() bool {
	if !g.node.CoreActive() {
		return false
	}
	leads := false
	g.raftH.With(func(r *hraft.Raft) { leads = r.State() == hraft.Leader })
	return leads
}

// reconcile runs one round on the active node: poll the topology's nodes,
// settle the primary, plan, take the next step. It reports whether it took
// one.
func (g *Reconciler) reconcile(ctx context.Context, active bool, peers map[string]client.PeerStatus) bool {
	if !active {
		// The primary as the replicated override and this node's
		// topology say (the active node also weighs the claims).
		last, _ := g.readOverride(ctx)
		g.mu.Lock()
		g.primary = geo.Resolve(g.topo, last, nil)
		g.primary.Persist = nil
		g.plan, _ = geo.PlanFor(g.primary.Topology)
		g.decision = "standby: the active node reconciles"
		g.nodes = nil
		g.mu.Unlock()
		return false
	}
	g.mu.Lock()
	topo := g.topo
	claims := []geo.Claim{{Node: g.nodeID, Role: g.role, At: g.roleAt}}
	g.mu.Unlock()

	for id, p := range peers {
		claims = append(claims, geo.Claim{Node: id, Role: p.ClusterRole, At: p.ClusterAt})
	}
	last, err := g.readOverride(ctx)
	if err != nil {
		g.setDecision("cannot read the primary override: " + err.Error())
		return false
	}
	// A disaster promotion newer than the override made its site the
	// primary, until the topology names another.
	if ep := g.epoch(ctx); ep.Site != "" && (last == nil || last.At.Before(ep.At)) {
		o := &geo.Override{Site: ep.Site, TopologyPrimary: topo.Primary().Name, Source: fmt.Sprintf("geo promote --force (epoch %d)", ep.Number), At: ep.At}
		if err := g.writeOverride(ctx, o); err != nil {
			g.setDecision("cannot record the promoted primary: " + err.Error())
			return false
		}
		g.logger.Info("geo: the primary site is the promoted one", "site", ep.Site, "epoch", ep.Number)
		last = o
	}
	res := geo.Resolve(topo, last, claims)
	if res.Persist != nil {
		if err := g.writeOverride(ctx, res.Persist); err != nil {
			g.setDecision("cannot record the new primary: " + err.Error())
			return false
		}
		if res.Persist.Lapsed {
			g.logger.Info("geo: the primary override lapsed: the topology names another primary", "override", res.Persist.Site, "topology_primary", topo.Primary().Name)
		} else {
			g.logger.Info("geo: the primary site moves", "site", res.Persist.Site, "source", res.Persist.Source)
		}
	}
	plan, err := geo.PlanFor(res.Topology)
	if err != nil {
		g.setDecision("cannot plan: " + err.Error())
		return false
	}
	m := &raftMembership{g: g, peers: peers}
	live, err := m.Servers(ctx)
	if err != nil {
		g.setDecision("cannot read the Raft configuration: " + err.Error())
		return false
	}
	d := geo.Next(plan, live)
	now := time.Now()
	g.mu.Lock()
	g.primary, g.plan = res, plan
	g.nodes = g.view(plan, live, peers)
	trackReady(g.readySince, live, now)
	if d.Step != nil && d.Step.Action == geo.Transfer {
		if ok, why := settled(g.readySince, d.Step.ID, now); !ok {
			d = geo.Decision{Waiting: []string{fmt.Sprintf("%s (%s)", why, d.Step.Why)}}
		}
	}
	prev := g.decision
	g.decision = d.Describe()
	g.mu.Unlock()
	if d.Step == nil {
		if g.decision != prev && d.Converged {
			g.logger.Info("geo: converged", "primary_site", plan.Primary, "voters", fmt.Sprint(plan.Voters()))
		}
		return false
	}
	// A leader that was paused or cut off may not know yet that it was
	// replaced: a quorum confirms its leadership before it changes anything.
	if !g.node.LeaderConfirmed() {
		g.setDecision("waiting: a quorum has not confirmed this node's leadership")
		return false
	}
	g.logger.Info("geo: "+string(d.Step.Action), "node", d.Step.ID, "why", d.Step.Why)
	sctx, cancel := context.WithTimeout(ctx, geoStepWait)
	err = geo.Apply(sctx, m, *d.Step)
	cancel()
	entry := &client.GeoStepEntry{Step: *d.Step, At: time.Now().UTC()}
	if err != nil {
		entry.Error = err.Error()
		g.logger.Error("geo: step failed; the next round decides again", "step", d.Step.String(), "error", err)
	}
	g.mu.Lock()
	g.lastStep = entry
	g.mu.Unlock()
	return err == nil
}

func (g *Reconciler) setDecision(s string) {
	g.mu.Lock()
	g.decision = s
	g.mu.Unlock()
}

func (g *Reconciler) readOverride(ctx context.Context) (*geo.Override, error) {
	e, err := g.raft.Get(ctx, geoOverrideKey)
	if err != nil || e == nil {
		return nil, err
	}
	var o geo.Override
	if err := json.Unmarshal(e.Value, &o); err != nil {
		return nil, fmt.Errorf("%s holds no override: %w", geoOverrideKey, err)
	}
	return &o, nil
}

func (g *Reconciler) writeOverride(ctx context.Context, o *geo.Override) error {
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return g.raft.Put(ctx, &physical.Entry{Key: geoOverrideKey, Value: b})
}
