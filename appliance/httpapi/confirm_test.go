package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A node found not ready without a break for readyHold is known not to be
// ready: the gate stops holding requests for it. A break (a ready look, or
// nobody looking for longer than episodeGap) starts a new episode.
func TestNotReadyEpisode(t *testing.T) {
	w := &gateState{}
	t0 := time.Unix(1000, 0)
	if d := w.notReadyFor(t0); d != 0 {
		t.Fatalf("never looked at: %s", d)
	}
	for i := 0; i <= 150; i++ { // every 20 ms for 3 s
		w.saw(false, t0.Add(time.Duration(i)*20*time.Millisecond))
	}
	now := t0.Add(3 * time.Second)
	if d := w.notReadyFor(now); d != 3*time.Second {
		t.Fatalf("not ready for %s, want 3s", d)
	}
	if d := w.notReadyFor(now.Add(episodeGap + time.Millisecond)); d != 0 {
		t.Fatalf("nobody looked for longer than episodeGap, yet not ready for %s", d)
	}
	w.saw(false, now.Add(time.Second)) // a look after a long break: a new episode
	if d := w.notReadyFor(now.Add(time.Second)); d != 0 {
		t.Fatalf("a new episode is %s old", d)
	}
	w.saw(false, now.Add(time.Second+100*time.Millisecond))
	w.saw(true, now.Add(time.Second+200*time.Millisecond))
	if d := w.notReadyFor(now.Add(time.Second + 200*time.Millisecond)); d != 0 {
		t.Fatalf("ready again, yet not ready for %s", d)
	}
}

// A read's 2xx leaves the active node only while its leadership is
// confirmed: after a lapse (a stalled leader) it waits for a round that
// started after the answer was ready, and without one the read gets 503.
func TestConfirmWriter(t *testing.T) {
	a := &confirmNode{}
	answer := func(code int, write bool) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		w := &confirmWriter{ResponseWriter: rec, n: a, ctx: context.Background(), write: write}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		w.Write([]byte(`{"data":{"v":"stale?"}}`))
		return rec
	}
	serve := func() *httptest.ResponseRecorder { return answer(http.StatusOK, false) }
	a.confirmed.Store(time.Now().UnixNano())
	if rec := serve(); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "stale?") {
		t.Fatalf("a confirmed leader's read: %d %s", rec.Code, rec.Body.String())
	}
	a.confirmed.Store(time.Now().Add(-time.Minute).UnixNano()) // stalled for a minute
	if rec := serve(); rec.Code != http.StatusServiceUnavailable || strings.Contains(rec.Body.String(), "stale?") || !strings.Contains(rec.Body.String(), "not ready") {
		t.Fatalf("an unconfirmed leader's read got out: %d %s", rec.Code, rec.Body.String())
	}
	// A 404 and a check-and-set's 400 tell of the state as a 200 does; a
	// write's refusal becomes "outcome unknown"; a committed write's 200
	// and a server error go out as they are.
	if rec := answer(http.StatusNotFound, false); rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "not ready") {
		t.Fatalf("an unconfirmed leader's 404: %d %s", rec.Code, rec.Body.String())
	}
	if rec := answer(http.StatusBadRequest, true); rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "outcome unknown") || strings.Contains(rec.Body.String(), "stale?") {
		t.Fatalf("an unconfirmed leader's check-and-set mismatch: %d %s", rec.Code, rec.Body.String())
	}
	if rec := answer(http.StatusOK, true); rec.Code != http.StatusOK {
		t.Fatalf("a committed write's answer held back: %d %s", rec.Code, rec.Body.String())
	}
	if rec := answer(http.StatusInternalServerError, true); rec.Code != http.StatusInternalServerError {
		t.Fatalf("a server error held back: %d %s", rec.Code, rec.Body.String())
	}
	// A round that starts after the answer was ready confirms it.
	a.confirmed.Store(time.Now().Add(-time.Minute).UnixNano())
	done := make(chan struct{})
	go func() { // the leader watch's rounds, every readyPoll
		for {
			select {
			case <-done:
				return
			case <-time.After(readyPoll):
				a.confirmed.Store(time.Now().UnixNano())
			}
		}
	}()
	rec := serve()
	close(done)
	if rec.Code != http.StatusOK {
		t.Fatalf("a read confirmed after the lapse: %d %s", rec.Code, rec.Body.String())
	}
}

// confirmNode is a leader of several voters whose leadership was confirmed
// at confirmed (unix nanoseconds), with the lease of performance
// multiplier 1.
type confirmNode struct {
	Node
	confirmed atomic.Int64
}

func (n *confirmNode) SoleVoter() bool                { return false }
func (n *confirmNode) LeaseDuration() time.Duration   { return 500 * time.Millisecond }
func (n *confirmNode) LeadershipConfirmed() time.Time { return time.Unix(0, n.confirmed.Load()) }
