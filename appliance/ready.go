package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hraft "github.com/hashicorp/raft"
)

// A node is ready when it can answer API requests as the cluster would:
// unsealed, its OpenBao core and Raft agree on who the active node is, and
// (on a standby) it has heard from that leader recently and applied all
// but a few entries of what the leader has committed. Until then API
// requests wait up to readyHold for it, then get 503 with Retry-After:
// never OpenBao's 500 "active cluster node not found" of a standby that
// restarted and still reads a stale leader from its own storage.
const (
	// maxReadyLag is how many committed entries a ready standby may not
	// have applied yet: one Raft batch (MaxAppendEntries), which a healthy
	// follower under load is often behind by for a moment.
	maxReadyLag = 64
	// readyHold is how long a request waits for its node to become ready.
	readyHold = 2 * time.Second
	// readyPoll is how often a waiting request looks again.
	readyPoll = 20 * time.Millisecond
)

// Readiness is whether a node can answer API requests, and why not.
type Readiness struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"not_ready,omitempty"`
	active bool   // the node is the active one
}

func notReady(format string, args ...any) Readiness {
	return Readiness{Reason: fmt.Sprintf(format, args...)}
}

// readiness looks at the core and at Raft; it never blocks on another node.
func (a *Appliance) readiness() Readiness {
	if a.geo != nil {
		if reason := a.geo.fencedReason(); reason != "" {
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
	if !a.raftH.with(func(r *hraft.Raft) {
		state, commit, contact = r.State(), r.CommitIndex(), r.LastContact()
		leader, _ = r.LeaderWithID()
	}) {
		return notReady("Raft is not running yet")
	}
	if isLeader {
		if state != hraft.Leader {
			return notReady("stepping down: Raft has lost the leadership")
		}
		lease := time.Duration(a.cfg.Raft.PerformanceMultiplier) * 500 * time.Millisecond
		if ok, age := a.leaders.confirmedWithin(lease); !ok {
			return notReady("confirming its leadership with a quorum (last confirmed %s ago)", age.Round(time.Millisecond))
		}
		return Readiness{Ready: true, active: true}
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
	return Readiness{Ready: true}
}

// sameHostPort compares a cluster URL (https://host:port) with a Raft
// address (host:port). OpenBao gives Raft the host:port of each node's
// cluster_addr, so the two are spelt the same; no name is resolved here,
// on every request's path.
func sameHostPort(clusterURL, raftAddr string) bool {
	u, err := url.Parse(clusterURL)
	return err == nil && u.Host == raftAddr
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
func (a *Appliance) readyGate(next http.Handler) http.Handler {
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
			a.health(next, w, r)
			return
		case gateExempt[path]:
			next.ServeHTTP(w, r)
			return
		}
		w = a.geoGuard(w) // no 2xx out once the node cannot vouch for it
		active := false
		if !a.core.Sealed() {
			rd := a.waitReady(r, time.Now().Add(readyHold))
			if !rd.Ready {
				writeError(w, http.StatusServiceUnavailable, fmt.Errorf("this node is not ready: %s; retry in a moment or use another node", rd.Reason))
				return
			}
			active = rd.active
		}
		// Answers OpenBao gives while the leader changes under a request
		// become what they are: the request is sent again once the node
		// is ready (nothing was done), or a 503 says the outcome of a write
		// is unknown. See heldAnswer.
		var body []byte
		replay := false
		if !active {
			body, replay = bufferBody(r)
		}
		noForward := r.Header.Get("X-Vault-No-Request-Forwarding") != "" || strings.HasPrefix(path, "sys/storage/raft/snapshot")
		orig := r
		for attempt := 0; ; attempt++ {
			h := &heldAnswer{w: w, header: http.Header{}}
			req, done, cut := orig, func() {}, func() bool { return false }
			if !active {
				req, done, cut = a.leaders.bound(orig)
			}
			next.ServeHTTP(h, req)
			done()
			failed := time.Now()
			kind := h.kind(noForward)
			if kind == answerAsIs && h.code == http.StatusInternalServerError && cut() {
				// Cancelled by the leader change, not forwarded but handled
				// here as the node became active: whatever OpenBao says, the
				// outcome is not known.
				kind = writeInDoubt
			}
			switch {
			case kind == answerAsIs:
				h.release()
				return
			case kind == writeInDoubt:
				writeError(w, http.StatusServiceUnavailable, errors.New("the active node lost its leadership while committing this request: it may or may not have been applied; retry it"))
				return
			case !replay || attempt == 2 || orig.Context().Err() != nil:
				if kind == forwardFailed {
					h.release() // OpenBao's redirect to the leader, as it would answer
				} else {
					writeError(w, http.StatusServiceUnavailable, errors.New("this node is not ready: the active node changed while the request was forwarded; retry in a moment or use another node"))
				}
				return
			}
			// Nothing was done: once the node is ready again and hears from
			// a leader, send the request again.
			if rd := a.waitFresh(orig, failed, time.Now().Add(readyHold)); !rd.Ready {
				writeError(w, http.StatusServiceUnavailable, fmt.Errorf("this node is not ready: %s; retry in a moment or use another node", rd.Reason))
				return
			}
			orig.Body = io.NopCloser(bytes.NewReader(body))
		}
	})
}

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
}

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
func (w *leaderWatch) run(ctx context.Context, h *raftHandle) {
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
		h.with(func(r *hraft.Raft) {
			h.unpipe()
			state = r.State()
			_, leader = r.LeaderWithID()
			if w.tune != nil {
				w.tune(r)
			}
			w.verify(r, state)
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

// waitFresh is waitReady that also waits for a contact with a leader
// after since (a forward failed then: the leader may be gone though Raft
// has not noticed yet; a live one sends a heartbeat within 100 ms).
func (a *Appliance) waitFresh(r *http.Request, since time.Time, deadline time.Time) Readiness {
	for {
		rd := a.waitReady(r, deadline)
		fresh := false
		a.raftH.with(func(rf *hraft.Raft) { fresh = rf.LastContact().After(since) })
		if !rd.Ready || rd.active || fresh || !time.Now().Before(deadline) || r.Context().Err() != nil {
			return rd
		}
		time.Sleep(readyPoll)
	}
}

// waitReady polls the readiness until it holds or deadline passes.
func (a *Appliance) waitReady(r *http.Request, deadline time.Time) Readiness {
	rd := a.readiness()
	for !rd.Ready && time.Now().Before(deadline) && r.Context().Err() == nil {
		time.Sleep(readyPoll)
		rd = a.readiness()
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

// What a held answer turns out to be.
const (
	answerAsIs    = iota // any answer but those below
	leaderUnknown        // 500 "active cluster node not found", Raft's "not the leader" or "leadership transfer in progress": nothing was done
	forwardFailed        // 307 from a standby whose forward to the active node failed
	writeInDoubt         // 500 "leadership lost while committing log": maybe applied
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
	if code == http.StatusTemporaryRedirect || code == http.StatusInternalServerError {
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
func (h *heldAnswer) kind(noForward bool) int {
	switch {
	case h.wrote || h.code == 0:
		return answerAsIs
	case h.code == http.StatusTemporaryRedirect && !noForward:
		return forwardFailed
	case h.code == http.StatusInternalServerError && (bytes.Contains(h.body.Bytes(), []byte(leaderNotFound)) ||
		bytes.Contains(h.body.Bytes(), []byte(raftNotLeader)) || bytes.Contains(h.body.Bytes(), []byte(raftTransferring))):
		return leaderUnknown
	case h.code == http.StatusInternalServerError && bytes.Contains(h.body.Bytes(), []byte("leadership lost while committing log")):
		return writeInDoubt
	}
	return answerAsIs
}

const (
	leaderNotFound = "active cluster node not found"
	// raftNotLeader is hashicorp/raft's ErrNotLeader: the entry was not
	// appended, nothing was done.
	raftNotLeader = "node is not the leader"
	// raftTransferring is hashicorp/raft's ErrLeadershipTransferInProgress
	// (the Geo reconciler moves leadership): refused before it was
	// appended, nothing was done.
	raftTransferring = "leadership transfer in progress"
)

// health answers sys/health as OpenBao does, with the appliance's
// readiness added: an unsealed node that is not ready answers
// ?notreadycode= (default 503) instead of its active or standby code, and
// the body says why ("appliance_ready", "appliance_not_ready").
func (a *Appliance) health(next http.Handler, w http.ResponseWriter, r *http.Request) {
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
			if rd = a.readiness(); !rd.Ready {
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
