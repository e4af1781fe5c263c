package cli

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/appliance"
)

// A node that does not answer: the client gives up at its deadline and
// says which node did not answer within how long.
func TestCallDeadline(t *testing.T) {
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hung.Close()
	defer close(release)
	cl := (&apiClient{http: &http.Client{Timeout: time.Hour}}).with(hung.URL, 200*time.Millisecond)
	var st appliance.Status
	err := cl.call("GET", "status", nil, &st, "")
	if err == nil || !strings.Contains(err.Error(), "the node at "+hung.URL+" did not answer within 200ms") {
		t.Fatalf("a node that does not answer: %v", err)
	}
}

// geo status asks the node at --address and follows it to the leader it
// knows of; when that leader does not answer (paused, or gone in a
// disaster), the node asked answers with its own view and a note.
func TestGeoStatusLeaderSilent(t *testing.T) {
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hung.Close()
	defer close(release)
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(appliance.Status{NodeID: "b1", State: appliance.StateStandby, LeaderAPIAddr: hung.URL, Geo: &appliance.GeoStatus{Site: "site-b"}})
	}))
	defer node.Close()
	cl := &apiClient{addr: node.URL, http: &http.Client{Timeout: time.Hour}}
	st, from, note, err := activeStatusNote(cl)
	if err != nil || st.NodeID != "b1" || from != cl || !strings.Contains(note, "did not answer within "+leaderAskTimeout.String()) || !strings.Contains(note, "this is b1's own view") {
		t.Fatalf("the leader silent: %+v from %s, note %q, error %v", st, from.addr, note, err)
	}
}
