package reconciler

// What a node says of its Geo state (GET /appliance/v1/geo/status).

import (
	"time"

	hraft "github.com/hashicorp/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
)

// view joins the plan, the Raft configuration and the peers' answers.
func (g *Reconciler) view(p geo.Plan, live []geo.Server, peers map[string]client.PeerStatus) []client.GeoNodeView {
	byID := map[string]geo.Server{}
	for _, s := range live {
		byID[s.ID] = s
	}
	commit := uint64(0)
	g.raftH.With(func(r *hraft.Raft) { commit = r.CommitIndex() })
	var out []client.GeoNodeView
	for _, m := range p.Members {
		v := client.GeoNodeView{ID: m.ID, Site: m.Site, APIAddr: m.APIAddr, DesiredVoter: m.Voter, Why: m.Why}
		if s, ok := byID[m.ID]; ok {
			v.InRaft, v.Voter, v.Leader = true, s.Voter, s.Leader
		}
		if m.ID == g.nodeID {
			v.Reachable, v.Ready, v.AppliedIndex, v.Epoch = true, true, g.raft.AppliedIndex(), g.localEpoch.Number
		} else if ps, ok := peers[m.ID]; ok {
			v.Reachable, v.Sealed, v.Ready, v.NotReady, v.AppliedIndex, v.Epoch = true, ps.Sealed, ps.Ready, ps.NotReady, ps.AppliedIndex, ps.Epoch.Number
		}
		if v.Reachable && commit > v.AppliedIndex {
			v.Lag = commit - v.AppliedIndex
		}
		if at, ok := g.peerContact[m.ID]; ok && m.ID != g.nodeID {
			v.LastContact = time.Since(at).Round(time.Millisecond).String()
		}
		out = append(out, v)
	}
	return out
}

// Status is the node's GeoStatus.
func (g *Reconciler) Status() *client.GeoStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	site, _, _ := g.topo.SiteOf(g.nodeID)
	st := &client.GeoStatus{
		Site:             site.Name,
		PrimarySite:      g.primary.Topology.Primary().Name,
		PrimarySource:    g.primary.Source,
		TopologyError:    g.topoErr,
		ClusterFileRole:  g.role.String(),
		ClusterFileError: g.roleErr,
		Epoch:            g.localEpoch,
		RPO:              g.localEpoch.RPO(),
		Fenced:           g.fenced,
		Reconciler:       g.decision,
		LastStep:         g.lastStep,
		Nodes:            g.nodes,
	}
	st.Notes = append(append(st.Notes, g.plan.Notes...), g.primary.Notes...)
	return st
}
