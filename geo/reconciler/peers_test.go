package reconciler

import (
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
)

// Leadership goes to a node only after it has been ready at every poll for
// geoSettleTime: a node ready at one poll and gone at the next (a starved
// or stalled process) starts its wait again, and a node that left the
// configuration is forgotten.
func TestSettledDampensHandBack(t *testing.T) {
	since := map[string]time.Time{}
	t0 := time.Unix(1000, 0)
	ready := []geo.Server{{ID: "a", Healthy: true, CaughtUp: true}, {ID: "b", Healthy: true, CaughtUp: true}}
	trackReady(since, ready, t0)
	if ok, why := settled(since, "b", t0.Add(time.Second)); ok || !strings.Contains(why, "once it has been ready for 5s") {
		t.Fatalf("ready for 1 s: settled=%v %q", ok, why)
	}
	trackReady(since, ready, t0.Add(3*time.Second))
	if ok, _ := settled(since, "b", t0.Add(geoSettleTime)); !ok {
		t.Fatal("ready at every poll for geoSettleTime, yet not settled")
	}
	// One poll finds b slow (unreachable) or catching up: its wait restarts.
	trackReady(since, []geo.Server{ready[0], {ID: "b", Healthy: true}}, t0.Add(6*time.Second))
	if ok, why := settled(since, "b", t0.Add(6*time.Second)); ok || !strings.Contains(why, "once it is ready") {
		t.Fatalf("not ready at the last poll: settled=%v %q", ok, why)
	}
	trackReady(since, ready, t0.Add(7*time.Second))
	if ok, _ := settled(since, "b", t0.Add(7*time.Second+geoSettleTime-time.Millisecond)); ok {
		t.Fatal("the wait did not restart after a poll that found b not ready")
	}
	if ok, _ := settled(since, "b", t0.Add(7*time.Second+geoSettleTime)); !ok {
		t.Fatal("ready again for geoSettleTime, yet not settled")
	}
	// A node removed from the configuration is forgotten.
	trackReady(since, ready[:1], t0.Add(20*time.Second))
	if _, ok := since["b"]; ok {
		t.Fatal("a node gone from the configuration is still tracked")
	}
}
