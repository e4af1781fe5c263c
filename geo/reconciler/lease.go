package reconciler

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The epoch lease: a Geo node answers API requests (and lets a 2xx answer
// out) only while its last epoch check found no newer epoch at any peer
// it reached, and that check started less than geoLease ago. The lease is
// measured from when the check started, on a clock that counts every
// stall (CLOCK_BOOTTIME: a SIGSTOP, a starved process, a suspended VM), so
// a node that was stalled finds its lease gone when it runs again and
// acknowledges nothing until a check that started after the stall has
// asked every peer it can reach. Raft's own leadership confirmation (the
// leader watch) is the other half: readiness needs both.
//
// The check is its own loop, not the reconciler's: a reconciler step may
// take seconds (a leadership transfer) and must not starve the lease.
// Every check dials afresh (PeerClient keeps no idle connections): a
// connection pooled before a stall may lead nowhere after it (the peer
// restarted behind a firewall that drops the old flow), and a poll that
// times out on it would count a reachable peer of a newer epoch as gone.
const (
	// geoLeaseEvery is the pause between two epoch checks.
	geoLeaseEvery = 500 * time.Millisecond
	// geoLease is how long a check lets the node answer, from its start:
	// two checks (each at most geoPeerWait) and the pause between them,
	// with room for a loaded machine.
	geoLease = 3 * time.Second
)

// bootClock is CLOCK_BOOTTIME: monotonic, and it runs while the process
// or the whole machine is stopped.
func bootClock() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0 // never on Linux; no lease is then ever held
	}
	return time.Duration(ts.Nano())
}

// epochLease is when the last clean epoch check started (bootClock).
type epochLease struct {
	from atomic.Int64
}

// renew records a clean check that started at start.
func (l *epochLease) renew(start time.Duration) {
	for {
		cur := l.from.Load()
		if int64(start) <= cur || l.from.CompareAndSwap(cur, int64(start)) {
			return
		}
	}
}

// lapsed is why the lease does not hold ("" while it does).
func (l *epochLease) lapsed() string {
	from := l.from.Load()
	if from == 0 {
		return "checking the Geo epoch with its peers before it answers"
	}
	if age := bootClock() - time.Duration(from); age > geoLease {
		return fmt.Sprintf("re-checking the Geo epoch with its peers (the last check started %s ago: the node was stalled or its peers are slow)", age.Round(time.Millisecond))
	}
	return ""
}

// LeaseLoop checks the peers' epochs every geoLeaseEvery until ctx ends.
func (g *Reconciler) LeaseLoop(ctx context.Context) {
	for {
		g.checkEpoch(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(geoLeaseEvery):
		}
	}
}

// checkEpoch asks every other node of the topology for its epoch; if none
// that answered is in a newer one, the lease runs from the check's start.
// Only a peer numbering its epoch above this node's own file makes it read
// Raft (checkFence): Raft's storage lock may be held for seconds while
// the node unseals or restores, and that must not lapse the lease.
func (g *Reconciler) checkEpoch(ctx context.Context) {
	start := bootClock()
	g.mu.Lock()
	topo, mine := g.topo, g.localEpoch.Number
	g.mu.Unlock()
	peers := g.pollPeers(ctx, topo, geoPeerWait)
	for _, p := range peers {
		if p.Epoch.Number > mine {
			g.checkFence(ctx, peers)
			break
		}
	}
	if g.FencedReason() != "" {
		g.fenceRunning()
		return
	}
	g.lease.renew(start)
}

// Lease is why this node must not answer API requests now because of its
// Geo epoch ("" if it may): it is fenced, or its epoch lease does not hold.
func (g *Reconciler) Lease() string {
	if reason := g.FencedReason(); reason != "" {
		return reason
	}
	return g.lease.lapsed()
}
