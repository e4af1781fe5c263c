package geo

import (
	"context"
	"fmt"
	"strings"
)

// Server is one member of the live Raft configuration as the active node
// sees it.
type Server struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
	Leader  bool   `json:"leader"`
	// Healthy: the node answers, is unsealed and in touch with the leader.
	Healthy bool `json:"healthy"`
	// CaughtUp: its applied index is within a small lag of the leader's
	// commit index (the leader always is).
	CaughtUp bool `json:"caught_up"`
}

// Membership is what the reconciler needs from Raft; geo/reconciler
// implements it with the node's Raft handle on the active node. Each change is
// one Raft configuration change, committed before it returns.
type Membership interface {
	Servers(ctx context.Context) ([]Server, error)
	Promote(ctx context.Context, id string) error
	Demote(ctx context.Context, id string) error
	Remove(ctx context.Context, id string) error
	// TransferLeadership hands leadership to id (a caught-up voter).
	TransferLeadership(ctx context.Context, id string) error
}

// Action is the kind of a membership step.
type Action string

const (
	Promote  Action = "promote"
	Demote   Action = "demote"
	Remove   Action = "remove"
	Transfer Action = "transfer-leadership"
)

// Step is one membership change and why.
type Step struct {
	Action Action `json:"action"`
	ID     string `json:"id"`
	Why    string `json:"why"`
}

func (s Step) String() string { return fmt.Sprintf("%s %s: %s", s.Action, s.ID, s.Why) }

// Decision is what the reconciler makes of the live configuration: the
// next step (nil when there is none to take now) and what it waits for.
type Decision struct {
	Step *Step `json:"step,omitempty"`
	// Converged: the live configuration is the plan (every planned
	// member joined, voters as planned, the leader where it should be).
	Converged bool `json:"converged"`
	// Waiting lists what keeps it from converging that no step can
	// change now (a node not joined, not caught up, down).
	Waiting []string `json:"waiting,omitempty"`
}

// Next decides the one next safe step from the live configuration
// towards the plan, in this order: promote a planned voter that is a
// healthy, caught-up non-voter (fault tolerance first); move leadership
// to the preferred node, or off a node that should not vote; demote a
// voter the plan does not want; remove a server the topology no longer
// lists. A demotion or removal is taken only once every joined planned
// voter votes and one of them leads, and only if the voters left keep a
// healthy majority; the leader itself is never demoted or removed (it
// hands leadership over first). Nodes are never added here: each node
// joins through retry_join, as a non-voter, and is promoted once caught up.
func Next(p Plan, live []Server) Decision {
	var d Decision
	byID := map[string]Server{}
	var leader *Server
	for i, s := range live {
		byID[s.ID] = s
		if s.Leader {
			leader = &live[i]
		}
	}
	wait := func(format string, args ...any) { d.Waiting = append(d.Waiting, fmt.Sprintf(format, args...)) }

	for _, m := range p.Members {
		if _, ok := byID[m.ID]; !ok {
			wait("%s (%s) has not joined: it joins through retry_join once it runs and is unsealed", m.ID, m.Site)
		}
	}

	// 1. Promotions.
	for _, m := range p.Members {
		s, ok := byID[m.ID]
		if !ok || !m.Voter || s.Voter {
			continue
		}
		switch {
		case !s.Healthy:
			wait("%s should vote but is not healthy", m.ID)
		case !s.CaughtUp:
			wait("%s should vote and is catching up", m.ID)
		case d.Step == nil:
			d.Step = &Step{Action: Promote, ID: m.ID, Why: m.Why}
		}
	}
	if d.Step != nil {
		return d
	}

	// 2. Leadership.
	if leader != nil {
		if target, why := leaderTarget(p, byID, *leader); target != "" {
			d.Step = &Step{Action: Transfer, ID: target, Why: why}
			return d
		} else if why != "" {
			wait("%s", why)
		}
	} else {
		wait("no leader")
	}

	voters := map[string]bool{}
	for _, s := range live {
		if s.Voter {
			voters[s.ID] = true
		}
	}
	// Votes are taken away only once the planned voters have theirs and
	// one of them leads: a switchover to a site that cannot take over
	// keeps the old site's quorum whole.
	lm, _ := p.Member(leaderID(leader))
	holdVotes := leader == nil || !lm.Voter
	for _, m := range p.Members {
		if s, ok := byID[m.ID]; ok && m.Voter && !s.Voter {
			holdVotes = true
		}
	}
	// 3. Demotions, then 4. removals: never the leader, never below a
	// healthy majority.
	for _, m := range p.Members {
		s, ok := byID[m.ID]
		if !ok || m.Voter || !s.Voter {
			continue
		}
		if s.Leader {
			continue // handled by the leadership step
		}
		if holdVotes {
			wait("%s keeps its vote until the planned voters vote and one of them leads", m.ID)
			continue
		}
		if why := quorumAfter(live, voters, m.ID); why != "" {
			wait("demoting %s would %s", m.ID, why)
			continue
		}
		d.Step = &Step{Action: Demote, ID: m.ID, Why: m.Why}
		return d
	}
	for _, s := range live {
		if _, planned := p.Member(s.ID); planned || s.Leader {
			continue
		}
		if s.Voter {
			if holdVotes {
				wait("%s keeps its vote until the planned voters vote and one of them leads", s.ID)
				continue
			}
			if why := quorumAfter(live, voters, s.ID); why != "" {
				wait("removing %s would %s", s.ID, why)
				continue
			}
		}
		d.Step = &Step{Action: Remove, ID: s.ID, Why: "not in the topology"}
		return d
	}
	d.Converged = len(d.Waiting) == 0 && leader != nil
	return d
}

// leaderTarget says where leadership should move, or why it cannot yet
// (target "" with a reason), or nothing (both "").
func leaderTarget(p Plan, byID map[string]Server, leader Server) (target, why string) {
	ready := func(id string) bool {
		s, ok := byID[id]
		m, planned := p.Member(id)
		return ok && planned && m.Voter && s.Voter && s.Healthy && s.CaughtUp
	}
	lm, planned := p.Member(leader.ID)
	leaderShouldVote := planned && lm.Voter
	switch {
	case p.Leader != "" && leader.ID != p.Leader && ready(p.Leader):
		return p.Leader, "the preferred leader of the primary site " + p.Primary
	case leaderShouldVote && lm.Site == p.Primary:
		if p.Leader != "" && leader.ID != p.Leader {
			return "", fmt.Sprintf("leadership goes back to %s once it is a healthy, caught-up voter", p.Leader)
		}
		return "", ""
	case leaderShouldVote && !anyReady(p, ready, true):
		return "", fmt.Sprintf("%s (%s) leads; leadership goes to the primary site %s once one of its voters is healthy and caught up", leader.ID, lm.Site, p.Primary)
	}
	// The leader should not vote or is outside the primary site: hand
	// over to a ready primary-site voter, else any ready planned voter.
	for _, primaryOnly := range []bool{true, false} {
		for _, m := range p.Members {
			if m.ID != leader.ID && (!primaryOnly || m.Site == p.Primary) && ready(m.ID) {
				return m.ID, fmt.Sprintf("leadership belongs in the primary site %s", p.Primary)
			}
		}
	}
	return "", fmt.Sprintf("%s leads but should not; no planned voter is ready to take over", leader.ID)
}

func anyReady(p Plan, ready func(string) bool, primaryOnly bool) bool {
	for _, m := range p.Members {
		if (!primaryOnly || m.Site == p.Primary) && ready(m.ID) {
			return true
		}
	}
	return false
}

func leaderID(s *Server) string {
	if s == nil {
		return ""
	}
	return s.ID
}

// quorumAfter says why taking id's vote away is unsafe ("" if it is
// safe): the voters left must hold a healthy majority of themselves.
func quorumAfter(live []Server, voters map[string]bool, id string) string {
	n, healthy := 0, 0
	for _, s := range live {
		if !voters[s.ID] || s.ID == id {
			continue
		}
		n++
		if s.Healthy {
			healthy++
		}
	}
	if n == 0 {
		return "leave no voter"
	}
	if healthy < n/2+1 {
		return fmt.Sprintf("leave %d voter(s) with only %d healthy, less than the %d a quorum needs", n, healthy, n/2+1)
	}
	return ""
}

// Apply carries out one step.
func Apply(ctx context.Context, m Membership, s Step) error {
	var err error
	switch s.Action {
	case Promote:
		err = m.Promote(ctx, s.ID)
	case Demote:
		err = m.Demote(ctx, s.ID)
	case Remove:
		err = m.Remove(ctx, s.ID)
	case Transfer:
		err = m.TransferLeadership(ctx, s.ID)
	default:
		err = fmt.Errorf("unknown action %q", s.Action)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", s.Action, s.ID, err)
	}
	return nil
}

// Describe is a one-line account of a decision, for the log and status.
func (d Decision) Describe() string {
	switch {
	case d.Step != nil:
		return d.Step.String()
	case d.Converged:
		return "converged"
	}
	return "waiting: " + strings.Join(d.Waiting, "; ")
}
