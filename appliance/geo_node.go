package appliance

import (
	"context"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo/reconciler"
)

// newReconciler builds a's Geo reconciler on the topology Start validated.
func newReconciler(a *Appliance, cfg *config.Geo, topo *geo.Topology) (*reconciler.Reconciler, error) {
	return reconciler.New(reconciler.Config{
		NodeID:   a.cfg.NodeID,
		DataDir:  a.cfg.DataDir,
		Geo:      cfg,
		Topology: topo,
		Logger:   a.logger,
		Raft:     a.raft,
		RaftH:    a.raftH,
	}, geoNode{a})
}

// geoNode is the appliance as the reconciler's Node.
type geoNode struct{ a *Appliance }

func (n geoNode) Sealed() bool { return n.a.core.Sealed() }

func (n geoNode) Initialized(ctx context.Context) (bool, error) { return n.a.core.Initialized(ctx) }

func (n geoNode) CoreActive() bool { return n.a.coreActive() }

func (n geoNode) Readiness() (bool, string) {
	rd := n.a.readiness()
	return rd.Ready, rd.Reason
}

func (n geoNode) LeaderChanged() <-chan struct{} { return n.a.leaders.Changed() }

func (n geoNode) LeaderConfirmed() bool { return n.a.leaderConfirmed() }

func (n geoNode) Fail(err error) { n.a.fail(err) }
