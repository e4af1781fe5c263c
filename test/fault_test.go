package test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// health is sys/health's answer on one node, with the appliance's
// readiness.
func health(hc *http.Client, addr string) (int, map[string]any) {
	resp, err := hc.Get(addr + "/v1/sys/health?standbyok=true")
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// The scenario as a test: a 3-node cluster under 4 writers, kill
// -9 of the leader, restart and unseal 15 s later. No acknowledged write is
// lost, no node answers 500 at any time (a node that is not ready says so
// with 503 and Retry-After), and the restarted node is not ready until it
// has caught up, then ready.
func TestLeaderKillUnderLoad(t *testing.T) {
	c := newCluster(t, clusterOptions{size: 3})
	defer c.stop()
	c.mountKV()
	l := startLoad(c, 4)
	acks := func() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.acks) }
	harness.Eventually(t, time.Minute, "writes before the fault", func() bool { return acks() > 200 })

	old := c.leader()
	// The default heartbeat timeout (500 ms) is what Raft runs with.
	for _, m := range c.nodes {
		harness.Eventually(t, time.Minute, m.id+"'s Raft timing", func() bool {
			st, _ := status(t, c.tr, c.bin, m.addr)
			return st.Raft.HeartbeatTimeout == "500ms"
		})
	}
	killed := time.Now()
	c.kill(old)
	before := acks()
	harness.Eventually(t, time.Minute, "writes after the leader's death", func() bool { return acks() > before+100 })
	newLeader := c.leader()
	gap := l.maxGap(killed, time.Now())

	// The scenario restarts the old leader 15 s after its death.
	time.Sleep(time.Until(killed.Add(15 * time.Second)))
	c.start(old)
	started := time.Now()
	c.unseal(old)
	hc := &http.Client{Timeout: 5 * time.Second}
	var notReady []string
	var readyAt time.Time
	harness.Eventually(t, 2*time.Minute, old.id+" to be ready", func() bool {
		code, body := health(hc, old.addr)
		if code == http.StatusOK {
			readyAt = time.Now()
			return true
		}
		if r, _ := body["appliance_not_ready"].(string); r != "" && (len(notReady) == 0 || notReady[len(notReady)-1] != r) {
			notReady = append(notReady, r)
		}
		return false
	})
	before = acks()
	harness.Eventually(t, time.Minute, "writes through every node after the restart", func() bool { return acks() > before+200 })
	l.stop()

	acked, lost := l.verify(t, newLeader)
	t.Logf("acknowledged %d keys, lost %d; write gap after the kill %s; %s not ready for %s after its start (%s)",
		acked, lost, gap.Round(time.Millisecond), old.id, readyAt.Sub(started).Round(time.Millisecond), strings.Join(notReady, "; "))
	t.Logf("answers: %s", l.kindsSummary())
	if lost != 0 {
		t.Errorf("%d acknowledged writes lost", lost)
	}
	if bad := l.serverErrors(); len(bad) > 0 {
		t.Errorf("%d answers were server errors other than 503, e.g.:\n%s", len(bad), strings.Join(bad[:min(len(bad), 10)], "\n"))
	}
	for k, n := range l.kinds {
		if strings.Contains(k, "no Retry-After") {
			t.Errorf("%d answers %q", n, k)
		}
	}
}
