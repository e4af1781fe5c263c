package geo

import (
	"fmt"
	"strings"
)

// Member is one node's place in the plan.
type Member struct {
	ID          string `json:"id"`
	Site        string `json:"site"`
	APIAddr     string `json:"api_addr"`
	ClusterAddr string `json:"cluster_addr"`
	Voter       bool   `json:"voter"`
	// Why says why the node votes or not, for status.
	Why string `json:"why"`
}

// Plan is the membership a topology asks for.
type Plan struct {
	// Primary is the primary site's name.
	Primary string `json:"primary_site"`
	// Leader is the node that should lead (the primary site's preferred
	// leader), or "" when any primary-site voter may.
	Leader string `json:"preferred_leader,omitempty"`
	// Members lists every node in topology order.
	Members []Member `json:"members"`
	// Notes say what the plan costs (cross-site voters) or risks (a
	// voter count that tolerates no failure).
	Notes []string `json:"notes,omitempty"`
}

// Member returns the plan's member id.
func (p Plan) Member(id string) (Member, bool) {
	for _, m := range p.Members {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// Voters lists the ids of the planned voters, in topology order.
func (p Plan) Voters() []string {
	var out []string
	for _, m := range p.Members {
		if m.Voter {
			out = append(out, m.ID)
		}
	}
	return out
}

// RetryJoin lists the API addresses a node joins through: the primary
// site's nodes first, then the others in topology order, never the node
// itself.
func (p Plan) RetryJoin(self string) []string {
	var first, rest []string
	for _, m := range p.Members {
		switch {
		case m.ID == self:
		case m.Site == p.Primary:
			first = append(first, m.APIAddr)
		default:
			rest = append(rest, m.APIAddr)
		}
	}
	return append(first, rest...)
}

// PlanFor turns a topology into the membership it asks for. Primary-site
// nodes vote; when they are an even number, one of them does not (the
// last in file order that is not the preferred leader), since an even
// count tolerates no more failures than one fewer and needs a larger
// quorum. Secondary-site nodes are non-voting replicas, so no commit
// waits for another site, unless min_voters asks for more voters than the
// primary site has: then the nearest secondary nodes (sites and nodes in
// file order) vote too.
func PlanFor(t *Topology) (Plan, error) {
	if err := t.Validate(); err != nil {
		return Plan{}, err
	}
	primary := t.Primary()
	p := Plan{Primary: primary.Name, Leader: primary.PreferredLeader}
	voter := map[string]string{} // id -> why it votes

	var order []string // the voters, primary site first, then those borrowed
	for _, n := range primary.Nodes {
		voter[n.ID] = "a node of the primary site " + primary.Name
		order = append(order, n.ID)
	}
	borrowedSite := map[string]string{}
	if len(primary.Nodes) < t.MinVoters {
		for _, s := range t.Sites {
			for _, n := range s.Nodes {
				if s.Primary || len(order) == t.MinVoters {
					continue
				}
				voter[n.ID] = fmt.Sprintf("min_voters %d: the primary site %s has only %d node(s)", t.MinVoters, primary.Name, len(primary.Nodes))
				borrowedSite[n.ID] = s.Name
				order = append(order, n.ID)
			}
		}
	}
	// An even count: one fewer voter, the last of them that is not the
	// preferred leader (a borrowed secondary node before a primary one).
	var dropped, droppedWhy string
	if len(order)%2 == 0 {
		for i := len(order) - 1; i >= 0; i-- {
			if order[i] != primary.PreferredLeader {
				dropped = order[i]
				order = append(order[:i], order[i+1:]...)
				break
			}
		}
		droppedWhy = fmt.Sprintf("one of %d would-be voters does not vote: %d voters survive as many failures as %d", len(order)+1, len(order)+1, len(order))
		delete(voter, dropped)
	}
	var borrowed []string
	for _, id := range order {
		if site, ok := borrowedSite[id]; ok {
			borrowed = append(borrowed, id+" ("+site+")")
		}
	}
	for _, s := range t.Sites {
		for _, n := range s.Nodes {
			m := Member{ID: n.ID, Site: s.Name, APIAddr: n.APIAddr, ClusterAddr: n.ClusterAddr}
			why, ok := voter[n.ID]
			switch {
			case ok:
				m.Voter, m.Why = true, why
			case n.ID == dropped:
				m.Why = droppedWhy
			default:
				m.Why = "a replica in the secondary site " + s.Name + ": no commit waits for it"
			}
			p.Members = append(p.Members, m)
		}
	}
	if len(borrowed) > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("min_voters %d: %s vote beside the primary site %s, so every commit waits for a round trip to another site (cross-site commit latency)",
			t.MinVoters, strings.Join(borrowed, ", "), primary.Name))
	}
	if len(order) == 1 {
		p.Notes = append(p.Notes, "1 voter: losing it stops writes until it returns or another site is promoted; 3 voters survive one failure (min_voters 3)")
	}
	return p, nil
}
