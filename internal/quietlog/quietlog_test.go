package quietlog

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// The healthy-start noise is lowered; the same messages about a peer that
// stays unreachable come back at their level after the grace; anything
// else keeps its level.
func TestQuietLogger(t *testing.T) {
	var out bytes.Buffer
	now := time.Unix(1_700_000_000, 0)
	l := New(hclog.NewInterceptLogger(&hclog.LoggerOptions{Output: &out, Level: hclog.Info})).(quietLogger)
	l.q.now = func() time.Time { return now }
	raft := l.Named("storage.raft")

	raft.Warn("heartbeat timeout reached, starting election", "last-leader-addr", "", "last-leader-id", "")
	raft.Warn("heartbeat timeout reached, starting election", "last-leader-addr", "10.0.0.1:8201", "last-leader-id", "gitlab-1")
	l.Error("failed to unlock initialization lock", "error", "cannot find peer")
	l.Named("core.cluster-listener").Warn("no TLS certs found for ALPN", "ALPN", []string{"raft_storage_v1"})
	l.Named("core").Info("security barrier not initialized")
	for range 5 {
		raft.Error("failed to appendEntries to", "peer", "{Voter gitlab-2 10.0.0.2:8201}", "error", "connection refused")
		now = now.Add(3 * time.Second)
	}
	// 15 s unreachable, failing every 3 s: a real problem now.
	raft.Error("failed to appendEntries to", "peer", "{Voter gitlab-2 10.0.0.2:8201}", "error", "connection refused")
	l.Error("something else went wrong")
	// A restarted node's election refused while the others have a leader:
	// info at first, a warning once it keeps failing for 15 s.
	for range 2 {
		raft.Warn("Election timeout reached, restarting election")
		now = now.Add(2 * time.Second)
	}
	now = now.Add(time.Minute) // the streak ended: the node followed
	for range 9 {
		raft.Warn("Election timeout reached, restarting election")
		now = now.Add(2 * time.Second)
	}

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		"[INFO]  storage.raft: heartbeat timeout reached",
		"[WARN]  storage.raft: heartbeat timeout reached",
		"", // the init lock line is at debug: not logged at info
		"", // the cluster listener before Raft's handler: debug too
		"", // a status read before init: debug
		"[INFO]  storage.raft: failed to appendEntries to",
		"[INFO]  storage.raft: failed to appendEntries to",
		"[INFO]  storage.raft: failed to appendEntries to",
		"[INFO]  storage.raft: failed to appendEntries to",
		"[INFO]  storage.raft: failed to appendEntries to",
		"[ERROR] storage.raft: failed to appendEntries to",
		"[ERROR] something else went wrong",
		"[INFO]  storage.raft: Election timeout reached",
		"[INFO]  storage.raft: Election timeout reached",
		"[INFO]  storage.raft: Election timeout reached", // a new streak: 0 s
		"[INFO]  storage.raft: Election timeout reached", // 2 s
		"[INFO]  storage.raft: Election timeout reached",
		"[INFO]  storage.raft: Election timeout reached",
		"[INFO]  storage.raft: Election timeout reached",
		"[INFO]  storage.raft: Election timeout reached",
		"[INFO]  storage.raft: Election timeout reached",
		"[INFO]  storage.raft: Election timeout reached", // 14 s
		"[WARN]  storage.raft: Election timeout reached", // 16 s: failing for longer than peerGrace
	}
	var got []string
	for _, w := range want {
		if w != "" {
			got = append(got, w)
		}
	}
	if len(lines) != len(got) {
		t.Fatalf("logged %d lines, want %d:\n%s", len(lines), len(got), out.String())
	}
	for i, w := range got {
		if !strings.Contains(lines[i], w) {
			t.Errorf("line %d: %q, want %q", i, lines[i], w)
		}
	}
	// sys/monitor asserts an InterceptLogger on the core's logger.
	var _ hclog.InterceptLogger = l.NamedIntercept("x")
	if _, ok := l.Named("core").(hclog.InterceptLogger); !ok {
		t.Fatal("Named does not keep the InterceptLogger")
	}
}
