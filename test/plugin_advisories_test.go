package test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// Advisories of the builtin plugins the appliance ships, on a real node:
// Transit RSA keys with derivation (GHSA-8w8f-r2xv-4q4j), jwt/oidc roles
// in direct callback mode (GHSA-7q7g-x6vg-xpc3) and the direct callback's
// reflected provider error (GHSA-cpj3-3r2f-xj59) are refused; ordinary
// keys and roles work. Kerberos auth (GHSA-7j6w-vvw2-5f9c,
// CVE-2026-46405) is not in the build: enabling it fails.
func TestPluginAdvisoriesClosed(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	addr, res := startActive(t, tr, bin, "--shares", "3", "--threshold", "2")
	root := res.RootToken
	hc := &http.Client{Timeout: time.Minute}
	v1 := addr + "/v1/"
	must := func(method, path string, body any) {
		t.Helper()
		if code, out := call(t, hc, method, v1+path, root, body); code/100 != 2 {
			t.Fatalf("%s %s: %d %s", method, path, code, out)
		}
	}
	// refused PUTs body (a dropped connection is an answer too: 2.4.0
	// panicked on the derived RSA key) and wants 400 naming want.
	refused := func(path string, body any, want string) {
		t.Helper()
		b, _ := json.Marshal(body)
		if code, out, err := tryPut(hc, v1+path, root, string(b)); code != http.StatusBadRequest || !strings.Contains(out, want) {
			t.Errorf("PUT %s %s: %d %.300s %v, want 400 naming %s", path, b, code, strings.TrimSpace(out), err, want)
		}
	}

	must("POST", "sys/auth/oidc", map[string]any{"type": "oidc"})
	role := map[string]any{"role_type": "oidc", "user_claim": "sub", "allowed_redirect_uris": []string{"https://gitlab.example/callback"}}
	role["callback_mode"] = "direct"
	refused("auth/oidc/role/ops", role, "GHSA-7q7g-x6vg-xpc3")
	role["callback_mode"] = "client"
	must("POST", "auth/oidc/role/ops", role)
	cb := "auth/oidc/oidc/callback?state=st&code=c&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E"
	if code, out := call(t, hc, "GET", v1+cb, "", nil); code != http.StatusBadRequest || !strings.Contains(out, "GHSA-cpj3-3r2f-xj59") {
		t.Errorf("GET %s: %d %.300s, want 400 naming GHSA-cpj3-3r2f-xj59", cb, code, strings.TrimSpace(out))
	}

	// CVE-2025-62513: the OIDC provider's token endpoint answers a raw
	// body that 2.4.0's audit devices log in clear; its discovery stays.
	for _, p := range []string{"identity/oidc/provider/default/token", "identity/oidc/provider/default/authorize", "identity/oidc/provider/default/userinfo"} {
		if code, out := call(t, hc, "POST", v1+p, root, map[string]any{"grant_type": "authorization_code", "code": "c"}); code != http.StatusNotFound || !strings.Contains(out, "CVE-2025-62513") {
			t.Errorf("POST %s: %d %.300s, want 404 naming CVE-2025-62513", p, code, strings.TrimSpace(out))
		}
	}
	if code, out := call(t, hc, "GET", v1+"identity/oidc/provider/default/.well-known/openid-configuration", "", nil); code != http.StatusOK {
		t.Errorf("the OIDC provider's discovery document: %d %.300s", code, out)
	}

	if code, out := call(t, hc, "POST", v1+"sys/auth/kerberos", root, map[string]any{"type": "kerberos"}); code/100 == 2 {
		t.Errorf("kerberos auth enabled: %d %s", code, out)
	}

	// Last: on 2.4.0 the derived RSA key took the whole node down.
	must("POST", "sys/mounts/transit", map[string]any{"type": "transit"})
	for _, body := range []map[string]any{
		{"type": "rsa-2048", "derived": true},
		{"type": "rsa-4096", "derived": "true"},
	} {
		refused("transit/keys/signer", body, "GHSA-8w8f-r2xv-4q4j")
	}
	harness.Eventually(t, 30*time.Second, "the node answers after the derived RSA key", func() bool {
		code, _ := call(t, hc, "GET", v1+"sys/health", "", nil)
		return code == http.StatusOK
	})
	must("POST", "transit/keys/signer", map[string]any{"type": "rsa-2048"})
	must("POST", "transit/keys/derived-aes", map[string]any{"type": "aes256-gcm96", "derived": true})
}
