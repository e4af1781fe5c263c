package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"
)

// gateState is what the readiness gate remembers between requests.
type gateState struct {
	// lastForwardFail is when a forward from this node last failed (unix
	// nanoseconds; 0: never).
	lastForwardFail atomic.Int64
	// lastForwardOK is when a forward that came back was sent (unix
	// nanoseconds); probing: the probe runs (see forward_health.go).
	lastForwardOK atomic.Int64
	probing       atomic.Bool
	// notReadyFrom is when the episode of not being ready that requests
	// find the node in began (0: ready), notReadySeen when a request last
	// found it not ready (unix nanoseconds); see saw.
	notReadyFrom, notReadySeen atomic.Int64
}

// saw records what a request found: ready or not, at now. An episode of
// not being ready lasts while requests keep finding the node not ready
// (at most episodeGap apart).
func (w *gateState) saw(ready bool, now time.Time) {
	if ready {
		w.notReadyFrom.Store(0)
		return
	}
	n := now.UnixNano()
	if last := w.notReadySeen.Swap(n); w.notReadyFrom.Load() == 0 || n-last > int64(episodeGap) {
		w.notReadyFrom.Store(n)
	}
}

// notReadyFor is how long the node has been found not ready, without a
// break, up to now (0: it was ready, or nobody looked lately).
func (w *gateState) notReadyFor(now time.Time) time.Duration {
	from, seen := w.notReadyFrom.Load(), w.notReadySeen.Load()
	if from == 0 || now.UnixNano()-seen > int64(episodeGap) {
		return 0
	}
	return time.Duration(now.UnixNano() - from)
}

// episodeGap is the longest time between two looks that found the node
// not ready for them to count as one episode.
const episodeGap = 250 * time.Millisecond

// forwardFailed records that a forward failed at t.
func (w *gateState) forwardFailed(t time.Time) { w.lastForwardFail.Store(t.UnixNano()) }

// bound is r with a context cancelled at the next change; call done when
// the request is over. cut reports whether the change cancelled it.
func (h *API) bound(r *http.Request) (req *http.Request, done func(), cut func() bool) {
	ch := h.n.LeaderChanged()
	ctx, cancel := context.WithCancel(r.Context())
	var byChange atomic.Bool
	go func() {
		select {
		case <-ch:
			byChange.Store(true)
			cancel()
		case <-ctx.Done():
		}
	}()
	return r.WithContext(ctx), cancel, byChange.Load
}

// confirmWriter lets an answer out of the active node only while its
// leadership is confirmed: a leader that was stalled (SIGSTOP, a starved
// process) after the gate let the request in may have been replaced
// meanwhile and have read a stale FSM. Every answer of a read below 500
// tells of the state (its 200 and its 404), and so does a write's refusal
// (a check-and-set's 400 mismatch); a write's 2xx does not need it: Raft
// committed the write in this leader's term, so no newer leader's entry
// precedes it. A lapsed confirmation waits (up to readyHold) for a round
// that started after the answer was ready; failing that, a read gets 503
// (it changed nothing: the client reads again) and a write 503 outcome
// unknown (a handler that refused may have written before it did).
type confirmWriter struct {
	http.ResponseWriter
	n       Node
	ctx     context.Context
	write   bool
	decided bool
	refused bool
}

func (w *confirmWriter) WriteHeader(code int) {
	if w.decided {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.decided = true
	tells := code >= 200 && code < 500 && (!w.write || code >= 300)
	if tells && !w.n.SoleVoter() && !confirmedAfterLapse(w.ctx, w.n, w.n.LeaseDuration()) {
		w.refused = true
		h := w.ResponseWriter.Header()
		for k := range h {
			delete(h, k)
		}
		err := errors.New("this node is not ready: it could not confirm its leadership after reading; read again in a moment or use another node")
		if w.write {
			err = fmt.Errorf("%w: this node could not confirm its leadership after handling the request; it may or may not have been applied (it was not sent again); check before retrying it", ErrOutcomeUnknown)
		}
		writeError(w.ResponseWriter, http.StatusServiceUnavailable, err)
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *confirmWriter) Write(b []byte) (int, error) {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
	if w.refused {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets streamed answers through once they were let out.
func (w *confirmWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok && w.decided && !w.refused {
		f.Flush()
	}
}

// confirmedAfterLapse: the leadership is confirmed within lease, or a
// confirmation round that starts from now succeeds before readyHold.
func confirmedAfterLapse(ctx context.Context, n Node, lease time.Duration) bool {
	if time.Since(n.LeadershipConfirmed()) <= lease {
		return true
	}
	from := time.Now()
	deadline := time.Now().Add(readyHold)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !n.LeadershipConfirmed().Before(from) {
			return true
		}
		time.Sleep(readyPoll)
	}
	return !n.LeadershipConfirmed().Before(from)
}
