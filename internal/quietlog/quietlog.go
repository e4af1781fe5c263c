// Package quietlog is the hclog wrapper the appliance logs through: it
// lowers the warnings and errors that OpenBao and hashicorp/raft log on
// every healthy start, join, unseal and planned restart, and keeps the
// real ones at their level.
package quietlog

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// OpenBao and hashicorp/raft log at warn and error what happens on every
// healthy start, join, unseal and planned restart (a join target not up
// yet, the cluster listener before its TLS keyring, Raft catching a new
// follower up, a peer restarting). Operators who see such lines every day
// learn to ignore them, and then miss the real ones. quietLogger lowers
// exactly those to info or debug; a peer that stays unreachable longer
// than peerGrace is logged at its original level again.
const (
	// peerGrace is how long an unreachable peer is a restart, not a problem.
	peerGrace = 15 * time.Second
	// streakGap ends an unreachable streak: the peer answered meanwhile.
	streakGap = 5 * time.Second
)

// quietRule lowers a message to level when it matches.
type quietRule struct {
	msg   string            // the message starts with this
	args  map[string]string // and these args contain these texts ("" = empty value)
	level hclog.Level
}

var quietRules = []quietRule{
	// The cluster listener before the TLS keyring (start, join).
	{msg: "no TLS config found for ALPN", level: hclog.Debug},
	{msg: "no TLS certs found for ALPN", level: hclog.Debug}, // its server-side twin
	{msg: "cluster listener is already started", level: hclog.Debug},
	// Every status, health or summary read before init asks the core.
	{msg: "security barrier not initialized", level: hclog.Debug},
	// The only voter stepping down as it stops: Raft finds nobody to hand
	// the leadership to.
	{msg: "unlocking HA lock failed", args: map[string]string{"error": "cannot find peer"}, level: hclog.Debug},
	// A leader that handed its leadership over as it stops (or lost it):
	// the new leader advertises itself, the old one has nothing to clear.
	{msg: "clearing leader advertisement failed", args: map[string]string{"error": "node is not the leader"}, level: hclog.Info},
	{msg: "unlocking HA lock failed", args: map[string]string{"error": "node is not the leader"}, level: hclog.Info},
	// Init on Raft: the HA init lock's unlock after Raft was torn down.
	{msg: "failed to unlock initialization lock", args: map[string]string{"error": "cannot find peer"}, level: hclog.Debug},
	// Init: postUnseal upgrades the seal keys before the recovery key exists.
	{msg: "post-unseal upgrade seal keys failed", args: map[string]string{"error": "no recovery key found"}, level: hclog.Debug},
	// A first election (no leader before).
	{msg: "heartbeat timeout reached, starting election", args: map[string]string{"last-leader-id": ""}, level: hclog.Info},
	// A restarted or joining node: its first heartbeat timeout (the
	// configured one, see raftx.TuneTimeouts) may pass before the leader
	// reached it. A non-voter or a node not yet in the configuration
	// stands nowhere; a pre-vote it sends is refused by nodes that have a
	// leader.
	{msg: "heartbeat timeout reached, not part of a stable configuration or a non-voter", level: hclog.Info},
	{msg: "rejecting pre-vote request since we have a leader", level: hclog.Info},
	// Raft bringing a new or restarted follower up to date.
	{msg: "skipping application of old log", level: hclog.Info},
	{msg: "failed to get previous log", level: hclog.Info},
	{msg: "appendEntries rejected, sending older logs", level: hclog.Info},
	{msg: "peer has newer term, stopping replication", level: hclog.Info},
	// This node's own Raft transport shutting down.
	{msg: "failed to decode incoming command", args: map[string]string{"error": "transport shutdown"}, level: hclog.Debug},
	{msg: "failed to accept connection", args: map[string]string{"error": "Raft RPC layer closed"}, level: hclog.Debug},
	// Leadership moved on while this node was taking the HA lock; retried.
	{msg: "failed to acquire lock", args: map[string]string{"error": "leadership lost"}, level: hclog.Info},
	// A joining node waiting for operators' shares.
	{msg: "failed to retry join raft cluster", args: map[string]string{"err": "the seal's key is not available"}, level: hclog.Info},
}

// peerMessages are about a peer that does not answer; the arg names the
// peer. A failed election is one too: a restarted node whose heartbeat
// timeout passed before the leader reached it stands for election, the
// others refuse its pre-vote (they have a leader), and its election times
// out once or twice until the leader's heartbeat arrives; a node whose
// elections keep failing for peerGrace is a real problem.
var peerMessages = map[string]string{
	"Election timeout reached, restarting election": "",
	"failed to appendEntries to":                    "peer",
	"failed to heartbeat to":                        "peer",
	"failed to make requestVote RPC":                "target",
	"failed to contact":                             "server-id",
	"failed to get raft challenge":                  "leader_addr",
	"failed to retry join raft cluster":             "err",
}

// quieter holds the unreachable-peer streaks, shared by every logger
// derived from one root.
type quieter struct {
	mu      sync.Mutex
	streaks map[string][2]time.Time // peer -> first and last failure
	now     func() time.Time
}

// level is the level msg is logged at.
func (q *quieter) level(level hclog.Level, msg string, args []any) hclog.Level {
	if level < hclog.Info {
		return level
	}
	for _, r := range quietRules {
		if strings.HasPrefix(msg, r.msg) && argsMatch(args, r.args) {
			return min(level, r.level) // a rule never raises
		}
	}
	if level < hclog.Warn {
		return level
	}
	for prefix, arg := range peerMessages {
		if strings.HasPrefix(msg, prefix) {
			return q.peer(level, prefix+" "+argValue(args, arg))
		}
	}
	return level
}

// peer lowers a failure to reach a peer during its first peerGrace.
func (q *quieter) peer(level hclog.Level, key string) hclog.Level {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	s, ok := q.streaks[key]
	if !ok || now.Sub(s[1]) > streakGap {
		s[0] = now
	}
	s[1] = now
	q.streaks[key] = s
	if now.Sub(s[0]) < peerGrace {
		return hclog.Info
	}
	return level
}

func argValue(args []any, name string) string {
	for i := 0; i+1 < len(args); i += 2 {
		if k, _ := args[i].(string); k == name {
			v := fmt.Sprint(args[i+1])
			if name == "err" {
				// Join errors name no peer: one streak for all of them.
				return ""
			}
			return v
		}
	}
	return ""
}

func argsMatch(args []any, want map[string]string) bool {
	for name, text := range want {
		found := false
		for i := 0; i+1 < len(args); i += 2 {
			if k, _ := args[i].(string); k == name {
				v := fmt.Sprint(args[i+1])
				found = text == "" && v == "" || text != "" && strings.Contains(v, text)
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// quietLogger is an hclog.InterceptLogger (OpenBao's sys/monitor needs
// one) that logs through quieter's levels.
type quietLogger struct {
	hclog.InterceptLogger
	q *quieter
}

// New is l logging through quieter's levels.
func New(l hclog.InterceptLogger) hclog.InterceptLogger {
	return quietLogger{l, &quieter{streaks: map[string][2]time.Time{}, now: time.Now}}
}

func (l quietLogger) Log(level hclog.Level, msg string, args ...any) {
	l.InterceptLogger.Log(l.q.level(level, msg, args), msg, args...)
}
func (l quietLogger) Trace(msg string, args ...any) { l.Log(hclog.Trace, msg, args...) }
func (l quietLogger) Debug(msg string, args ...any) { l.Log(hclog.Debug, msg, args...) }
func (l quietLogger) Info(msg string, args ...any)  { l.Log(hclog.Info, msg, args...) }
func (l quietLogger) Warn(msg string, args ...any)  { l.Log(hclog.Warn, msg, args...) }
func (l quietLogger) Error(msg string, args ...any) { l.Log(hclog.Error, msg, args...) }

func (l quietLogger) wrap(n hclog.Logger) hclog.Logger {
	if il, ok := n.(hclog.InterceptLogger); ok {
		return quietLogger{il, l.q}
	}
	return n
}

func (l quietLogger) With(args ...any) hclog.Logger    { return l.wrap(l.InterceptLogger.With(args...)) }
func (l quietLogger) Named(name string) hclog.Logger   { return l.NamedIntercept(name) }
func (l quietLogger) ResetNamed(n string) hclog.Logger { return l.ResetNamedIntercept(n) }
func (l quietLogger) NamedIntercept(name string) hclog.InterceptLogger {
	return quietLogger{l.InterceptLogger.NamedIntercept(name), l.q}
}
func (l quietLogger) ResetNamedIntercept(name string) hclog.InterceptLogger {
	return quietLogger{l.InterceptLogger.ResetNamedIntercept(name), l.q}
}
