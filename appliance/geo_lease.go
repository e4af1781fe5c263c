package appliance

import (
	"context"
	"fmt"
	"net/http"
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
// Every check dials afresh (geoClient keeps no idle connections): a
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

// leaseLoop checks the peers' epochs every geoLeaseEvery until ctx ends.
func (g *geoRun) leaseLoop(ctx context.Context) {
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
func (g *geoRun) checkEpoch(ctx context.Context) {
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
	if g.fencedReason() != "" {
		g.fenceRunning()
		return
	}
	g.lease.renew(start)
}

// geoLease is why this node must not answer API requests now because of
// its Geo epoch ("" if it may; always "" without Geo).
func (a *Appliance) geoLease() string {
	if a.geo == nil {
		return ""
	}
	if reason := a.geo.fencedReason(); reason != "" {
		return reason
	}
	return a.geo.lease.lapsed()
}

// geoGuard holds back every answer below 500 written through w that the node
// cannot vouch for when it is ready (see geoLease): the client gets 503
// instead. Without Geo it is w.
func (a *Appliance) geoGuard(w http.ResponseWriter) http.ResponseWriter {
	if a.geo == nil {
		return w
	}
	return &leaseWriter{ResponseWriter: w, a: a}
}

// leaseWriter is geoGuard's writer.
type leaseWriter struct {
	http.ResponseWriter
	a       *Appliance
	decided bool
	refused bool
}

func (w *leaseWriter) WriteHeader(code int) {
	if w.decided {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.decided = true
	if code >= 200 && code < 500 { // a 404 or a check-and-set's 400 tells of the state too
		if reason := w.a.geoLease(); reason != "" {
			w.refused = true
			h := w.ResponseWriter.Header()
			for k := range h {
				delete(h, k)
			}
			w.a.logger.Warn("geo: an answer held back: the node cannot vouch for it", "reason", reason)
			// An answer ready when the node can no longer vouch for it
			// (fenced, or its lease lapsed while the request ran).
			writeError(w.ResponseWriter, http.StatusServiceUnavailable, fmt.Errorf("%w: %s; if it was a write it may or may not have been applied on a site that is being replaced: check the promoted site", ErrOutcomeUnknown, reason))
			return
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *leaseWriter) Write(b []byte) (int, error) {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
	if w.refused {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets streamed answers through (once they were let out).
func (w *leaseWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok && w.decided && !w.refused {
		f.Flush()
	}
}

func (w *leaseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
