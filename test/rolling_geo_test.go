package test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// A rolling restart of a 3 + 2 Geo cluster (site A's three nodes vote,
// site B's two are non-voting replicas; every node unseals by SoftHSM but
// node-5, by shares only) under 4 writers, one of them writing through a
// site B node: site B's non-voters restart first, then site A's followers,
// the active node last after its leadership moved to another site A node;
// node-5 comes back sealed and the command says it waits for shares until
// the share holders (this test) bring them. The operator runs it as on
// Omnibus nodes, `gitlab-ctl secrets-appliance rolling-restart`, and is
// told to run `gitlab-ctl secrets-appliance unseal` on node-5's host. Every node restarts once, the
// Geo reconciler ends converged with site A's three voters and a site A
// leader, no acknowledged write is lost (read back through a site A and a
// site B node) and no answer is a 5xx other than 503.
func TestRollingRestartGeo(t *testing.T) {
	hsm := harness.NewSoftHSM(t, "gitlab-secrets")
	hsm.GenerateAESKey(t, "kek")
	c := newCluster(t, clusterOptions{geo: &geoLayout{sites: []int{3, 2}}, env: hsm.Env(), seals: func(i int, dir string) string {
		if i == 4 {
			return "seal {\n  shamir {\n    shares = 3\n    threshold = 2\n  }\n}\n"
		}
		return hsmSeal(t, hsm, dir, "kek", true)
	}})
	defer c.stop()
	siteA := []string{"node-1", "node-2", "node-3"}
	c.waitGeo("site A's 3 voters", converged(siteA, ""))
	c.mountKV()
	lead := c.leader()
	if !slices.Contains(siteA, lead.id) {
		t.Fatalf("the active node is %s, not a site A node", lead.id)
	}

	l := startLoad(c, 4) // writer 3 writes through node-4, in site B
	defer l.stop()
	r := rollingRestartGitlabCtl(t, c, c.byID("node-4"))
	gap := l.maxGap(r.started, r.started.Add(r.took))
	t.Logf("rolling-restart of 3 + 2 took %s, write gap %s:\n%s", r.took.Round(time.Second), gap, r.out)
	r.checkEachOnce(t, c)
	r.checkActiveLast(t, c, lead)
	r.checkHandedOver(t, lead)
	// Site B's non-voters first: a site A voter restarting while the
	// others restart would cost the quorum, a non-voter nothing.
	for _, b := range []string{"node-4", "node-5"} {
		for _, a := range siteA {
			if r.restartedAt(b) > r.restartedAt(a) {
				t.Errorf("site B's non-voter %s restarted after site A's voter %s:\n%s", b, a, r.out)
			}
		}
	}
	if !strings.Contains(r.out, "node-5 is back, sealed, and waits for Shamir shares") {
		t.Errorf("the command did not say node-5 waits for shares:\n%s", r.out)
	}
	if !strings.Contains(r.out, "share holders, run `gitlab-ctl secrets-appliance unseal` on node-5's host") ||
		strings.Contains(r.out, "gitlab-secrets-appliance unseal --address") {
		t.Errorf("run through gitlab-ctl, the command does not tell node-5's share holders to run gitlab-ctl's unseal:\n%s", r.out)
	}
	if strings.Contains(r.out, "node-4 is back, sealed, and waits") {
		t.Errorf("node-4 (HSM) waited for shares:\n%s", r.out)
	}
	st := c.waitGeo("site A's 3 voters after the rolling restart", converged(siteA, ""))
	if _, leader := geoVoters(st); !slices.Contains(siteA, leader) {
		t.Errorf("the leader after the rolling restart is %s, not a site A node", leader)
	}
	l.finish(t, c.leader(), c.byID("node-5"))
}
