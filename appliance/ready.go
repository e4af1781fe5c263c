package appliance

import (
	"fmt"
	"net/url"
	"time"

	hraft "github.com/hashicorp/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/appliance/httpapi"
)

// A node is ready when it can answer API requests as the cluster would:
// unsealed, its OpenBao core and Raft agree on who the active node is, and
// (on a standby) it has heard from that leader recently and applied all
// but a few entries of what the leader has committed (see httpapi's
// readiness gate).

// maxReadyLag is how many committed entries a ready standby may not have
// applied yet: one Raft batch (MaxAppendEntries), which a healthy follower
// under load is often behind by for a moment.
const maxReadyLag = 64

func notReady(format string, args ...any) httpapi.Readiness {
	return httpapi.Readiness{Reason: fmt.Sprintf(format, args...)}
}

// geoLease is why this node must not answer API requests now because of
// its Geo epoch ("" if it may; always "" without Geo).
func (a *Appliance) geoLease() string {
	if a.geo == nil {
		return ""
	}
	return a.geo.Lease()
}

// readiness looks at the core and at Raft; it never blocks on another node.
func (a *Appliance) readiness() httpapi.Readiness {
	if a.geo != nil {
		if reason := a.geo.FencedReason(); reason != "" {
			return notReady("%s", reason)
		}
	}
	if a.core.Sealed() {
		return notReady("sealed")
	}
	if reason := a.geoLease(); reason != "" {
		return notReady("%s", reason)
	}
	isLeader, _, clusterAddr, err := a.core.Leader()
	if err != nil {
		return notReady("cannot tell the active node: %v", err)
	}
	var state hraft.RaftState
	var leader hraft.ServerAddress
	var commit uint64
	var contact time.Time
	if !a.raftH.With(func(r *hraft.Raft) {
		state, commit, contact = r.State(), r.CommitIndex(), r.LastContact()
		leader, _ = r.LeaderWithID()
	}) {
		return notReady("Raft is not running yet")
	}
	if isLeader {
		if state != hraft.Leader {
			return notReady("stepping down: Raft has lost the leadership")
		}
		lease := a.leaseDuration()
		// The only voter is its own quorum: nobody else can be elected,
		// however slow this process runs.
		if ok, age := a.leaders.ConfirmedWithin(lease); !ok && !a.leaders.SoleVoter() {
			return notReady("confirming its leadership with a quorum (last confirmed %s ago)", age.Round(time.Millisecond))
		}
		return httpapi.Readiness{Ready: true, Active: true}
	}
	silence := time.Duration(a.cfg.Raft.PerformanceMultiplier) * 500 * time.Millisecond
	applied := a.raft.AppliedIndex()
	switch {
	case leader == "":
		return notReady("no Raft leader: an election is under way")
	case clusterAddr == "":
		return notReady("catching up: the active node is not known yet")
	case !sameHostPort(clusterAddr, string(leader)):
		return notReady("catching up: this node still knows %s as the active node, Raft's leader is %s", clusterAddr, leader)
	case time.Since(contact) > silence:
		return notReady("no contact with the leader for %s", time.Since(contact).Round(time.Millisecond))
	case applied+maxReadyLag < commit:
		return notReady("catching up: applied index %d of %d", applied, commit)
	}
	return httpapi.Readiness{Ready: true}
}

// leaseDuration is how recently a quorum must have confirmed a leader's
// leadership for it to serve: half a heartbeat timeout at the default
// multiplier.
func (a *Appliance) leaseDuration() time.Duration {
	return time.Duration(a.cfg.Raft.PerformanceMultiplier) * 500 * time.Millisecond
}

// sameHostPort compares a cluster URL (https://host:port) with a Raft
// address (host:port). OpenBao gives Raft the host:port of each node's
// cluster_addr, so the two are spelt the same; no name is resolved here,
// on every request's path.
func sameHostPort(clusterURL, raftAddr string) bool {
	u, err := url.Parse(clusterURL)
	return err == nil && u.Host == raftAddr
}
