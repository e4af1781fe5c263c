package test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The role-based rate-limit quota bypass (fixed in OpenBao 2.6.4, 2.7.1):
// a quota of 2 logins a minute on the approle role "ci". OpenBao 2.4.0
// resolves the quota's role from JSON bodies only: form-encoded logins
// were all let through (5 of 5) and the quota never applied. The filter
// rewrites the form into JSON on mounts with role-based quotas: the
// form logins log in (the rewrite keeps their meaning) until the quota
// refuses them (429), and a JSON login after them is refused too.
func TestFormLoginRateLimitQuotaApplies(t *testing.T) {
	n := newRootNode(t)
	hc, v1 := n.hc, n.v1
	must := n.must
	must("POST", "sys/auth/approle", map[string]any{"type": "approle"})
	must("POST", "auth/approle/role/ci", map[string]any{"token_policies": "default", "secret_id_num_uses": 0})
	var rid, sid struct {
		Data struct {
			RoleID   string `json:"role_id"`
			SecretID string `json:"secret_id"`
		} `json:"data"`
	}
	if json.Unmarshal([]byte(must("GET", "auth/approle/role/ci/role-id", nil)), &rid) != nil || json.Unmarshal([]byte(must("POST", "auth/approle/role/ci/secret-id", nil)), &sid) != nil || rid.Data.RoleID == "" || sid.Data.SecretID == "" {
		t.Fatal("approle role_id or secret_id missing")
	}
	must("POST", "sys/quotas/rate-limit/ci-logins", map[string]any{"path": "auth/approle/", "role": "ci", "rate": 2, "interval": "1m", "block_interval": "1m"})

	form := url.Values{"role_id": {rid.Data.RoleID}, "secret_id": {sid.Data.SecretID}}.Encode()
	codes := map[int]int{}
	for range 5 {
		code, out := callForm(t, hc, v1+"auth/approle/login", "", form)
		codes[code]++
		if code != http.StatusOK && code != http.StatusTooManyRequests {
			t.Fatalf("a form login: %d %.300s", code, strings.TrimSpace(out))
		}
	}
	if codes[http.StatusOK] == 0 || codes[http.StatusOK] > 2 || codes[http.StatusTooManyRequests] < 3 {
		t.Errorf("5 form-encoded logins under a quota of 2 a minute: %d logged in, %d refused with 429; want at most 2 and the rest refused", codes[http.StatusOK], codes[http.StatusTooManyRequests])
	}
	if code, out := call(t, hc, "POST", v1+"auth/approle/login", "", map[string]any{"role_id": rid.Data.RoleID, "secret_id": sid.Data.SecretID}); code != http.StatusTooManyRequests {
		t.Errorf("a JSON login after them: %d %.300s, want 429", code, strings.TrimSpace(out))
	}
}
