package appliance

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The 500 OpenBao writes before forwarding when it lost sight of the
// active node is swallowed (the gate tries again); any other 500 and
// every other answer go through untouched.
func TestLeaderLostCatcher(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		code       int
		caught     bool
	}{
		{"leader not found", `{"errors":["local node not active but active cluster node not found"]}` + "\n", 500, true},
		{"another 500", `{"errors":["internal error"]}` + "\n", 500, false},
		{"a long 500", strings.Repeat("x", 2000), 500, false},
		{"200", `{"data":{}}`, 200, false},
		{"307", "", 307, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			c := &leaderLostCatcher{ResponseWriter: rec}
			c.Header().Set("Content-Type", "application/json")
			c.WriteHeader(tc.code)
			io.WriteString(c, tc.body)
			if got := c.finish(); got != tc.caught {
				t.Fatalf("caught %v", got)
			}
			if tc.caught {
				if rec.Body.Len() != 0 {
					t.Fatalf("a swallowed answer wrote %q", rec.Body.String())
				}
				return
			}
			if rec.Code != tc.code || rec.Body.String() != tc.body {
				t.Fatalf("answer changed: %d %q", rec.Code, rec.Body.String())
			}
		})
	}
}

// A 503 gets a Retry-After; other codes are left alone.
func TestRetryAfterOn503(t *testing.T) {
	for code, want := range map[int]string{http.StatusServiceUnavailable: "1", http.StatusOK: "", http.StatusInternalServerError: ""} {
		rec := httptest.NewRecorder()
		retryAfter503{rec}.WriteHeader(code)
		if got := rec.Header().Get("Retry-After"); got != want {
			t.Errorf("%d: Retry-After %q", code, got)
		}
	}
}
