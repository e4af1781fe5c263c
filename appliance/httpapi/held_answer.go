package httpapi

// What the readiness gate makes of OpenBao's answers while the leader
// changes under a request (see readyGate): held until it knows whether
// anything was done.

import (
	"bytes"
	"net/http"
)

// What a held answer turns out to be.
const (
	answerAsIs   = iota // any answer but those below
	notForwarded        // 500 "active cluster node not found": refused before anything was done or forwarded
	mayHaveDone         // a failed forward (OpenBao's 307 or 503 "no active Vault instance found" after it), Raft's "not the leader" or "leadership transfer in progress": a read is sent again, a write's outcome is unknown
	writeInDoubt        // 500 "leadership lost while committing log": maybe applied
)

// heldAnswer holds OpenBao's 307 and 500 answers (headers and body) until
// the gate knows what they are; every other answer goes through as it is
// written.
type heldAnswer struct {
	w      http.ResponseWriter
	header http.Header
	code   int // the held code, or 0
	wrote  bool
	body   bytes.Buffer
}

func (h *heldAnswer) Header() http.Header { return h.header }

func (h *heldAnswer) WriteHeader(code int) {
	if h.wrote || h.code != 0 {
		return
	}
	if code == http.StatusTemporaryRedirect || code == http.StatusInternalServerError || code == http.StatusServiceUnavailable || code == http.StatusBadRequest {
		h.code = code
		return
	}
	h.start(code)
}

func (h *heldAnswer) start(code int) {
	for k, v := range h.header {
		h.w.Header()[k] = v
	}
	h.w.WriteHeader(code)
	h.wrote = true
}

func (h *heldAnswer) Write(b []byte) (int, error) {
	if !h.wrote && h.code == 0 {
		h.start(http.StatusOK)
	}
	if h.wrote {
		return h.w.Write(b)
	}
	if h.body.Len()+len(b) > 64<<10 {
		h.release()
		return h.w.Write(b)
	}
	return h.body.Write(b)
}

func (h *heldAnswer) Flush() {
	if f, ok := h.w.(http.Flusher); ok && h.wrote {
		f.Flush()
	}
}

// release writes the held answer as it was.
func (h *heldAnswer) release() {
	if h.wrote {
		return
	}
	code := h.code
	if code == 0 {
		code = http.StatusOK
	}
	h.code = 0
	h.start(code)
	h.w.Write(h.body.Bytes())
	h.body.Reset()
}

// kind says what the held answer is; noForward: the request did not want
// forwarding, so a redirect is the answer.
//
// OpenBao's forwardRequest answers a redirect (or 503 "no active Vault
// instance found", when it knows no leader any more) for every failed
// forward, whether the active node received the request or not, and
// Raft's "not the leader" may come after a request's earlier writes were
// committed: only "active cluster node not found", answered before any
// forward, proves that nothing was done.
func (h *heldAnswer) kind(noForward bool) int {
	body := h.body.Bytes()
	switch {
	case h.wrote || h.code == 0:
		return answerAsIs
	case h.code == http.StatusTemporaryRedirect && !noForward:
		return mayHaveDone
	case h.code == http.StatusServiceUnavailable && bytes.Contains(body, []byte(noActiveFound)) && !noForward:
		return mayHaveDone
	case h.code == http.StatusInternalServerError && bytes.Contains(body, []byte(leaderNotFound)):
		return notForwarded
	case (h.code == http.StatusInternalServerError || h.code == http.StatusBadRequest) && (bytes.Contains(body, []byte(raftNotLeader)) || bytes.Contains(body, []byte(raftTransferring))):
		return mayHaveDone
	case (h.code == http.StatusInternalServerError || h.code == http.StatusBadRequest) && bytes.Contains(body, []byte(raftLeadershipLost)):
		// Some backends (the token store) answer a failed storage write
		// 400: it is no more definite than OpenBao's 500.
		return writeInDoubt
	}
	return answerAsIs
}

const (
	leaderNotFound = "active cluster node not found"
	// raftLeadershipLost is hashicorp/raft's ErrLeadershipLost: the entry
	// may or may not be committed.
	raftLeadershipLost = "leadership lost while committing log"
	// noActiveFound is OpenBao's respondStandby without a known leader.
	noActiveFound = "no active Vault instance found"
	// raftNotLeader is hashicorp/raft's ErrNotLeader: this entry was not
	// appended (the request's earlier ones may have been).
	raftNotLeader = "node is not the leader"
	// raftTransferring is hashicorp/raft's ErrLeadershipTransferInProgress
	// (the Geo reconciler moves leadership): this entry was refused (the
	// request's earlier ones may have been committed).
	raftTransferring = "leadership transfer in progress"
)
