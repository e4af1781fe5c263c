package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// A node is ready when it can answer API requests as the cluster would:
// unsealed, its OpenBao core and Raft agree on who the active node is, and
// (on a standby) it has heard from that leader recently and applied all
// but a few entries of what the leader has committed (Node.Readiness).
// Until then API requests wait up to readyHold for it, then get 503 with
// Retry-After: never OpenBao's 500 "active cluster node not found" of a
// standby that restarted and still reads a stale leader from its own
// storage.
const (
	// readyHold is how long a request waits for its node to become ready.
	readyHold = 2 * time.Second
	// readyPoll is how often a waiting request looks again.
	readyPoll = 20 * time.Millisecond
)

// Readiness is whether a node can answer API requests, and why not.
type Readiness struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"not_ready,omitempty"`
	Active bool   `json:"-"` // the node is the active one
}

// gateExempt are the API paths served whatever the readiness: the node's
// own state, what unseals, seals and joins it.
var gateExempt = map[string]bool{
	"sys/health": true, "sys/seal-status": true, "sys/leader": true, "sys/init": true,
	"sys/unseal": true, "sys/seal": true, "sys/step-down": true, "sys/metrics": true,
	"sys/storage/raft/bootstrap/challenge": true, "sys/storage/raft/bootstrap/answer": true,
}

// readyGate holds API requests while the node is unsealed but not ready,
// up to readyHold, then answers 503 with Retry-After. Every 503 it lets
// through (OpenBao's sealed answer) gets a Retry-After too. sys/health
// reports the readiness (see health).
func (h *API) readyGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, isAPI := strings.CutPrefix(r.URL.Path, "/v1/")
		if !isAPI {
			next.ServeHTTP(w, r)
			return
		}
		w = retryAfter503{w}
		path = strings.TrimSuffix(path, "/")
		switch {
		case path == "sys/health" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			h.health(next, w, r)
			return
		case gateExempt[path]:
			next.ServeHTTP(w, r)
			return
		}
		w = h.geoGuard(w) // no 2xx out once the node cannot vouch for it
		read := isRead(r, path)
		noForward := r.Header.Get("X-Vault-No-Request-Forwarding") != "" || strings.HasPrefix(path, "sys/storage/raft/snapshot")
		active := false
		if !h.core.Sealed() {
			// A node not ready for readyHold already is not going to be
			// in a moment (a restarted node catching up, a lost quorum):
			// it says so at once instead of holding every request.
			hold := readyHold
			if h.gate.notReadyFor(time.Now()) >= readyHold {
				hold = 0
			}
			deadline := time.Now().Add(hold)
			rd := h.waitReady(r, deadline)
			if !rd.Ready {
				writeError(w, http.StatusServiceUnavailable, fmt.Errorf("this node is not ready: %s; retry in a moment or use another node", rd.Reason))
				return
			}
			// After a failed forward a write is not sent into the failure
			// (see forward_health.go); a read is sent again if it fails.
			if !rd.Active && !read && !noForward && !h.forwardWorks(r, next, deadline) {
				writeError(w, http.StatusServiceUnavailable, errors.New("this node is not ready: its last forward to the active node failed and none has worked since (the request was not sent); retry in a moment or use another node"))
				return
			}
			active = rd.Active
		}
		// Answers OpenBao gives while the leader changes under a request
		// become what they are (see heldAnswer and the README's Readiness
		// and faults): a request nothing was done for is sent again once
		// the node is ready; a read is sent again whatever happened to it;
		// a write that may have reached the active node is never sent
		// again: its client is told that its outcome is unknown.
		var body []byte
		replay := false
		if !active || read {
			body, replay = bufferBody(r)
		}
		orig := r
		for attempt := 0; ; attempt++ {
			out := w
			if active {
				out = &confirmWriter{ResponseWriter: w, n: h.n, ctx: orig.Context(), write: !read}
			}
			held := &heldAnswer{w: out, header: http.Header{}}
			req, done, cut := orig, func() {}, func() bool { return false }
			var mark *readMark
			if !active {
				req, done, cut = h.bound(orig)
				mark = &readMark{ReadCloser: req.Body}
				req.Body = mark
			}
			sent := time.Now()
			next.ServeHTTP(held, req)
			done()
			failed := time.Now()
			kind := held.kind(noForward)
			if kind == answerAsIs && !active && mark.read.Load() {
				h.gate.forwardWorked(sent)
			}
			if kind == mayHaveDone && !active {
				h.gate.forwardFailed(failed)
				if held.code != http.StatusInternalServerError && !mark.read.Load() {
					// A forward's fallback (a redirect, or 503 without a
					// leader) with a body nobody read: OpenBao reads the body
					// to forward it, so it was never sent (no forwarding
					// connection yet: its ErrCannotForward); nothing was done.
					kind = notForwarded
				}
			}
			if kind == answerAsIs && held.code == http.StatusInternalServerError && cut() {
				// Cancelled by the leader change, not forwarded but handled
				// here as the node became active: whatever OpenBao says, the
				// outcome is not known.
				kind = writeInDoubt
			}
			switch {
			case kind == answerAsIs:
				held.release()
				return
			case !read && kind != notForwarded:
				writeError(w, http.StatusServiceUnavailable, errOutcomeUnknown)
				return
			case !replay || attempt == maxReplays || orig.Context().Err() != nil:
				writeError(w, http.StatusServiceUnavailable, errors.New("this node is not ready: the active node changed while the request was handled (it was not applied); retry in a moment or use another node"))
				return
			}
			// Nothing was done, or a read: once the node is ready again and
			// hears from a leader, send the request again.
			if rd := h.waitFresh(orig, failed, time.Now().Add(readyHold)); !rd.Ready {
				writeError(w, http.StatusServiceUnavailable, fmt.Errorf("this node is not ready: %s; retry in a moment or use another node", rd.Reason))
				return
			}
			orig.Body = io.NopCloser(bytes.NewReader(body))
		}
	})
}

// readMark is a request body that records whether anyone read it.
type readMark struct {
	io.ReadCloser
	read atomic.Bool
}

func (m *readMark) Read(p []byte) (int, error) {
	m.read.Store(true)
	return m.ReadCloser.Read(p)
}

// maxReplays is how many times the gate sends a request again.
const maxReplays = 2

// ErrOutcomeUnknown marks every answer whose client cannot know whether
// its request was applied: it was applied once or not at all, and only a
// read can tell which. Such a request is never sent again.
var ErrOutcomeUnknown = errors.New("outcome unknown")

// errOutcomeUnknown answers a write that may have reached the active node
// when the leader changed under it.
var errOutcomeUnknown = fmt.Errorf("%w: the active node changed while this request was being applied; it may or may not have been applied (it was not sent again); check before retrying it", ErrOutcomeUnknown)

// isRead reports whether r only reads, so that sending it again cannot
// apply anything twice: GET, HEAD and LIST, except a GET that issues a
// credential (a database plugin's creds/<role>), which is a write.
func isRead(r *http.Request, path string) bool {
	switch r.Method {
	case http.MethodGet:
		return !strings.HasPrefix(path, "creds/") && !strings.Contains(path, "/creds/")
	case http.MethodHead, "LIST":
		return true
	}
	return false
}

// waitFresh is waitReady that also waits for a contact with a leader
// after since (a forward failed then: the leader may be gone though Raft
// has not noticed yet; a live one sends a heartbeat within 100 ms).
func (h *API) waitFresh(r *http.Request, since time.Time, deadline time.Time) Readiness {
	for {
		rd := h.waitReady(r, deadline)
		fresh := h.n.LastContact().After(since)
		if !rd.Ready || rd.Active || fresh || !time.Now().Before(deadline) || r.Context().Err() != nil {
			return rd
		}
		time.Sleep(readyPoll)
	}
}

// waitReady polls the readiness until it holds or deadline passes.
func (h *API) waitReady(r *http.Request, deadline time.Time) Readiness {
	rd := h.n.Readiness()
	h.gate.saw(rd.Ready, time.Now())
	for !rd.Ready && time.Now().Before(deadline) && r.Context().Err() == nil {
		time.Sleep(readyPoll)
		rd = h.n.Readiness()
		h.gate.saw(rd.Ready, time.Now())
	}
	return rd
}

// maxReplayBody bounds the request body a standby keeps to try a request
// again.
const maxReplayBody = 1 << 20

// bufferBody reads r's body into memory (up to maxReplayBody) and puts a
// reader of it back; ok is false when it is larger (r.Body still reads it
// all).
func bufferBody(r *http.Request) ([]byte, bool) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxReplayBody+1))
	if err != nil || len(b) > maxReplayBody {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(b), r.Body), r.Body}
		return nil, false
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	return b, true
}

// health answers sys/health as OpenBao does, with the appliance's
// readiness added: an unsealed node that is not ready answers
// ?notreadycode= (default 503) instead of its active or standby code, and
// the body says why ("appliance_ready", "appliance_not_ready").
func (h *API) health(next http.Handler, w http.ResponseWriter, r *http.Request) {
	rec := &recorder{header: http.Header{}, code: http.StatusOK}
	next.ServeHTTP(rec, r)
	var body map[string]any
	if err := json.Unmarshal(rec.body.Bytes(), &body); err != nil || body == nil {
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.code)
		w.Write(rec.body.Bytes())
		return
	}
	code := rec.code
	rd := Readiness{Ready: false, Reason: "sealed or not initialized"}
	if sealed, _ := body["sealed"].(bool); !sealed {
		if inited, _ := body["initialized"].(bool); inited {
			if rd = h.n.Readiness(); !rd.Ready {
				code = http.StatusServiceUnavailable
				if c, err := strconv.Atoi(r.URL.Query().Get("notreadycode")); err == nil && c >= 200 && c < 600 {
					code = c
				}
			}
		}
	}
	body["appliance_ready"] = rd.Ready
	if !rd.Ready {
		body["appliance_not_ready"] = rd.Reason
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		json.NewEncoder(w).Encode(body)
	}
}

// retryAfter503 adds Retry-After to a 503 that has none.
type retryAfter503 struct{ http.ResponseWriter }

func (w retryAfter503) WriteHeader(code int) {
	if code == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w retryAfter503) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush lets streamed answers (Raft snapshots) through.
func (w retryAfter503) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// recorder keeps a handler's answer.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(code int)        { r.code = code }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
