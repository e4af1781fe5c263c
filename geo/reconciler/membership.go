package reconciler

import (
	"context"
	"errors"
	"fmt"

	hraft "github.com/hashicorp/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
)

// raftMembership is geo.Membership on this node's Raft (the active node).
// OpenBao's autopilot is off on geo nodes, so the RaftBackend methods make
// the raw Raft changes.
type raftMembership struct {
	g     *Reconciler
	peers map[string]client.PeerStatus
}

func (m *raftMembership) Servers(ctx context.Context) ([]geo.Server, error) {
	// The future is waited for outside the backend's lock: a leader
	// that was paused answers late, and nothing else may queue behind it.
	r := m.g.raftH.Current()
	if r == nil {
		return nil, errors.New("Raft is not running")
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	conf := f.Configuration()
	var out []geo.Server
	for _, s := range conf.Servers {
		gs := geo.Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == hraft.Voter}
		if gs.ID == m.g.nodeID {
			gs.Leader, gs.Healthy, gs.CaughtUp = true, true, true
		} else if ps, ok := m.peers[gs.ID]; ok {
			gs.Healthy = ps.Initialized && !ps.Sealed
			gs.CaughtUp = gs.Healthy && ps.Ready
		}
		out = append(out, gs)
	}
	return out, nil
}

func (m *raftMembership) Promote(ctx context.Context, id string) error {
	return m.g.raft.PromotePeer(ctx, id)
}

func (m *raftMembership) Demote(ctx context.Context, id string) error {
	return m.g.raft.DemotePeer(ctx, id)
}

func (m *raftMembership) Remove(ctx context.Context, id string) error {
	return m.g.raft.RemovePeer(ctx, id)
}

// TransferLeadership uses hashicorp/raft's targeted transfer: the leader
// brings id's log up to date, tells it to start an election at once
// (TimeoutNow) and steps down; OpenBao's core on the old leader then
// stands by and the new leader's core takes the HA lock.
func (m *raftMembership) TransferLeadership(ctx context.Context, id string) error {
	r := m.g.raftH.Current()
	if r == nil {
		return errors.New("Raft is not running")
	}
	var addr hraft.ServerAddress
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			addr = s.Address
		}
	}
	if addr == "" {
		return fmt.Errorf("%s is not in the Raft configuration", id)
	}
	done := make(chan error, 1)
	go func() { done <- r.LeadershipTransferToServer(hraft.ServerID(id), addr).Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
