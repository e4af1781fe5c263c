package httpapi

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// OpenBao's answers while the leader changes are held and told apart;
// every other answer goes through untouched, headers and all.
func TestHeldAnswer(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		code       int
		noForward  bool
		kind       int
	}{
		{"leader not found", `{"errors":["local node not active but active cluster node not found"]}` + "\n", 500, false, notForwarded},
		{"raft not the leader", `{"errors":["1 error occurred:\n\t* node is not the leader\n\n"]}` + "\n", 500, false, mayHaveDone},
		{"raft transferring leadership", `{"errors":["1 error occurred:\n\t* leadership transfer in progress\n\n"]}` + "\n", 500, false, mayHaveDone},
		{"leadership lost", `{"errors":["1 error occurred:\n\t* leadership lost while committing log\n\n"]}` + "\n", 500, false, writeInDoubt},
		{"another 500", `{"errors":["internal error"]}` + "\n", 500, false, answerAsIs},
		{"leadership lost, as a 400", `{"errors":["failed to create token: leadership lost while committing log"]}` + "\n", 400, false, writeInDoubt},
		{"a plain 400", `{"errors":["check-and-set parameter did not match the current version"]}` + "\n", 400, false, answerAsIs},
		{"a forward that failed", "", 307, false, mayHaveDone},
		{"a redirect asked for", "", 307, true, answerAsIs},
		{"a forward that failed, no leader left", `{"errors":["no active Vault instance found"]}` + "\n", 503, false, mayHaveDone},
		{"no leader, no forward asked for", `{"errors":["no active Vault instance found"]}` + "\n", 503, true, answerAsIs},
		{"sealed", `{"errors":["Vault is sealed"]}` + "\n", 503, false, answerAsIs},
		{"a long 500", strings.Repeat("x", 70<<10), 500, false, answerAsIs},
		{"200", `{"data":{}}`, 200, false, answerAsIs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h := &heldAnswer{w: rec, header: http.Header{}}
			h.Header().Set("Location", "https://leader:8200/v1/x")
			h.WriteHeader(tc.code)
			io.WriteString(h, tc.body)
			if got := h.kind(tc.noForward); got != tc.kind {
				t.Fatalf("kind %d, want %d", got, tc.kind)
			}
			if tc.kind != answerAsIs {
				if rec.Body.Len() != 0 || rec.Header().Get("Location") != "" {
					t.Fatalf("a held answer wrote %q (%v)", rec.Body.String(), rec.Header())
				}
				return
			}
			h.release()
			if rec.Code != tc.code || rec.Body.String() != tc.body || rec.Header().Get("Location") == "" {
				t.Fatalf("answer changed: %d %q %v", rec.Code, rec.Body.String(), rec.Header())
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

// Only requests that cannot apply anything are sent again whatever
// happened to them.
func TestIsRead(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		read         bool
	}{
		{"GET", "kv/data/x", true},
		{"HEAD", "sys/mounts", true},
		{"LIST", "kv/metadata/", true},
		{"GET", "database/creds/readonly", false},
		{"GET", "creds/role", false},
		{"PUT", "kv/data/x", false},
		{"POST", "auth/token/create", false},
		{"DELETE", "kv/data/x", false},
		{"PATCH", "kv/data/x", false},
	} {
		r := httptest.NewRequest(tc.method, "/v1/"+tc.path, nil)
		if got := isRead(r, tc.path); got != tc.read {
			t.Errorf("%s %s: read %v, want %v", tc.method, tc.path, got, tc.read)
		}
	}
}
