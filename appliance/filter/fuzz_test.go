package filter

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzRequestFilter sends the request filter any path, namespace header
// and body, on a node without a core (a standby that cannot resolve
// namespaces): it never panics, answers a refusal with a 4xx only, and
// what it lets through has no dot segment, is valid UTF-8 and is a body
// within the JSON limits.
func FuzzRequestFilter(f *testing.F) {
	for _, s := range []struct{ method, path, ns, body string }{
		{"GET", "/v1/kv/data/app", "", ""},
		{"GET", "/v1/kv/data/../data/app", "", ""},
		{"GET", "/v1/kv/data/%2e%2e/app", "", ""},
		{"GET", "/v1/kv//data/app", "", ""},
		{"GET", "/v1/pki/ocsp/MEow//AA==", "", ""},
		{"GET", "/v1/kv/data/\xff\xfe", "", ""},
		{"GET", "/v1/kv/data/app", "org_1/../x", ""},
		{"GET", "/v1/kv/data/app", "org_\xc3\x28", ""},
		{"POST", "/v1/sys/revoke/abc", "", ""},
		{"POST", "/v1/org_1/sys/renew", "", `{"lease_id":"x"}`},
		{"POST", "/v1/sys/wrapping/lookup", "", `{"token":` + strings.Repeat("[", 400) + `}`},
		{"PUT", "/v1/kv/data/app", "", `{"data":{"v":"` + strings.Repeat("x", 64) + `"}}`},
		{"PUT", "/v1/kv/data/app", "", `{"a":"\ud800", "b": [1, {"c": null}]}`},
		{"LIST", "/v1/kv/metadata/", "", ""},
	} {
		f.Add(s.method, s.path, s.ns, s.body)
	}
	f.Fuzz(func(t *testing.T, method, path, ns, body string) {
		var reached *http.Request
		var seenBody string
		h := Wrap(nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			reached = r
			b, _ := io.ReadAll(r.Body)
			seenBody = string(b)
		}))
		r := &http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))}
		if ns != "" {
			r.Header.Set("X-Vault-Namespace", ns)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if reached == nil {
			if w.Code < 400 || w.Code > 499 {
				t.Fatalf("%s %q (namespace %q): refused with %d %s", method, path, ns, w.Code, w.Body.String())
			}
			return
		}
		for _, segs := range [][]string{strings.Split(path, "/"), strings.Split(ns, "/")} {
			for _, s := range segs {
				if s == "." || s == ".." {
					t.Fatalf("%q (namespace %q) passed with a dot segment", path, ns)
				}
			}
		}
		if !utf8.ValidString(path) || !utf8.ValidString(ns) {
			t.Fatalf("%q (namespace %q) passed, not valid UTF-8", path, ns)
		}
		if seenBody != body {
			t.Fatalf("the body changed on its way through the filter: %d bytes in, %d out", len(body), len(seenBody))
		}
		if err := checkJSON([]byte(body)); err != nil {
			t.Fatalf("a body over a JSON limit passed: %v", err)
		}
	})
}
