package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// A request is applied at most once. A client writes through a standby,
// the standby forwards it to the leader, the leader commits it, and its
// answer is lost (held back on the leader's cluster port) while the
// leader steps down: the standby cannot know whether the request was
// applied, so it must not send it again to the new leader. Each request
// is applied exactly once (the test sees the leader apply it before the
// step-down) and its client is answered 503 "outcome unknown" (or the true
// result, never a definite error for what happened).
func TestAtMostOnceForwardedAnswerLost(t *testing.T) {
	c := newCluster(t, clusterOptions{size: 3, faultProxies: true})
	defer c.stop()
	c.mountKV()
	hc := &http.Client{Timeout: 3 * time.Minute}

	type request struct {
		name   string
		method string
		path   func() string
		body   func(t *testing.T, leader *member) []byte
		// count is how many times the request was applied so far, read
		// on m (the leader: its own reads are local).
		count func(t *testing.T, m *member) int
	}
	kvVersion := func(key string) func(t *testing.T, m *member) int {
		return func(t *testing.T, m *member) int {
			code, body := c.do(t, hc, m, "GET", "/v1/kv/metadata/"+key, nil)
			if code == http.StatusNotFound {
				return 0
			}
			var md struct {
				Data struct {
					CurrentVersion int `json:"current_version"`
				} `json:"data"`
			}
			if code != http.StatusOK || json.Unmarshal(body, &md) != nil {
				t.Fatalf("kv metadata of %s on %s: %d %s", key, m.id, code, body)
			}
			return md.Data.CurrentVersion
		}
	}
	for _, rq := range []request{
		{
			name: "kv put", method: "PUT",
			path:  func() string { return "/v1/kv/data/once-put" },
			body:  func(*testing.T, *member) []byte { return []byte(`{"data":{"v":"put"}}`) },
			count: kvVersion("once-put"),
		},
		{
			name: "kv check-and-set", method: "PUT",
			path: func() string { return "/v1/kv/data/once-cas" },
			body: func(t *testing.T, leader *member) []byte {
				return fmt.Appendf(nil, `{"options":{"cas":%d},"data":{"v":"cas"}}`, kvVersion("once-cas")(t, leader))
			},
			count: kvVersion("once-cas"),
		},
		{
			name: "token create", method: "POST",
			path: func() string { return "/v1/auth/token/create" },
			body: func(*testing.T, *member) []byte { return []byte(`{"policies":["default"],"ttl":"1h"}`) },
			count: func(t *testing.T, m *member) int {
				code, body := c.do(t, hc, m, "LIST", "/v1/auth/token/accessors", nil)
				var out struct {
					Data struct {
						Keys []string `json:"keys"`
					} `json:"data"`
				}
				if code != http.StatusOK || json.Unmarshal(body, &out) != nil {
					t.Fatalf("token accessors on %s: %d %s", m.id, code, body)
				}
				return len(out.Data.Keys)
			},
		},
	} {
		t.Run(strings.ReplaceAll(rq.name, " ", "-"), func(t *testing.T) {
			leader := c.leader()
			via := c.others(leader)[0]
			waitState(t, c.tr, c.bin, via.addr, "standby")
			harness.Eventually(t, time.Minute, via.id+" to be ready", func() bool {
				st, _ := status(t, c.tr, c.bin, via.addr)
				return st.Ready
			})
			// Forwarding from via works (a write goes through) before the
			// leader's answers are held.
			harness.Eventually(t, time.Minute, "a write through "+via.id, func() bool {
				code, _ := c.do(t, hc, via, "PUT", "/v1/kv/data/once-warmup", []byte(`{"data":{"v":"x"}}`))
				return code == http.StatusOK
			})
			before := rq.count(t, leader)
			body := rq.body(t, leader)

			leader.proxy.HoldReplies()
			defer leader.proxy.Release()
			type answer struct {
				code int
				body []byte
				err  error
			}
			answered := make(chan answer, 1)
			go func() {
				req, _ := http.NewRequest(rq.method, via.addr+rq.path(), bytes.NewReader(body))
				req.Header.Set("X-Vault-Token", c.res.RootToken)
				resp, err := hc.Do(req)
				if err != nil {
					answered <- answer{err: err}
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				answered <- answer{code: resp.StatusCode, body: b}
			}()
			// The leader applies it; its answer to the standby is held.
			harness.Eventually(t, time.Minute, leader.id+" to apply the forwarded "+rq.name, func() bool {
				return rq.count(t, leader) > before
			})
			if code, b := c.do(t, hc, leader, "PUT", "/v1/sys/step-down", nil); code != http.StatusNoContent {
				t.Fatalf("step-down on %s: %d %s", leader.id, code, b)
			}
			var got answer
			select {
			case got = <-answered:
			case <-time.After(2 * time.Minute):
				t.Fatalf("%s did not answer the forwarded %s", via.id, rq.name)
			}
			leader.proxy.Release()
			if got.err != nil {
				t.Fatalf("%s: %v", rq.name, got.err)
			}
			now := c.leader()
			shown := got.body // the answer, without the credential a 2xx carries
			if got.code/100 == 2 {
				shown = nil
			}
			if n := rq.count(t, now) - before; n != 1 {
				t.Errorf("%s applied %d times (answered %d %s)", rq.name, n, got.code, shown)
			}
			switch {
			case got.code == http.StatusServiceUnavailable && bytes.Contains(got.body, []byte("outcome unknown")):
				// Told that it cannot know.
			case got.code/100 == 2:
				// The true result reached the client after all.
			default:
				t.Errorf("%s answered %d %s: neither its result nor \"outcome unknown\"", rq.name, got.code, got.body)
			}
			t.Logf("%s through %s, leader %s stepped down: answered %d %s", rq.name, via.id, leader.id, got.code, bytes.TrimSpace(shown))
		})
	}
}

// do sends one request to m with the root token and returns the answer.
func (c *cluster) do(t *testing.T, hc *http.Client, m *member, method, path string, body []byte) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, m.addr+path, bytes.NewReader(body))
	req.Header.Set("X-Vault-Token", c.res.RootToken)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, m.id, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}
