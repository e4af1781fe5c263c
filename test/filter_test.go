package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// rawBody sends body as it is (not marshalled), chunked when chunked is
// set (no Content-Length), and returns the status and the answer.
func rawBody(t *testing.T, hc *http.Client, method, url, token, body string, chunked bool) (int, string) {
	t.Helper()
	var rd io.Reader = strings.NewReader(body)
	if chunked {
		rd = io.MultiReader(rd) // length unknown to the client
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// The request filter (appliance/filter), one attack per row of its
// table on a real node, each refused before OpenBao sees it, even with
// the root token; and GitLab-shaped traffic (KV v2 writes and reads, a
// secret whose path has sys/renew in it, a body near the limits) still
// works.
func TestRequestFilterClosesAdvisories(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	addr, res := startActive(t, tr, bin, "--shares", "3", "--threshold", "2")
	root := res.RootToken
	hc := &http.Client{Timeout: time.Minute}
	c := apiClient(t, addr, root)
	harness.MountKVv2(t, c, "kv")
	ctx := context.Background()
	if _, err := c.KVv2("kv").Put(ctx, "app", map[string]any{"password": "v-1"}); err != nil {
		t.Fatal(err)
	}
	if code, out := call(t, hc, "POST", addr+"/v1/sys/namespaces/org_1", root, map[string]any{}); code/100 != 2 {
		t.Fatalf("namespace org_1: %d %s", code, out)
	}

	// CVE-2026-3605: . and .. segments, plain and percent-encoded, in the
	// path and the namespace header; empty segments; invalid UTF-8.
	for _, p := range []struct{ path, ns, want string }{
		{"/v1/kv/data/../data/app", "", "CVE-2026-3605"},
		{"/v1/kv/data/./app", "", "CVE-2026-3605"},
		{"/v1/kv/data/%2e%2e/data/app", "", "CVE-2026-3605"},
		{"/v1/kv/data/%2E/app", "", "CVE-2026-3605"},
		{"/v1/org_1/%2e%2e/kv/data/app", "", "CVE-2026-3605"},
		{"/v1/kv/data%2f..%2fdata/app", "", "CVE-2026-3605"},
		{"/v1/kv/data/app", "org_1/..", "CVE-2026-3605"},
		{"/v1/kv//data/app", "", `empty segment`},
		{"/v1//kv/data/app", "", `empty segment`},
		{"/v1/kv/data/%ff", "", `not valid UTF-8`},
		{"/v1/kv/data/app", "org_\xff", `not valid UTF-8`},
	} {
		var hdr []string
		if p.ns != "" {
			hdr = []string{"X-Vault-Namespace", p.ns}
		}
		code, out := call(t, hc, "GET", addr+p.path, root, nil, hdr...)
		if code != http.StatusBadRequest || !strings.Contains(out, p.want) {
			t.Errorf("GET %s (namespace %q): %d %s, want 400 %s", p.path, p.ns, code, strings.TrimSpace(out), p.want)
		}
	}

	// CVE-2026-45808: the legacy lease endpoints, in the root namespace
	// and in a namespace (path and header); sys/leases/* stay.
	for _, p := range []struct{ path, ns string }{
		{"/v1/sys/revoke", ""}, {"/v1/sys/revoke/kv/x", ""}, {"/v1/sys/revoke-prefix/kv", ""}, {"/v1/sys/revoke-force/kv", ""},
		{"/v1/sys/renew", ""}, {"/v1/sys/renew/kv/x", ""}, {"/v1/sys/revoke-prefix/", ""},
		{"/v1/org_1/sys/revoke-prefix/kv", ""}, {"/v1/org_1/sys/renew", ""}, {"/v1/sys/revoke-force/x", "org_1"},
	} {
		var hdr []string
		if p.ns != "" {
			hdr = []string{"X-Vault-Namespace", p.ns}
		}
		code, out := call(t, hc, "PUT", addr+p.path, root, map[string]any{"lease_id": "kv/x", "increment": 60}, hdr...)
		if code != http.StatusNotFound || !strings.Contains(out, "CVE-2026-45808") {
			t.Errorf("PUT %s (namespace %q): %d %s, want 404 naming CVE-2026-45808", p.path, p.ns, code, strings.TrimSpace(out))
		}
	}
	for _, p := range []string{"sys/leases/renew", "sys/leases/revoke"} {
		code, out := call(t, hc, "PUT", addr+"/v1/"+p, root, map[string]any{"lease_id": "kv/x"})
		if strings.Contains(out, "CVE-2026-45808") || code == http.StatusNotFound {
			t.Errorf("PUT %s: %d %s: refused by the filter", p, code, out)
		}
	}

	// CVE-2025-59043, CVE-2025-6203: JSON complexity, before authentication
	// (sys/wrapping/lookup takes no token) and with the root token.
	nested := func(depth int) string { return strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth) }
	list := func(n int) string { return "[" + strings.TrimSuffix(strings.Repeat("1,", n), ",") + "]" }
	object := func(n int) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `"k%d":1`, i)
		}
		return b.String() + "}"
	}
	many := "[" + strings.TrimSuffix(strings.Repeat(list(9000)+",", 12), ",") + "]" // 108,000 values
	for _, b := range []struct {
		name, body, want string
		code             int
	}{
		{"nesting", `{"token":` + nested(301) + "}", "max_json_depth", 400},
		{"array elements", `{"token":` + list(10001) + "}", "max_json_array_element_count", 400},
		{"object entries", object(10001), "max_json_object_entry_count", 400},
		{"string length", `{"token":"` + strings.Repeat("x", 1<<20+1) + `"}`, "max_json_string_value_length", 413},
		{"values in all", `{"token":` + many + "}", "values in all", 400},
	} {
		for _, tok := range []string{"", root} {
			for _, path := range []string{"/v1/sys/wrapping/lookup", "/v1/kv/data/app", "/appliance/v1/unseal"} {
				code, out := rawBody(t, hc, "POST", addr+path, tok, b.body, false)
				if code != b.code || !strings.Contains(out, b.want) {
					t.Errorf("%s to %s (token %v): %d %.200s, want %d naming %s", b.name, path, tok != "", code, out, b.code, b.want)
				}
			}
		}
	}
	// The body is capped before anything reads it: declared or not.
	huge := `{"data":{"v":"` + strings.Repeat("x", 33<<20) + `"}}`
	for _, chunked := range []bool{false, true} {
		code, out := rawBody(t, hc, "POST", addr+"/v1/kv/data/app", root, huge, chunked)
		if code != http.StatusRequestEntityTooLarge || !strings.Contains(out, "max_request_size") {
			t.Errorf("a 33 MiB body (chunked %v): %d %.200s, want 413 naming max_request_size", chunked, code, out)
		}
	}

	// GitLab-shaped traffic: KV v2 under its usual paths, a secret whose
	// path has sys/renew in it (inside a mount: not a lease endpoint), and
	// a body just inside every limit.
	kv := c.KVv2("kv")
	near := map[string]any{
		"list":   strings.Repeat("y", 1<<19),
		"array":  make([]int, 10000),
		"nested": nil,
	}
	var deep any = "bottom"
	for range 250 {
		deep = map[string]any{"a": deep}
	}
	near["nested"] = deep
	for path, data := range map[string]map[string]any{
		"explicit/DATABASE_PASSWORD": {"value": "v-db-1"},
		"sys/renew":                  {"value": "not a lease endpoint"},
		"near-limits":                near,
	} {
		if _, err := kv.Put(ctx, path, data); err != nil {
			t.Errorf("KV v2 put %s: %v", path, err)
			continue
		}
		got, err := kv.Get(ctx, path)
		if err != nil || fmt.Sprint(got.Data["value"]) != fmt.Sprint(data["value"]) {
			t.Errorf("KV v2 get %s: %v %v", path, got, err)
		}
	}
	if got, err := kv.Get(ctx, "app"); err != nil || got.Data["password"] != "v-1" {
		t.Errorf("KV v2 get app: %v %v", got, err)
	}
}

// A value over Raft's entry limit (1 MiB) is refused with 413 naming the
// limit and the request's size; OpenBao answered 500 "value being too
// large; got 156 bytes" (the key's size). One string over the limit is
// refused before anything parses the body; two strings under it, over it
// together, when Raft refuses the entry. A value under it is stored.
func TestTooLargeValue413(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	addr, res := startActive(t, tr, bin)
	c := apiClient(t, addr, res.RootToken)
	harness.MountKVv2(t, c, "kv")
	hc := &http.Client{Timeout: time.Minute}
	big := `{"data":{"v":"` + strings.Repeat("x", 10<<20) + `"}}`
	code, out := rawBody(t, hc, "PUT", addr+"/v1/kv/data/big", res.RootToken, big, false)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(out, "a string is too large: 10485760 bytes, over max_json_string_value_length 1048576") {
		t.Fatalf("a 10 MiB value: %d %s", code, out)
	}
	half := strings.Repeat("y", 600<<10)
	two := `{"data":{"a":"` + half + `","b":"` + half + `"}}`
	code, out = rawBody(t, hc, "PUT", addr+"/v1/kv/data/two", res.RootToken, two, false)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(out, "at most 1048576 bytes") || !strings.Contains(out, fmt.Sprintf("body was %d bytes", len(two))) {
		t.Fatalf("two 600 KiB values in one secret: %d %s", code, out)
	}
	if _, err := c.KVv2("kv").Put(context.Background(), "small", map[string]any{"v": strings.Repeat("x", 512<<10)}); err != nil {
		t.Fatalf("a 512 KiB value: %v", err)
	}
}
