package test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// CVE-2025-64761: an operator who may write identity groups (not sudo)
// puts "Root" on a group; its members' tokens would be root. And
// GHSA-rh46-vc3j-w2w3: an inline login with an operation other than
// update. Both refused by the filter; ordinary groups and inline logins
// work.
func TestIdentityAndInlineAuthAdvisoriesClosed(t *testing.T) {
	n := newRootNode(t)
	addr, root, hc, v1 := n.addr, n.root, n.hc, n.v1
	must := n.must
	must("POST", "sys/auth/userpass", map[string]any{"type": "userpass"})
	must("POST", "auth/userpass/users/alice", map[string]any{"password": "alice-pw"})
	login := func() (string, string) {
		t.Helper()
		var out struct {
			Auth struct {
				ClientToken string `json:"client_token"`
				EntityID    string `json:"entity_id"`
			} `json:"auth"`
		}
		code, raw := call(t, hc, "POST", v1+"auth/userpass/login/alice", "", map[string]any{"password": "alice-pw"})
		if code != http.StatusOK || json.Unmarshal([]byte(raw), &out) != nil || out.Auth.EntityID == "" {
			t.Fatalf("alice's login: %d %s", code, raw)
		}
		return out.Auth.ClientToken, out.Auth.EntityID
	}
	aliceBefore, entity := login()
	idAdmin := makeToken(t, hc, addr, root, "identity-admin", `path "identity/*" { capabilities = ["create", "read", "update", "delete", "list"] }`)

	// GHSA-rh46-vc3j-w2w3: inline logins at alice's userpass login.
	inline := func(op string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", v1+"auth/token/lookup-self", nil)
		b, _ := json.Marshal(map[string]string{"key": "password", "value": "alice-pw"})
		req.Header.Set("X-Vault-Inline-Auth-Path", "auth/userpass/login/alice")
		req.Header.Set("X-Vault-Inline-Auth-Parameter-password", base64.RawURLEncoding.EncodeToString(b))
		if op != "" {
			req.Header.Set("X-Vault-Inline-Auth-Operation", op)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("inline login (%q): %v", op, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	for _, op := range []string{"renew", "revoke", "alias-lookahead", "resolve-role", "rollback", "read"} {
		if code, out := inline(op); code != http.StatusBadRequest || !strings.Contains(out, "GHSA-rh46-vc3j-w2w3") {
			t.Errorf("inline login with operation %q: %d %.300s, want 400 naming GHSA-rh46-vc3j-w2w3", op, code, strings.TrimSpace(out))
		}
	}
	for _, op := range []string{"", "update"} {
		if code, out := inline(op); code == http.StatusBadRequest || strings.Contains(out, "GHSA-rh46") {
			t.Errorf("inline login with operation %q: %d %.300s", op, code, strings.TrimSpace(out))
		}
	}

	// CVE-2025-64761: "root" in other cases on a group alice is in.
	for _, c := range []struct {
		method, path string
		body         map[string]any
	}{
		{"POST", "identity/group", map[string]any{"name": "g1", "policies": []string{"Root"}, "member_entity_ids": []string{entity}}},
		{"POST", "identity/group/name/g2", map[string]any{"policies": "default,ROOT", "member_entity_ids": []string{entity}}},
		{"PUT", "identity/group/name/g3", map[string]any{"policies": []string{" rOOt "}, "member_entity_ids": []string{entity}}},
	} {
		code, out := call(t, hc, c.method, v1+c.path, idAdmin, c.body)
		if code != http.StatusBadRequest || !strings.Contains(out, "CVE-2025-64761") {
			t.Errorf("%s %s with %v: %d %.300s, want 400 naming CVE-2025-64761", c.method, c.path, c.body["policies"], code, strings.TrimSpace(out))
		}
	}
	// A token alice had before, and a new login: neither root.
	if code, out := call(t, hc, "LIST", v1+"sys/policies/acl", aliceBefore, nil); code != http.StatusForbidden {
		t.Errorf("alice's earlier token lists the ACL policies (root's right): %d %.300s, want 403", code, strings.TrimSpace(out))
	}
	alice, _ := login()
	if code, out := call(t, hc, "LIST", v1+"sys/policies/acl", alice, nil); code != http.StatusForbidden {
		t.Errorf("alice lists the ACL policies (root's right): %d %.300s, want 403", code, strings.TrimSpace(out))
	}
	if code, out := call(t, hc, "POST", v1+"identity/group", idAdmin, map[string]any{"name": "readers", "policies": []string{"reader"}, "member_entity_ids": []string{entity}}); code/100 != 2 {
		t.Errorf("an ordinary group: %d %s", code, out)
	}

}
