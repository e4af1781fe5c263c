package filter

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func nestedJSON(depth int) string {
	return strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
}

func arrayJSON(n int) string {
	return "[" + strings.TrimSuffix(strings.Repeat("1,", n), ",") + "]"
}

func objectJSON(n int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"k%d":{"x":[1]}`, i)
	}
	return b.String() + "}"
}

// Every JSON limit holds at its value and refuses one more, wherever the
// excess is (top level, inside objects, inside arrays, in keys).
func TestCheckJSONLimits(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"depth at the limit", nestedJSON(maxJSONDepth), ""},
		{"depth over", nestedJSON(maxJSONDepth + 1), "max_json_depth"},
		{"arrays nested over", strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1), "max_json_depth"},
		{"array at the limit", `{"a":` + arrayJSON(maxJSONArrayItems) + "}", ""},
		{"array over", `{"a":` + arrayJSON(maxJSONArrayItems+1) + "}", "max_json_array_element_count"},
		{"array of objects over", "[" + strings.TrimSuffix(strings.Repeat("{},", maxJSONArrayItems+1), ",") + "]", "max_json_array_element_count"},
		{"object at the limit", objectJSON(maxJSONObjectKeys), ""},
		{"object over", objectJSON(maxJSONObjectKeys + 1), "max_json_object_entry_count"},
		{"string at the limit", `{"a":"` + strings.Repeat("x", maxJSONStringBytes) + `"}`, ""},
		{"string over", `["` + strings.Repeat("x", maxJSONStringBytes+1) + `"]`, "max_json_string_value_length"},
		{"key over", `{"` + strings.Repeat("x", maxJSONStringBytes+1) + `":1}`, "max_json_string_value_length"},
		{"values over", "[" + strings.TrimSuffix(strings.Repeat(arrayJSON(9999)+",", 11), ",") + "]", "values in all"},
		{"not JSON", "a=b&c=d", ""},
		{"broken JSON", `{"a":[1,2`, ""},
		{"empty", "", ""},
	} {
		err := checkJSON([]byte(tc.body))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want a refusal naming %s", tc.name, err, tc.want)
		}
	}
}

// The filter's path rules on their own (no core: namespaced legacy lease
// paths are left to the active node's filter).
func TestFilterPaths(t *testing.T) {
	h := Wrap(nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusTeapot)
	}))
	for _, tc := range []struct {
		method, target, ns string
		want               int
	}{
		{"GET", "/v1/kv/data/app", "", http.StatusTeapot},
		{"LIST", "/v1/kv/metadata/", "", http.StatusTeapot},
		{"GET", "/v1/pki/ocsp/MEIwQDA%2BMDwwOjAJBgUrDgMCGgUABBQ//abc", "", http.StatusTeapot},
		{"GET", "/v1/kv/data/sys/renew", "", http.StatusTeapot},
		{"GET", "/v1/sys/leases/renew", "", http.StatusTeapot},
		{"GET", "/v1/kv/data/../app", "", http.StatusBadRequest},
		{"GET", "/v1/kv/data/%2e%2e/app", "", http.StatusBadRequest},
		{"GET", "/v1/kv/data/%2E/app", "", http.StatusBadRequest},
		{"GET", "/v1/kv/data/app", "org_1/../", http.StatusBadRequest},
		{"GET", "/v1/kv//data/app", "", http.StatusBadRequest},
		{"GET", "/v1/kv/data/%c3%28", "", http.StatusBadRequest},
		{"PUT", "/v1/sys/revoke", "", http.StatusNotFound},
		{"PUT", "/v1/sys/revoke/kv/x", "", http.StatusNotFound},
		{"PUT", "/v1/sys/revoke-prefix/kv", "", http.StatusNotFound},
		{"PUT", "/v1/sys/revoke-force/kv", "", http.StatusNotFound},
		{"PUT", "/v1/sys/renew", "", http.StatusNotFound},
		{"PUT", "/v1/sys/renew/kv/x", "", http.StatusNotFound},
		{"PUT", "/v1/sys/renew", "org_1", http.StatusNotFound},
		{"PUT", "/v1/org_1/sys/renew", "", http.StatusTeapot}, // no core here: the active node's filter decides
	} {
		req := httptest.NewRequest(tc.method, "http://node"+tc.target, nil)
		if tc.ns != "" {
			req.Header.Set("X-Vault-Namespace", tc.ns)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tc.want {
			t.Errorf("%s %s (namespace %q): %d %s, want %d", tc.method, tc.target, tc.ns, w.Code, w.Body, tc.want)
		}
	}

	// Bodies: over the cap (declared, or not), over a limit, and one that
	// passes arrives whole.
	for _, tc := range []struct {
		name    string
		body    string
		chunked bool
		want    int
	}{
		{"declared over the cap", strings.Repeat("x", maxRequestBodyBytes+1), false, http.StatusRequestEntityTooLarge},
		{"chunked over the cap", strings.Repeat("x", maxRequestBodyBytes+1), true, http.StatusRequestEntityTooLarge},
		{"too deep", nestedJSON(maxJSONDepth + 1), false, http.StatusBadRequest},
		{"fine", `{"data":{"v":"x"}}`, true, http.StatusTeapot},
	} {
		var rd io.Reader = strings.NewReader(tc.body)
		if tc.chunked {
			rd = io.MultiReader(rd)
		}
		req := httptest.NewRequest("POST", "http://node/v1/kv/data/app", rd)
		if tc.chunked {
			req.ContentLength = -1
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tc.want {
			t.Errorf("%s: %d %.200s, want %d", tc.name, w.Code, w.Body, tc.want)
		}
	}
}
