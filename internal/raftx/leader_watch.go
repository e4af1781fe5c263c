package raftx

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	hraft "github.com/hashicorp/raft"
)

// LeaderWatch tells the requests a standby forwards that the leader they
// were forwarded to is no longer it: when this node's Raft state or leader
// changes, every request bound to the old leader is cancelled. Without
// this, a forward to a leader that stopped answering (paused, cut off)
// hangs until the client gives up, and holds OpenBao's forwarding lock,
// which the node needs to become active if it is the new leader: the whole
// cluster then waits for the slowest client's timeout. (httpapi binds the
// requests to changed and asks it for the leadership's confirmation.)
type LeaderWatch struct {
	mu     sync.Mutex
	ch     chan struct{} // closed at the next change
	state  hraft.RaftState
	leader hraft.ServerID
	tune   func(r *hraft.Raft) // called at every look (see NewLeaderWatch)

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
}

// verifyEvery is how often a leader has a quorum confirm its leadership.
const verifyEvery = 100 * time.Millisecond

// ConfirmedWithin reports whether a quorum confirmed this node's
// leadership within d, and how long ago it last did.
func (w *LeaderWatch) ConfirmedWithin(d time.Duration) (bool, time.Duration) {
	age := time.Since(time.Unix(0, w.confirmed.Load()))
	return age <= d, age
}

// NewLeaderWatch is a watch that calls tune (if not nil) with the running
// Raft at every look: the node's hook to adjust Raft's timing (see
// TuneTimeouts).
func NewLeaderWatch(tune func(r *hraft.Raft)) *LeaderWatch {
	return &LeaderWatch{ch: make(chan struct{}), tune: tune}
}

// Confirmed is when the last round that confirmed this node's leadership
// started (the zero Unix time if none did).
func (w *LeaderWatch) Confirmed() time.Time { return time.Unix(0, w.confirmed.Load()) }

// SoleVoter: this node leads and is the only voter of its configuration.
func (w *LeaderWatch) SoleVoter() bool { return w.soleVoter.Load() }

// Expire makes the last confirmation as old as it can be: the leadership
// counts as unconfirmed until the next round (the tests of readiness).
func (w *LeaderWatch) Expire() { w.confirmed.Store(1) }

// leaderPoll is how often the watch looks at Raft.
const leaderPoll = 20 * time.Millisecond

// Run watches h's Raft until ctx ends.
func (w *LeaderWatch) Run(ctx context.Context, h *Handle) {
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
func (w *LeaderWatch) verify(r *hraft.Raft, state hraft.RaftState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if state != hraft.Leader || w.verifying {
		return
	}
	if ok, _ := w.ConfirmedWithin(verifyEvery); ok {
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

// Changed is closed at the next change of Raft's state or leader.
func (w *LeaderWatch) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch
}
