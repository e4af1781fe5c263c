package appliance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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
	if a.core.Sealed() {
		return notReady("sealed")
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
		active := false
		if !a.core.Sealed() {
			rd := a.waitReady(r, time.Now().Add(readyHold))
			if !rd.Ready {
				writeError(w, http.StatusServiceUnavailable, fmt.Errorf("this node is not ready: %s; retry in a moment or use another node", rd.Reason))
				return
			}
			active = rd.active
		}
		// A standby forwards to the active node, and OpenBao answers 500
		// "active cluster node not found" when its view of the leader
		// changes between our look and its own (a new leader's lock entry
		// replicated before its advertisement; the node unsealed right
		// after we saw it sealed). Nothing was done then, so the request
		// is tried again once the node is ready again.
		var body []byte
		replay := false
		if !active {
			body, replay = bufferBody(r)
		}
		for attempt := 0; ; attempt++ {
			cw := &leaderLostCatcher{ResponseWriter: w}
			next.ServeHTTP(cw, r)
			if !cw.finish() {
				return
			}
			if !replay || attempt > 0 {
				break
			}
			if rd := a.waitReady(r, time.Now().Add(readyHold)); !rd.Ready {
				break
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		writeError(w, http.StatusServiceUnavailable, errors.New("this node is not ready: the active node changed while the request was forwarded; retry in a moment or use another node"))
	})
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

// leaderLostCatcher swallows OpenBao's 500 "local node not active but
// active cluster node not found" (written before anything was done) and
// lets every other answer through.
type leaderLostCatcher struct {
	http.ResponseWriter
	code    int // 500 while the answer is held
	pending bytes.Buffer
}

const leaderNotFound = "active cluster node not found"

func (c *leaderLostCatcher) WriteHeader(code int) {
	if code == http.StatusInternalServerError {
		c.code = code // decided by the body
		return
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *leaderLostCatcher) Write(b []byte) (int, error) {
	if c.code != http.StatusInternalServerError {
		return c.ResponseWriter.Write(b)
	}
	c.pending.Write(b)
	if c.pending.Len() > 512 {
		return len(b), c.flush()
	}
	return len(b), nil
}

// flush lets a held 500 through as it is.
func (c *leaderLostCatcher) flush() error {
	c.code = 0
	c.ResponseWriter.WriteHeader(http.StatusInternalServerError)
	_, err := c.ResponseWriter.Write(c.pending.Bytes())
	return err
}

// finish ends the answer: true if it was the leader-not-found 500, which
// was swallowed.
func (c *leaderLostCatcher) finish() bool {
	if c.code != http.StatusInternalServerError {
		return false
	}
	if bytes.Contains(c.pending.Bytes(), []byte(leaderNotFound)) {
		return true
	}
	c.flush()
	return false
}

func (c *leaderLostCatcher) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok && c.code != http.StatusInternalServerError {
		f.Flush()
	}
}

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
