package appliance

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	hraft "github.com/hashicorp/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/raftx"
)

// leaderWatch tells the requests a standby forwards that the leader they
// were forwarded to is no longer it: when this node's Raft state or leader
// changes, every request bound to the old leader is cancelled. Without
// this, a forward to a leader that stopped answering (paused, cut off)
// hangs until the client gives up, and holds OpenBao's forwarding lock,
// which the node needs to become active if it is the new leader: the whole
// cluster then waits for the slowest client's timeout.
type leaderWatch struct {
	mu     sync.Mutex
	ch     chan struct{} // closed at the next change
	state  hraft.RaftState
	leader hraft.ServerID
	tune   func(r *hraft.Raft) // called at every look (see tuneRaft)

	// While this node leads, a quorum confirms its leadership every
	// verifyEvery (Raft's VerifyLeader: a round of heartbeats); confirmed
	// is when the last confirmed round started. A leader that was paused
	// or cut off still believes it leads until it hears otherwise; its
	// confirmation is old at once, so it is not ready and serves nothing
	// stale meanwhile.
	verifying bool
	confirmed atomic.Int64 // unix nanoseconds
	// soleVoter: this node is the only voter of the Raft configuration.
	soleVoter atomic.Bool

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
func (w *leaderWatch) saw(ready bool, now time.Time) {
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
func (w *leaderWatch) notReadyFor(now time.Time) time.Duration {
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
func (w *leaderWatch) forwardFailed(t time.Time) { w.lastForwardFail.Store(t.UnixNano()) }

// verifyEvery is how often a leader has a quorum confirm its leadership.
const verifyEvery = 100 * time.Millisecond

// confirmedWithin reports whether a quorum confirmed this node's
// leadership within d.
func (w *leaderWatch) confirmedWithin(d time.Duration) (bool, time.Duration) {
	age := time.Since(time.Unix(0, w.confirmed.Load()))
	return age <= d, age
}

func newLeaderWatch() *leaderWatch { return &leaderWatch{ch: make(chan struct{})} }

// leaderPoll is how often the watch looks at Raft.
const leaderPoll = 20 * time.Millisecond

// run watches a's Raft until ctx ends.
func (w *leaderWatch) run(ctx context.Context, h *raftx.Handle) {
	t := time.NewTicker(leaderPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var state hraft.RaftState = hraft.Shutdown
		var leader hraft.ServerID
		h.With(func(r *hraft.Raft) {
			h.Unpipe()
			state = r.State()
			_, leader = r.LeaderWithID()
			if w.tune != nil {
				w.tune(r)
			}
			w.verify(r, state)
			w.soleVoter.Store(state == hraft.Leader && soleVoter(r))
		})
		w.mu.Lock()
		if state != w.state || leader != w.leader {
			w.state, w.leader = state, leader
			close(w.ch)
			w.ch = make(chan struct{})
		}
		w.mu.Unlock()
	}
}

// verify starts a leadership confirmation if this node leads and none is
// running or recent.
func (w *leaderWatch) verify(r *hraft.Raft, state hraft.RaftState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if state != hraft.Leader || w.verifying {
		return
	}
	if ok, _ := w.confirmedWithin(verifyEvery); ok {
		return
	}
	w.verifying = true
	start := time.Now()
	f := r.VerifyLeader()
	go func() {
		err := f.Error()
		w.mu.Lock()
		w.verifying = false
		w.mu.Unlock()
		if err == nil {
			w.confirmed.Store(start.UnixNano())
		}
	}()
}

// soleVoter reports whether r is the only voter of its configuration.
func soleVoter(r *hraft.Raft) bool {
	f := r.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	_, self := r.LeaderWithID()
	voters := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == hraft.Voter {
			voters++
			if s.ID != self {
				return false
			}
		}
	}
	return voters == 1
}

// changed is closed at the next change of Raft's state or leader.
func (w *leaderWatch) changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch
}

// bound is r with a context cancelled at the next change; call done when
// the request is over. cut reports whether the change cancelled it.
func (w *leaderWatch) bound(r *http.Request) (req *http.Request, done func(), cut func() bool) {
	ch := w.changed()
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
	a       *Appliance
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
	if tells && !w.a.leaders.soleVoter.Load() && !w.a.leaders.confirmedAfterLapse(w.ctx, w.a.leaseDuration()) {
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
func (w *leaderWatch) confirmedAfterLapse(ctx context.Context, lease time.Duration) bool {
	if ok, _ := w.confirmedWithin(lease); ok {
		return true
	}
	from := time.Now().UnixNano()
	deadline := time.Now().Add(readyHold)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if w.confirmed.Load() >= from {
			return true
		}
		time.Sleep(readyPoll)
	}
	return w.confirmed.Load() >= from
}
