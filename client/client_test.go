package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// A node that does not answer: the client gives up at its deadline and
// says which node did not answer within how long.
func TestCallDeadline(t *testing.T) {
	hung := harness.HungServer(t)
	cl := New("", Options{HTTPClient: &http.Client{Timeout: time.Hour}}).With(hung.URL, 200*time.Millisecond)
	_, err := cl.Status(t.Context())
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.Addr != hung.URL || !strings.Contains(err.Error(), "the node at "+hung.URL+" did not answer within 200ms") {
		t.Fatalf("a node that does not answer: %v", err)
	}
}

// A caller's context deadline bounds the call as the client's own does,
// and the error names it (a Geo poll's client has no timeout of its own).
func TestContextDeadline(t *testing.T) {
	hung := harness.HungServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := New(hung.URL, Options{HTTPClient: &http.Client{}}).GeoPeer(ctx)
	var ue *UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), " did not answer within ") || strings.Contains(err.Error(), "within 0s") {
		t.Fatalf("a context deadline: %v", err)
	}
}

// With never lengthens the deadline the client was made with.
func TestWithKeepsShorterDeadline(t *testing.T) {
	cl := New("http://a", Options{Timeout: time.Second})
	if got := cl.With("http://b/", time.Hour); got.HTTPClient().Timeout != time.Second || got.Addr() != "http://b" {
		t.Fatalf("With(b, 1h) of a 1s client: %s, %s", got.Addr(), got.HTTPClient().Timeout)
	}
	if got := New("http://a", Options{}).HTTPClient().Timeout; got != DefaultTimeout {
		t.Fatalf("default deadline %s, want %s", got, DefaultTimeout)
	}
}

// An error answer is an *Error with the HTTP status and the appliance's
// messages; what else the answer carries (an unseal's progress) is
// decoded too.
func TestErrorAnswer(t *testing.T) {
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/appliance/v1/unseal" || r.Method != http.MethodPost {
			t.Errorf("asked %s %s", r.Method, r.URL.Path)
		}
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]any{"errors": []string{"the share is malformed", "try again"}, "sealed": true, "progress": 1, "threshold": 3})
	}))
	defer node.Close()
	p, err := New(node.URL, Options{}).Unseal(t.Context(), "not-a-share")
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusBadRequest || err.Error() != "the share is malformed; try again" {
		t.Fatalf("an error answer: %#v", err)
	}
	if !p.Sealed || p.Progress != 1 || p.Threshold != 3 {
		t.Fatalf("the refusal's progress: %+v", p)
	}
}

// Something that is not an appliance answered: the call says so, as a
// node that does not answer.
func TestNotAnAppliance(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>not found</html>", http.StatusNotFound)
	}))
	defer other.Close()
	_, err := New(other.URL, Options{}).Status(t.Context())
	var ue *UnreachableError
	if !errors.As(err, &ue) || err.Error() != other.URL+" answered 404 Not Found, not as an appliance would: check --address" {
		t.Fatalf("another server: %v", err)
	}
}

// A decoded answer: the request carries the token and the JSON body, the
// answer lands in the typed result.
func TestDecodedAnswer(t *testing.T) {
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req PromoteRequest
		if r.URL.Path != "/appliance/v1/geo/promote" || r.Header.Get("X-Vault-Token") != "tok" || json.NewDecoder(r.Body).Decode(&req) != nil || req.Site != "b" || !req.DryRun {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]any{"errors": []string{"unexpected request"}})
			return
		}
		json.NewEncoder(w).Encode(PromoteResult{Site: "b", From: "a", Voters: []string{"b1", "b2", "b3"}, Checks: []GeoCheck{{Check: "quorum", OK: true}}})
	}))
	defer node.Close()
	res, err := New(node.URL, Options{}).Promote(t.Context(), PromoteRequest{Site: "b", DryRun: true}, "tok")
	if err != nil || res.From != "a" || len(res.Voters) != 3 || len(res.Checks) != 1 || !res.Checks[0].OK {
		t.Fatalf("promote dry run: %+v, %v", res, err)
	}
}

// An answer longer than MaxAnswer is cut there and refused, never read
// whole.
func TestAnswerLimit(t *testing.T) {
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(PeerStatus{NodeID: strings.Repeat("n", 2<<10)})
	}))
	defer node.Close()
	if ps, err := New(node.URL, Options{MaxAnswer: 4 << 10}).GeoPeer(t.Context()); err != nil || len(ps.NodeID) != 2<<10 {
		t.Fatalf("an answer under the limit: %v", err)
	}
	_, err := New(node.URL, Options{MaxAnswer: 1 << 10}).GeoPeer(t.Context())
	if err == nil || !strings.HasPrefix(err.Error(), "unexpected answer from "+node.URL) {
		t.Fatalf("an answer over the limit: %v", err)
	}
}

// An address no request can be made for is an *AddressError (a usage
// error to the CLI), not a node that does not answer.
func TestAddressError(t *testing.T) {
	_, err := New("http://[::1", Options{}).Status(t.Context())
	var ae *AddressError
	if !errors.As(err, &ae) || !strings.HasPrefix(err.Error(), `--address "http://[::1": `) {
		t.Fatalf("a malformed address: %v", err)
	}
}
