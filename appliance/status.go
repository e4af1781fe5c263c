package appliance

import (
	"context"
	"errors"
	"time"

	"github.com/openbao/openbao/physical/raft"
)

// States a node is in, as Status reports them.
const (
	StateUninitialized = "uninitialized" // no cluster yet: run init (or join)
	StateSealed        = "sealed"        // waiting for unseal shares
	StateStandby       = "standby"       // unsealed, following the active node
	StateActive        = "active"        // unsealed, serving as the active node
	StateUnsealing     = "unsealing"     // unsealed, HA role not settled yet
)

// Status is a node's state as `status --format json` prints it. It holds
// no secret and is served without authentication, like sys/seal-status.
type Status struct {
	NodeID         string     `json:"node_id"`
	Version        string     `json:"version"`
	OpenBaoVersion string     `json:"openbao_version"`
	State          string     `json:"state"`
	Initialized    bool       `json:"initialized"`
	Sealed         bool       `json:"sealed"`
	APIAddr        string     `json:"api_addr"`
	ClusterAddr    string     `json:"cluster_addr"`
	LeaderAPIAddr  string     `json:"leader_api_addr,omitempty"`
	Raft           RaftStatus `json:"raft"`
	Seal           SealStatus `json:"seal"`
	UptimeSeconds  int64      `json:"uptime_seconds"`
}

// RaftStatus is this node's view of integrated storage.
type RaftStatus struct {
	AppliedIndex uint64 `json:"applied_index"`
	Voter        bool   `json:"voter"`
	Peers        int    `json:"peers"` // members in this node's Raft configuration
}

// SealStatus lists the mechanisms that can recover the root key.
type SealStatus struct {
	Mechanisms []Mechanism `json:"mechanisms"`
}

// Mechanism is one way to unseal and its state now.
type Mechanism struct {
	Type      string `json:"type"`
	Threshold int    `json:"threshold,omitempty"`
	Shares    int    `json:"shares,omitempty"`
	Progress  int    `json:"progress"`
	LastUsed  bool   `json:"last_used"`
}

// Status reports the node's state. It never blocks on the active node.
func (a *Appliance) Status(ctx context.Context) Status {
	st := Status{
		NodeID:         a.cfg.NodeID,
		Version:        Version,
		OpenBaoVersion: OpenBaoVersion,
		APIAddr:        a.apiAddr,
		ClusterAddr:    a.clusterAddr,
		Sealed:         a.core.Sealed(),
		UptimeSeconds:  int64(time.Since(a.started).Seconds()),
	}
	st.Initialized, _ = a.core.Initialized(ctx)
	st.Raft.AppliedIndex = a.raft.AppliedIndex()
	if conf, err := a.raftConfiguration(ctx); err == nil {
		for _, s := range conf.Servers {
			if s.NodeID == a.cfg.NodeID {
				st.Raft.Voter = s.Voter
			}
		}
		st.Raft.Peers = len(conf.Servers)
	}
	shamir := Mechanism{Type: "shamir"}
	if conf, err := a.core.SealAccess().BarrierConfig(ctx); err == nil && conf != nil {
		shamir.Threshold, shamir.Shares = conf.SecretThreshold, conf.SecretShares
	}
	if st.Sealed {
		shamir.Progress, _ = a.core.SecretProgress(true)
	} else {
		shamir.LastUsed = true
	}
	st.Seal.Mechanisms = []Mechanism{shamir}

	switch {
	case !st.Initialized:
		st.State = StateUninitialized
	case st.Sealed:
		st.State = StateSealed
	default:
		isLeader, leader, _, err := a.core.Leader()
		switch {
		case err == nil && isLeader:
			st.State = StateActive
		case err == nil && leader != "":
			st.State = StateStandby
		default:
			st.State = StateUnsealing
		}
		st.LeaderAPIAddr = leader
	}
	return st
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
