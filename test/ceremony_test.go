package test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// call sends method path (under addr) with body as JSON and token, and
// returns the status and the answer's text.
func call(t *testing.T, hc *http.Client, method, url, token string, body any, header ...string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// makeToken creates a token with a policy of the given HCL.
func makeToken(t *testing.T, hc *http.Client, addr, root, name, hcl string) string {
	t.Helper()
	if code, out := call(t, hc, "PUT", addr+"/v1/sys/policies/acl/"+name, root, map[string]string{"policy": hcl}); code/100 != 2 {
		t.Fatalf("policy %s: %d %s", name, code, out)
	}
	code, out := call(t, hc, "POST", addr+"/v1/auth/token/create", root, map[string]any{"policies": []string{name}, "ttl": "1h"})
	var tok struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(out), &tok) != nil || tok.Auth.ClientToken == "" {
		t.Fatalf("token with %s: %d %s", name, code, out)
	}
	return tok.Auth.ClientToken
}

// Every key ceremony of OpenBao (generate-root, the legacy rekey and
// recovery-key rekey, their authenticated sys/rotate forms) needs a token
// with sudo on its path on top of its keys: with no token, with a
// GitLab-like token (a normal policy) and with a token that may do
// anything under sys/ but sudo, every request (start, status, update,
// cancel) is refused with 403 and nothing starts. The root token starts
// and cancels generate-root, a root key and a recovery-key rotation; the
// legacy rekey endpoints are off (404, 405), as newer OpenBao has them.
func TestKeyCeremoniesNeedSudo(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	addr, res := startActive(t, tr, bin, "--shares", "3", "--threshold", "2")
	hc := &http.Client{Timeout: 30 * time.Second}
	root := res.RootToken
	tokens := map[string]string{
		"no token":       "",
		"GitLab-like":    makeToken(t, hc, addr, root, "gitlab-like", `path "secrets/*" { capabilities = ["create", "read", "update", "delete", "list"] }`),
		"sys/* but sudo": makeToken(t, hc, addr, root, "sys-no-sudo", `path "sys/*" { capabilities = ["create", "read", "update", "delete", "list"] }`),
		"a forged token": "s.not-a-token",
	}

	rk := res.RecoveryKeys[0]
	ceremonies := []struct{ method, path string }{
		{"PUT", "sys/generate-root/attempt"},
		{"POST", "sys/generate-root/attempt"},
		{"GET", "sys/generate-root/attempt"},
		{"DELETE", "sys/generate-root/attempt"},
		{"PUT", "sys/generate-root/update"},
		{"PUT", "sys/generate-root"},
		{"PUT", "sys/generate-recovery-token/attempt"},
		{"PUT", "sys/rekey/init"},
		{"GET", "sys/rekey/init"},
		{"DELETE", "sys/rekey/init"},
		{"PUT", "sys/rekey/update"},
		{"PUT", "sys/rekey/verify"},
		{"GET", "sys/rekey/backup"},
		{"PUT", "sys/rekey-recovery-key/init"},
		{"PUT", "sys/rekey-recovery-key/init/"},
		{"DELETE", "sys/rekey-recovery-key/init"},
		{"PUT", "sys/rekey-recovery-key/update"},
		{"PUT", "sys/rekey-recovery-key/verify"},
		{"PUT", "sys/rotate/root/init"},
		{"PUT", "sys/rotate/root/update"},
		{"PUT", "sys/rotate/recovery/init"},
		{"DELETE", "sys/rotate/recovery/init"},
		{"PUT", "sys/rotate/recovery/update"},
	}
	body := map[string]any{"secret_shares": 3, "secret_threshold": 2, "key": rk, "nonce": "00000000-0000-0000-0000-000000000000"}
	for who, tok := range tokens {
		for _, c := range ceremonies {
			b := any(body)
			if c.method == "GET" || c.method == "DELETE" {
				b = nil
			}
			code, out := call(t, hc, c.method, addr+"/v1/"+c.path, tok, b)
			if code != http.StatusForbidden || !strings.Contains(out, "permission denied") {
				t.Errorf("%s: %s %s: %d %s, want 403 permission denied", who, c.method, c.path, code, strings.TrimSpace(out))
			}
		}
	}
	// Nothing started.
	for _, p := range []string{"sys/generate-root/attempt", "sys/rotate/recovery/init"} {
		code, out := call(t, hc, "GET", addr+"/v1/"+p, root, nil)
		if code != http.StatusOK || !strings.Contains(out, `"started":false`) {
			t.Errorf("root: GET %s after the refused requests: %d %s, want nothing started", p, code, out)
		}
	}

	// The root token (sudo on everything) may: start, read, cancel.
	for _, c := range []struct {
		method, path string
		body         any
		want         int
	}{
		{"PUT", "sys/generate-root/attempt", map[string]any{}, http.StatusOK},
		{"GET", "sys/generate-root/attempt", nil, http.StatusOK},
		{"DELETE", "sys/generate-root/attempt", nil, http.StatusNoContent},
		{"PUT", "sys/rotate/recovery/init", map[string]any{"secret_shares": 3, "secret_threshold": 2}, http.StatusOK},
		{"DELETE", "sys/rotate/recovery/init", nil, http.StatusNoContent},
		{"PUT", "sys/rotate/root/init", map[string]any{"secret_shares": 1, "secret_threshold": 1}, http.StatusOK},
		{"DELETE", "sys/rotate/root/init", nil, http.StatusNoContent},
		// Off, as newer OpenBao has them (disable_unauthed_rekey_endpoints):
		// sys/rotate/root and sys/rotate/recovery are the way.
		{"PUT", "sys/rekey-recovery-key/init", map[string]any{"secret_shares": 3, "secret_threshold": 2}, http.StatusNotFound},
		{"PUT", "sys/rekey/init", map[string]any{"secret_shares": 1, "secret_threshold": 1}, http.StatusMethodNotAllowed},
	} {
		if code, out := call(t, hc, c.method, addr+"/v1/"+c.path, root, c.body); code != c.want {
			t.Errorf("root: %s %s: %d %s, want %d", c.method, c.path, code, strings.TrimSpace(out), c.want)
		}
	}
}

// On a standby: a key ceremony is not forwarded to the active node but
// answered 409 (a standby cannot check its token), with a token or
// without; the request filter of the active node's cluster port refuses
// what a standby forwards that it could not judge itself (a legacy lease
// endpoint behind a namespace prefix), and passes the rest.
func TestKeyCeremoniesAndFilterOnAStandby(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	cfg1, addr1 := nodeConfig(t, dir, "node-1", "127.0.0.1", "", "")
	cfg2, addr2 := nodeConfig(t, dir, "node-2", "127.0.0.2", addr1, "")
	n1 := harness.StartNode(t, tr, bin, cfg1, addr1)
	n1.WaitServing(t, tr)
	res := initCluster(t, bin, addr1, "--shares", "3", "--threshold", "2")
	waitState(t, tr, bin, addr1, "active")
	n2 := harness.StartNode(t, tr, bin, cfg2, addr2)
	n2.WaitServing(t, tr)
	submitShares(t, tr, bin, addr2, res.Shares[:2]...)
	waitState(t, tr, bin, addr2, "standby")
	hc := &http.Client{Timeout: 30 * time.Second}
	root := res.RootToken
	if code, out := call(t, hc, "POST", addr2+"/v1/sys/namespaces/org_1", root, map[string]any{}); code/100 != 2 {
		t.Fatalf("namespace org_1 through the standby: %d %s", code, out)
	}

	for _, tok := range []string{"", root} {
		for _, c := range []struct{ method, path string }{
			{"PUT", "sys/generate-root/attempt"},
			{"DELETE", "sys/generate-root/attempt"},
			{"PUT", "sys/rekey/init"},
			{"PUT", "sys/rotate/recovery/init"},
		} {
			code, out := call(t, hc, c.method, addr2+"/v1/"+c.path, tok, map[string]any{"secret_shares": 3, "secret_threshold": 2})
			if code != http.StatusConflict || !strings.Contains(out, "active node") {
				t.Errorf("standby, token %v: %s %s: %d %s, want 409", tok != "", c.method, c.path, code, strings.TrimSpace(out))
			}
		}
	}
	if code, out := call(t, hc, "GET", addr1+"/v1/sys/generate-root/attempt", root, nil); code != http.StatusOK || !strings.Contains(out, `"started":false`) {
		t.Errorf("the active node after the standby's refusals: %d %s", code, out)
	}

	// Forwarded by the standby, judged by the active node's filter.
	code, out := call(t, hc, "PUT", addr2+"/v1/org_1/sys/renew", root, map[string]any{"lease_id": "x"})
	if code != http.StatusNotFound || !strings.Contains(out, "CVE-2026-45808") {
		t.Errorf("PUT org_1/sys/renew through the standby: %d %s, want 404 naming CVE-2026-45808", code, strings.TrimSpace(out))
	}
	if code, out := call(t, hc, "POST", addr2+"/v1/org_1/sys/mounts/kv", root, map[string]any{"type": "kv-v2"}); code/100 != 2 {
		t.Errorf("a mount in org_1 through the standby: %d %s", code, out)
	}
	// A token accessor of org_1 used from the root namespace
	// (CVE-2026-40264), and the detailed policy list GitLab sends
	// (policies_detailed.go), through the standby.
	_, acc := nsToken(t, hc, addr2+"/v1/", root, "org_1", "default")
	if code, out := call(t, hc, "POST", addr2+"/v1/auth/token/lookup-accessor", root, map[string]any{"accessor": acc}); code != http.StatusForbidden || !strings.Contains(out, "CVE-2026-40264") {
		t.Errorf("lookup-accessor of an org_1 token from the root namespace through the standby: %d %.300s, want 403", code, strings.TrimSpace(out))
	}
	if code, out := call(t, hc, "PUT", addr2+"/v1/org_1/sys/policies/acl/users/a", root, map[string]any{"policy": `path "kv/*" { capabilities = ["read"] }`}); code/100 != 2 {
		t.Fatalf("policy users/a in org_1: %d %s", code, out)
	}
	if code, out := call(t, hc, "GET", addr2+"/v1/org_1/sys/policies/detailed/acl/users?list=true", root, nil); code != http.StatusOK || !strings.Contains(out, `"keys":["users/a"]`) {
		t.Errorf("the detailed list of org_1's users/ policies through the standby: %d %.300s", code, strings.TrimSpace(out))
	}
}
