package cli

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// geo status asks the node at --address and follows it to the leader it
// knows of; when that leader does not answer (paused, or gone in a
// disaster), the node asked answers with its own view and a note.
func TestGeoStatusLeaderSilent(t *testing.T) {
	hung := harness.HungServer(t)
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(client.Status{NodeID: "b1", State: client.StateStandby, LeaderAPIAddr: hung.URL, Geo: &client.GeoStatus{Site: "site-b"}})
	}))
	defer node.Close()
	cl := &apiClient{client.New(node.URL, client.Options{HTTPClient: &http.Client{Timeout: time.Hour}})}
	st, from, note, err := activeStatusNote(cl)
	if err != nil || st.NodeID != "b1" || from != cl || !strings.Contains(note, "did not answer within "+leaderAskTimeout.String()) || !strings.Contains(note, "this is b1's own view") {
		t.Fatalf("the leader silent: %+v from %s, note %q, error %v", st, from.Addr(), note, err)
	}
}

// The client's errors keep the CLI's exit codes: a node's refusal is 1,
// no appliance answering is 4 (and names the variable --address reads),
// an address no request can be made for is 64.
func TestClientErrorExitCodes(t *testing.T) {
	refuses := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		json.NewEncoder(w).Encode(map[string][]string{"errors": {"permission denied"}})
	}))
	defer refuses.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	for _, tc := range []struct {
		addr string
		code int
		text string
	}{
		{refuses.URL, exitFailed, "permission denied"},
		{closed.URL, exitUnreachable, "check --address (or " + envAddr + ")"},
		{"http://[::1", exitUsage, `--address "http://[::1"`},
	} {
		cl := &apiClient{client.New(tc.addr, client.Options{})}
		err := cl.call("GET", "status", nil, nil, "")
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != tc.code || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v, want exit %d with %q", tc.addr, err, tc.code, tc.text)
		}
	}
}
