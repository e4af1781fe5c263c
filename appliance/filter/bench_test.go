package filter

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

// newRows are the rows of the cert renewal, PostgreSQL revocation,
// template substitution, audited inline header and form quota advisories.
var newRows = []string{
	"CVE-2026-39388 (GHSA-7ccv-rp6m-rffr; OpenBao 2.5.3 GH-2932)",
	"CVE-2026-39946 (GHSA-6vgr-cp5c-ffx3; OpenBao 2.5.3 GH-2931)",
	"GHSA-59w7-v8rr-pr4p (OpenBao 2.6.0 GH-3401)",
	"CVE-2026-46358 (GHSA-q8cj-789h-vg24; OpenBao 2.5.4 GH-3076)",
	"role-based rate-limit quota bypass through form-encoded bodies (OpenBao 2.6.4, 2.7.1)",
}

// The whole filter on GitLab-shaped requests (a job's JWT login at its CEL
// role, a job's KV v2 read, Rails' inline-auth KV v2 write), with every
// row and without the rows above: what those rows add to each request.
// (No core: the rows stop where they would ask one, as they do for these
// requests on a node, whose paths hold none of their segments.)
func BenchmarkFilterOnGitLabTraffic(b *testing.B) {
	type req struct {
		method, path, body string
		header             map[string]string
	}
	reqs := []req{
		{"POST", "/v1/org_1/group_2/project_3/auth/pipeline_jwt/cel/login", `{"role":"pipeline","jwt":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwcm9qZWN0X3BhdGg6YWNtZS9wIn0.c2ln"}`, map[string]string{"Content-Type": "application/json"}},
		{"GET", "/v1/org_1/group_2/project_3/secrets/kv/data/explicit/DATABASE_PASSWORD", "", map[string]string{"X-Vault-Token": "s.0123456789abcdefghijklmn"}},
		{"POST", "/v1/org_1/group_2/project_3/secrets/kv/data/explicit/DATABASE_PASSWORD", `{"data":{"value":"s3cret"},"options":{"cas":1}}`, map[string]string{
			"Content-Type": "application/json", "X-Vault-Inline-Auth-Path": "auth/gitlab_rails_jwt/login",
			"X-Vault-Inline-Auth-Parameter-jwt": "eyJrZXkiOiJqd3QiLCJ2YWx1ZSI6ImV5SiJ9", "X-Vault-Inline-Auth-Parameter-role": "eyJrZXkiOiJyb2xlIiwidmFsdWUiOiJhcHAifQ",
		}},
	}
	without := slices.DeleteFunc(slices.Clone(filterRules), func(r filterRule) bool { return slices.Contains(newRows, r.advisory) })
	if len(without) != len(filterRules)-len(newRows) {
		b.Fatalf("%d of the %d new rows found in filterRules", len(filterRules)-len(without), len(newRows))
	}
	only := slices.DeleteFunc(slices.Clone(filterRules), func(r filterRule) bool { return !slices.Contains(newRows, r.advisory) })
	for _, c := range []struct {
		name  string
		rules []filterRule
	}{{"all rows", filterRules}, {"without the new rows", without}, {"the new rows alone", only}} {
		b.Run(c.name, func(b *testing.B) {
			saved := filterRules
			filterRules = c.rules
			defer func() { filterRules = saved }()
			h := Wrap(nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			var rs []*http.Request
			for _, q := range reqs {
				r := httptest.NewRequest(q.method, q.path, nil)
				for k, v := range q.header {
					r.Header.Set(k, v)
				}
				rs = append(rs, r)
			}
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				for i, r := range rs {
					if reqs[i].body != "" {
						r.Body = io.NopCloser(bytes.NewReader([]byte(reqs[i].body)))
						r.ContentLength = int64(len(reqs[i].body))
					}
					h.ServeHTTP(w, r)
				}
			}
			if w.Code != http.StatusOK {
				b.Fatalf("the filter refused a GitLab request: %d %s", w.Code, w.Body)
			}
		})
	}
}
