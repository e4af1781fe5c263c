package test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openbao/openbao/api/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// A rolling restart of a 3-node cluster (two nodes unseal by SoftHSM, one
// by shares only) under 4 writers: every node restarts once, one at a
// time, the active node last after its leadership moved; the Shamir node
// comes back sealed and the command says it waits for shares until the
// share holders (this test) bring them. No acknowledged write is lost and
// no answer is a 5xx other than 503. The test is the nodes' supervisor: a
// node that exits with 75 (a restart was asked for) is started again, as
// systemd's Restart=on-failure and runit do (neither runs here as PID 1).
// The active node hands its leadership over within its restart (a Raft
// transfer, not sys/step-down, whose 10 s back-off its stop would wait
// out). A restart without a token, with a token lacking sudo (on the
// active node too, with hand_over), of the active node without hand_over,
// or with a malformed body is refused, and the nodes keep running, the
// leadership where it was.
func TestRollingRestart(t *testing.T) {
	hsm := harness.NewSoftHSM(t, "gitlab-secrets")
	hsm.GenerateAESKey(t, "kek")
	c := newCluster(t, clusterOptions{size: 3, env: hsm.Env(), seals: func(i int, dir string) string {
		if i == 2 {
			return "seal {\n  shamir {\n    shares = 3\n    threshold = 2\n  }\n}\n"
		}
		return hsmSeal(t, hsm, dir, "kek", true)
	}})
	defer c.stop()
	c.mountKV()
	hc := c.httpClient()

	// The attacks first: nobody restarts a node without sudo.
	lead := c.leader()
	other := c.others(lead)[0]
	limited := createToken(t, c.client(lead), `path "kv/*" { capabilities = ["create", "read", "update"] }`)
	for _, tc := range []struct {
		who, addr, token, body string
		code                   int
	}{
		{"no token", other.addr, "", "{}", http.StatusForbidden},
		{"a forged token", other.addr, "s.forged", "{}", http.StatusForbidden},
		{"a token without sudo", other.addr, limited, "{}", http.StatusForbidden},
		{"the root token, on the active node", lead.addr, c.res.RootToken, "", http.StatusConflict},
		{"a token without sudo, on the active node, with hand_over", lead.addr, limited, `{"hand_over": true}`, http.StatusForbidden},
		{"a body that is no restart request", other.addr, c.res.RootToken, `{"hand_over": "yes"}`, http.StatusBadRequest},
	} {
		req, _ := http.NewRequest("POST", tc.addr+"/appliance/v1/restart", strings.NewReader(tc.body))
		if tc.token != "" {
			req.Header.Set("X-Vault-Token", tc.token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("restart with %s: %v", tc.who, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Fatalf("restart with %s: %d, want %d", tc.who, resp.StatusCode, tc.code)
		}
	}
	for _, m := range c.nodes {
		if m.n.Exited() {
			t.Fatalf("%s stopped after a refused restart", m.id)
		}
	}
	if now := c.leader(); now != lead {
		t.Fatalf("a refused restart moved the leadership from %s to %s", lead.id, now.id)
	}

	l := startLoad(c, 4)
	defer l.stop()
	r := rollingRestart(t, c, other)
	t.Logf("rolling-restart took %s, write gap %s:\n%s", r.took.Round(time.Second), l.maxGap(r.started, r.started.Add(r.took)), r.out)
	r.checkEachOnce(t, c)
	r.checkActiveLast(t, c, lead)
	r.checkHandedOver(t, lead)
	if !strings.Contains(r.out, c.nodes[2].id+" is back, sealed, and waits for Shamir shares") ||
		!strings.Contains(r.out, "share holders, run `gitlab-secrets-appliance unseal --address "+c.nodes[2].addr+"`") {
		t.Errorf("the command did not say the Shamir node waits for shares, and the command its share holders run:\n%s", r.out)
	}
	c.leader()
	l.stop()
	if acked, lost := l.verify(t, c.leader()); lost > 0 || acked == 0 {
		t.Errorf("%d of %d acknowledged writes lost", lost, acked)
	}
	if bad := l.serverErrors(); len(bad) > 0 {
		t.Errorf("%d answers were server errors other than 503, e.g.:\n%s", len(bad), strings.Join(bad[:min(len(bad), 10)], "\n"))
	}
}

// createToken makes a token whose only policy is rules.
func createToken(t *testing.T, c *api.Client, rules string) string {
	t.Helper()
	if err := c.Sys().PutPolicy("limited", rules); err != nil {
		t.Fatal(err)
	}
	sec, err := c.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"limited"}, NoDefaultPolicy: true})
	if err != nil {
		t.Fatal(err)
	}
	return sec.Auth.ClientToken
}
