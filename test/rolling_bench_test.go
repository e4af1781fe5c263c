package test

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// TestRollingRestartBench is `make bench`'s rolling restart section
// (GSA_BENCH_ROLLING=1; figures, no assertions on them but the checks
// every rolling restart test makes): a 3-node cluster and a 3 + 2 Geo
// cluster, every node unsealed by SoftHSM (no share holders to wait
// for), 4 writers, each rolling restart timed; the figure that matters is
// the longest gap between two acknowledged writes while it runs.
func TestRollingRestartBench(t *testing.T) {
	if os.Getenv("GSA_BENCH_ROLLING") == "" {
		t.Skip("a benchmark: make bench runs it (GSA_BENCH_ROLLING=1)")
	}
	var rows [][2]string
	for _, tc := range []struct {
		name string
		geo  *geoLayout
		size int
	}{
		{"3 nodes", nil, 3},
		{"3 + 2 Geo nodes", &geoLayout{sites: []int{3, 2}}, 0},
	} {
		hsm := harness.NewSoftHSM(t, "gitlab-secrets")
		hsm.GenerateAESKey(t, "kek")
		c := newCluster(t, clusterOptions{size: tc.size, geo: tc.geo, env: hsm.Env(), seals: func(i int, dir string) string {
			return hsmSeal(t, hsm, dir, "kek", true)
		}})
		c.mountKV()
		lead := c.leader()
		l := startLoad(c, 4)
		r := rollingRestart(t, c, c.others(lead)[0])
		gap := l.maxGap(r.started, r.started.Add(r.took))
		r.checkEachOnce(t, c)
		r.checkActiveLast(t, c, lead)
		c.leader()
		l.stop()
		acked, lost := l.verify(t, c.leader())
		rows = append(rows,
			[2]string{tc.name + ", longest write gap", gap.Round(time.Millisecond).String()},
			[2]string{tc.name + ", whole rolling restart", r.took.Round(100 * time.Millisecond).String()},
			[2]string{tc.name + ", each node (restart to caught up)", strings.Join(nodeTimes(r.out), ", ")},
			[2]string{tc.name + ", acknowledged keys read back", fmt.Sprintf("%d (lost %d), 5xx other than 503: %d", acked, lost, len(l.serverErrors()))})
		c.stop()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nRolling restart (4 writers, every node unsealed by SoftHSM, on this machine)\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-55s %s\n", r[0], r[1])
	}
	t.Log(b.String())
}

var nodeTimeRe = regexp.MustCompile(`\] (\S+) restarted, unsealed and caught up \(([^)]+)\)`)

// nodeTimes are the command's per-node times, "node-2 1.1s", in its order.
func nodeTimes(out string) []string {
	var times []string
	for _, m := range nodeTimeRe.FindAllStringSubmatch(out, -1) {
		times = append(times, m[1]+" "+m[2])
	}
	return times
}
