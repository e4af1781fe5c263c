package appliance

import (
	"context"
	"errors"
	"fmt"
	"time"

	hraft "github.com/hashicorp/raft"
	"github.com/openbao/openbao/physical/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/fips"
)

// Status reports the node's state, probing the HSM (briefly) if this node
// has one. It never blocks on the active node.
func (a *Appliance) Status(ctx context.Context) client.Status {
	st := client.Status{
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
	st.Disk = a.disk.Status()
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
		st.Snapshots = a.snaps.Status()
	}
	if a.geo != nil {
		st.Geo = a.geo.Status()
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
		return client.StateUninitialized, ""
	case a.core.Sealed():
		return client.StateSealed, ""
	}
	isLeader, leader, _, err := a.core.Leader()
	switch {
	case err == nil && isLeader:
		return client.StateActive, leader
	case err == nil && leader != "":
		return client.StateStandby, leader
	default:
		return client.StateUnsealing, leader
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
