package test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// GHSA-xp3c-3jw3-4vcr: a policy lists kv/metadata/* but denies
// kv/metadata/private/*. OpenBao 2.4.0 listed kv/metadata/private/ (the
// names of the secrets under it) all the same; the filter refuses it, as
// OpenBao 2.6 does, and every other list the policy allows still works:
// siblings, the mount's root, a directory listed by an exact rule.
func TestListDenyBypassClosed(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	addr, res := startActive(t, tr, bin, "--shares", "3", "--threshold", "2")
	root := res.RootToken
	hc := &http.Client{Timeout: time.Minute}
	c := apiClient(t, addr, root)
	harness.MountKVv2(t, c, "kv")
	for _, p := range []string{"private/db-password", "public/banner", "listed/x"} {
		if _, err := c.KVv2("kv").Put(context.Background(), p, map[string]any{"v": "1"}); err != nil {
			t.Fatal(err)
		}
	}
	tok := makeToken(t, hc, addr, root, "lister", `
path "kv/metadata/*"         { capabilities = ["list", "read"] }
path "kv/metadata/private/*" { capabilities = ["deny"] }
path "kv/metadata/listed"    { capabilities = ["list"] }
`)
	for _, l := range []struct {
		method, path string
		code         int
	}{
		{"LIST", "kv/metadata/private/", http.StatusForbidden},
		{"GET", "kv/metadata/private?list=true", http.StatusForbidden},
		{"LIST", "kv/metadata/private/db-password", http.StatusForbidden},
		{"LIST", "kv/metadata/public/", http.StatusOK},
		{"LIST", "kv/metadata/", http.StatusOK},
		{"LIST", "kv/metadata/listed/", http.StatusOK},
	} {
		code, out := call(t, hc, l.method, addr+"/v1/"+l.path, tok, nil)
		if code != l.code || code == http.StatusOK && strings.Contains(out, "db-password") {
			t.Errorf("%s %s: %d %.300s, want %d", l.method, l.path, code, strings.TrimSpace(out), l.code)
		}
	}
}
