package appliance

import (
	"io"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/snapshot"
)

// snapshotNode is what the snapshot schedule needs of this node.
func (a *Appliance) snapshotNode() snapshot.Node {
	return snapshot.Node{
		Active: a.snapshotActive,
		Save: func(w io.Writer) error {
			return a.raft.Snapshot(w, a.barrier.GetAccess())
		},
		DataDir: a.cfg.DataDir,
		MinFree: a.disk.MinFree,
		Logger:  a.logger,
	}
}

// snapshotActive: the active node, with its leadership confirmed by a
// quorum.
func (a *Appliance) snapshotActive() bool {
	return !a.core.Sealed() && a.coreActive() && a.leaderConfirmed()
}

// coreActive: this node's core holds OpenBao's HA lock.
func (a *Appliance) coreActive() bool {
	isLeader, _, _, err := a.core.Leader()
	return err == nil && isLeader
}

// leaderConfirmed: a quorum confirmed this node's leadership within its
// lease.
func (a *Appliance) leaderConfirmed() bool {
	ok, _ := a.leaders.ConfirmedWithin(a.leaseDuration())
	return ok
}
