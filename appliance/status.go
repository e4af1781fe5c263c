package appliance

import (
	"context"
	"errors"
	"fmt"
	"time"

	hraft "github.com/hashicorp/raft"
	"github.com/openbao/openbao/physical/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/fips"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// States a node is in, as Status reports them.
const (
	StateUninitialized = "uninitialized" // no cluster yet: run init (or join)
	StateSealed        = "sealed"        // waiting for the HSM or unseal shares
	StateStandby       = "standby"       // unsealed, following the active node
	StateActive        = "active"        // unsealed, serving as the active node
	StateUnsealing     = "unsealing"     // unsealed, HA role not settled yet
)

// Status is a node's state as `status --format json` prints it. It holds
// no secret and is served without authentication, like sys/seal-status.
type Status struct {
	NodeID         string `json:"node_id"`
	Version        string `json:"version"`
	OpenBaoVersion string `json:"openbao_version"`
	State          string `json:"state"`
	// Ready: the node answers API requests now (see Readiness); NotReady
	// says what it waits for.
	Ready         bool        `json:"ready"`
	NotReady      string      `json:"not_ready,omitempty"`
	Initialized   bool        `json:"initialized"`
	Sealed        bool        `json:"sealed"`
	APIAddr       string      `json:"api_addr"`
	ClusterAddr   string      `json:"cluster_addr"`
	LeaderAPIAddr string      `json:"leader_api_addr,omitempty"`
	Raft          RaftStatus  `json:"raft"`
	Seal          seal.Status `json:"seal"`
	// SealChange is the seal change in progress on this node, if any (no
	// shares in it).
	SealChange *seal.ChangeStatus `json:"seal_change,omitempty"`
	// GitLabBootstrap is how the GitLab bootstrap after init went on this
	// node: running, applied, or why not.
	GitLabBootstrap string `json:"gitlab_bootstrap,omitempty"`
	// InitInterrupted says what to do on a node whose first init stopped
	// before it answered (the node may read initialized or not).
	InitInterrupted string `json:"init_interrupted,omitempty"`
	// Disk is the data dir's free space; writes are refused while it is low.
	Disk          DiskStatus `json:"disk"`
	UptimeSeconds int64      `json:"uptime_seconds"`
	// StartedAt is when this process started: a restart changes it.
	StartedAt time.Time `json:"started_at"`
	// FIPS is whether the node's cryptography runs in FIPS 140-3 mode.
	FIPS bool `json:"fips"`
	// Geo is the topology this node follows and, on the active node, the
	// reconciler's view of every node (with a geo block only).
	Geo *GeoStatus `json:"geo,omitempty"`
	// Snapshots is the snapshot schedule's last results (with a snapshot
	// block only).
	Snapshots *SnapshotStatus `json:"snapshots,omitempty"`
}

// RaftStatus is this node's view of integrated storage.
type RaftStatus struct {
	AppliedIndex uint64 `json:"applied_index"`
	// CommitIndex is the last entry this node knows committed (on a
	// follower: what its leader told it); Leader is Raft's leader.
	CommitIndex uint64 `json:"commit_index"`
	Leader      string `json:"leader,omitempty"`
	// HeartbeatTimeout is the one Raft runs with now (see
	// raft.heartbeat_timeout).
	HeartbeatTimeout string `json:"heartbeat_timeout,omitempty"`
	Voter            bool   `json:"voter"`
	Peers            int    `json:"peers"` // members in this node's Raft configuration
}

// Status reports the node's state, probing the HSM (briefly) if this node
// has one. It never blocks on the active node.
func (a *Appliance) Status(ctx context.Context) Status {
	st := Status{
		NodeID:         a.cfg.NodeID,
		Version:        Version,
		OpenBaoVersion: OpenBaoVersion,
		APIAddr:        a.apiAddr,
		ClusterAddr:    a.clusterAddr,
		Sealed:         a.core.Sealed(),
		UptimeSeconds:  int64(time.Since(a.started).Seconds()),
		StartedAt:      a.started.UTC(),
		Seal:           a.seal.Status(ctx, a.cfg.Seal.Shamir != nil),
		SealChange:     a.seal.PendingChange(),
		FIPS:           fips.Enabled(),
	}
	st.GitLabBootstrap, _ = a.gitlabBootstrap.Load().(string)
	st.Disk = a.disk.status()
	st.Seal.KeyMissing = !st.Sealed && st.Seal.Generation != 0 && !a.seal.HasCurrentKey(ctx)
	st.Initialized, _ = a.core.Initialized(ctx)
	if err := a.interruptedInit(); err != nil {
		st.InitInterrupted = err.Error()
	}
	st.Raft.AppliedIndex = a.raft.AppliedIndex()
	a.raftH.With(func(r *hraft.Raft) {
		st.Raft.CommitIndex = r.CommitIndex()
		st.Raft.HeartbeatTimeout = r.ReloadableConfig().HeartbeatTimeout.String()
		addr, id := r.LeaderWithID()
		if id != "" {
			st.Raft.Leader = fmt.Sprintf("%s (%s)", id, addr)
		}
	})
	rd := a.readiness()
	st.Ready, st.NotReady = rd.Ready, rd.Reason
	if conf, err := a.raftConfiguration(ctx); err == nil {
		for _, s := range conf.Servers {
			if s.NodeID == a.cfg.NodeID {
				st.Raft.Voter = s.Voter
			}
		}
		st.Raft.Peers = len(conf.Servers)
	}
	st.State, st.LeaderAPIAddr = a.stateAndLeader(ctx, st.Initialized)
	if a.snaps != nil {
		st.Snapshots = a.snaps.status()
	}
	if a.geo != nil {
		st.Geo = a.geo.status()
	}
	return st
}

// state is the node's state alone, without probing anything.
func (a *Appliance) state() string {
	inited, _ := a.core.Initialized(context.Background())
	s, _ := a.stateAndLeader(context.Background(), inited)
	return s
}

func (a *Appliance) stateAndLeader(ctx context.Context, initialized bool) (string, string) {
	switch {
	case !initialized:
		return StateUninitialized, ""
	case a.core.Sealed():
		return StateSealed, ""
	}
	isLeader, leader, _, err := a.core.Leader()
	switch {
	case err == nil && isLeader:
		return StateActive, leader
	case err == nil && leader != "":
		return StateStandby, leader
	default:
		return StateUnsealing, leader
	}
}

// raftConfiguration reads the Raft membership from the running Raft
// library, or from the FSM's last state while Raft is stopped (sealed).
func (a *Appliance) raftConfiguration(ctx context.Context) (*raft.RaftConfigurationResponse, error) {
	if conf, err := a.raft.GetConfiguration(ctx); err == nil {
		return conf, nil
	}
	conf, err := a.raft.GetConfigurationOffline()
	if err == nil && conf == nil {
		err = errors.New("no Raft state yet")
	}
	return conf, err
}
