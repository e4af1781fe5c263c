package httpapi

import (
	"context"
	"net/http"
	"time"
)

// After a forward from this standby failed (the leader died, or this
// node's forwarding connection is not up yet after a restart), the next
// writes would most likely fail the same way, after OpenBao read and
// perhaps sent them: their clients could only be told "outcome unknown".
// So a write waits (within the request's hold) until a forward worked
// again, proved by a probe: an unauthenticated read that OpenBao forwards
// to the active node (sys/internal/ui/mounts), or any request that came
// back through a forward since. A write that cannot wait is refused as
// not ready: nothing was sent.

// probePath is the probe: served by the active node to anyone, changes
// nothing.
const probePath = "/v1/sys/internal/ui/mounts"

// forwardHealthy: no forward failed since one last worked.
func (w *gateState) forwardHealthy() bool {
	failed := w.lastForwardFail.Load()
	return failed == 0 || w.lastForwardOK.Load() > failed
}

// forwardWorked records that a forward sent at t came back.
func (w *gateState) forwardWorked(t time.Time) {
	n := t.UnixNano()
	for {
		old := w.lastForwardOK.Load()
		if old >= n || w.lastForwardOK.CompareAndSwap(old, n) {
			return
		}
	}
}

// forwardWorks waits until forwarding works (see above), at most until
// deadline; next is the handler the gate forwards through.
func (h *API) forwardWorks(r *http.Request, next http.Handler, deadline time.Time) bool {
	for !h.gate.forwardHealthy() {
		h.probeForwarding(next)
		if !time.Now().Before(deadline) || r.Context().Err() != nil {
			return false
		}
		time.Sleep(readyPoll)
	}
	return true
}

// probeForwarding starts the probe unless it runs: every probeEvery
// until a forward works, for probeFor at most (the next write that waits
// starts it again).
func (h *API) probeForwarding(next http.Handler) {
	if !h.gate.probing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer h.gate.probing.Store(false)
		until := time.Now().Add(probeFor)
		for time.Now().Before(until) && h.n.Context().Err() == nil && !h.gate.forwardHealthy() && !h.core.Sealed() {
			if !h.probeOnce(next) {
				time.Sleep(probeEvery)
			}
		}
	}()
}

const (
	probeEvery = 50 * time.Millisecond
	probeFor   = 30 * time.Second
	// probeTimeout bounds one probe (a leader that stopped answering).
	probeTimeout = 2 * time.Second
)

// probeOnce sends the probe through next; true if it came back from the
// active node.
func (h *API) probeOnce(next http.Handler) bool {
	ctx, cancel := context.WithTimeout(h.n.Context(), probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://appliance.internal"+probePath, nil)
	if err != nil {
		return false
	}
	req.RemoteAddr, req.RequestURI = "127.0.0.1:0", probePath
	req, done, _ := h.bound(req)
	defer done()
	mark := &readMark{ReadCloser: http.NoBody}
	req.Body = mark
	sent := time.Now()
	held := &heldAnswer{w: &recorder{header: http.Header{}, code: http.StatusOK}, header: http.Header{}}
	next.ServeHTTP(held, req)
	if held.kind(false) != answerAsIs || !mark.read.Load() {
		return false
	}
	h.gate.forwardWorked(sent)
	return true
}
