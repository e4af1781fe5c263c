package filter

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The body helpers of the filter's rows read a field as OpenBao would
// (JSON or a form), tell a non-string from a string, and leave the body
// for the handlers after them as it was.
func TestBodyFieldsAsOpenBaoReadsThem(t *testing.T) {
	for _, c := range []struct {
		ctype, body, field, want string
		err                      bool
	}{
		{"application/json", `{"lease_id":"auth/jwt/login/h1.ns2"}`, "lease_id", "auth/jwt/login/h1.ns2", false},
		{"", `{"lease_id":"x"}`, "lease_id", "x", false},
		{"application/json", `{"lease_id":7}`, "lease_id", "", true},
		{"application/json", `{"lease_id":["x"]}`, "lease_id", "", true},
		{"application/json", `{"lease_id":null}`, "lease_id", "", false},
		{"application/json", `{}`, "lease_id", "", false},
		{"application/json", `not json`, "lease_id", "", false},
		{"application/x-www-form-urlencoded", `accessor=abc.ns1&x=1`, "accessor", "abc.ns1", false},
		{"application/x-www-form-urlencoded; charset=utf-8", `accessor=abc`, "accessor", "abc", false},
	} {
		r := httptest.NewRequest("POST", "/v1/sys/leases/revoke", strings.NewReader(c.body))
		if c.ctype != "" {
			r.Header.Set("Content-Type", c.ctype)
		}
		got, err := bodyString(r, c.field)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("%s %q: %q, %v; want %q, error %v", c.ctype, c.body, got, err, c.want, c.err)
		}
		if rest, _ := io.ReadAll(r.Body); string(rest) != c.body {
			t.Errorf("%q: the body left for OpenBao is %q", c.body, rest)
		}
	}
	r := httptest.NewRequest("POST", "/v1/x", http.NoBody)
	if got, err := bodyString(r, "x"); got != "" || err != nil {
		t.Errorf("no body: %q %v", got, err)
	}
}

// Namespace ids as OpenBao reads them off accessors and lease ids.
func TestIDNamespace(t *testing.T) {
	for id, want := range map[string]string{
		"GaCQn4vTVJ08TQjwNs8cRAEB.21PGjV":                     "21PGjV",
		"GaCQn4vTVJ08TQjwNs8cRAEB":                            "root",
		"auth/token/create/h6d1ef8c1c9bc7c3b1f1ef7b09bd.AbCd": "AbCd",
		"auth/token/create/h6d1ef8c1c9bc7c3b1f1ef7b09bd":      "root",
		"kv/creds/role/xyz.n1":                                "n1",
	} {
		if got := idNamespace(id); got != want {
			t.Errorf("idNamespace(%q) = %q, want %q", id, got, want)
		}
	}
}

func TestHasSegment(t *testing.T) {
	for _, c := range []struct {
		p, seg string
		want   bool
	}{
		{"org_1/auth/token/revoke-accessor", "revoke-accessor", true},
		{"auth/token/revoke-accessor", "auth", true},
		{"sys/leases/revoke/auth/token/create/x", "leases", true},
		{"kv/data/myleases/x", "leases", false},
		{"kv/data/leasesx", "leases", false},
		{"leases", "leases", true},
		{"a/leases-leases/leases", "leases", true},
		{"", "leases", false},
	} {
		if got := hasSegment(c.p, c.seg); got != c.want {
			t.Errorf("hasSegment(%q, %q) = %v", c.p, c.seg, got)
		}
	}
}

// The rows added for the namespace, identity, plugin and LIST advisories,
// on a GitLab-shaped KV read and write that none of them concerns: what
// every such request pays.
func BenchmarkNewFilterRowsOnGitLabTraffic(b *testing.B) {
	f := &requestFilter{maxBody: maxRequestBodyBytes}
	rows := []func(*requestFilter, *http.Request) (int, error){
		(*requestFilter).checkAccessorNamespace, (*requestFilter).checkLeaseNamespace,
		(*requestFilter).checkGroupRootPolicy, checkInlineAuthOperation,
		checkTransitDerivedRSA, checkOIDCDirectCallback, (*requestFilter).checkListDeny,
	}
	read := httptest.NewRequest("GET", "/v1/org_1/group_2/project_3/secrets/kv/data/explicit/DATABASE_PASSWORD", nil)
	write := httptest.NewRequest("POST", "/v1/org_1/group_2/project_3/secrets/kv/data/explicit/DATABASE_PASSWORD", nil)
	b.ReportAllocs()
	for b.Loop() {
		for _, r := range []*http.Request{read, write} {
			for _, row := range rows {
				if code, err := row(f, r); err != nil {
					b.Fatal(code, err)
				}
			}
		}
	}
}

// The OIDC provider's secret-bearing endpoints are refused in any
// namespace; its public ones and look-alike paths elsewhere are not.
func TestCheckOIDCProviderSecrets(t *testing.T) {
	for path, refused := range map[string]bool{
		"/v1/identity/oidc/provider/default/token":                            true,
		"/v1/identity/oidc/provider/default/authorize":                        true,
		"/v1/org_1/group_1/identity/oidc/provider/p/userinfo":                 true,
		"/v1/identity/oidc/provider/default/.well-known/openid-configuration": false,
		"/v1/identity/oidc/provider/default/.well-known/keys":                 false,
		"/v1/identity/oidc/provider/default":                                  false,
		"/v1/kv/data/provider/x/token":                                        false,
		"/v1/auth/token/lookup-self":                                          false,
	} {
		r := httptest.NewRequest("POST", path, nil)
		code, err := checkOIDCProviderSecrets(nil, r)
		if refused != (err != nil) || refused && code != http.StatusNotFound {
			t.Errorf("%s: %d %v, refused should be %v", path, code, err, refused)
		}
	}
}
