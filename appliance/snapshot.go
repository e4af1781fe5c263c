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
	if a.core.Sealed() {
		return false
	}
	isLeader, _, _, err := a.core.Leader()
	if err != nil || !isLeader {
		return false
	}
	ok, _ := a.leaders.ConfirmedWithin(a.leaseDuration())
	return ok
}
