package httpapi

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// geoGuard lets an answer below 500 out only while the lease holds and the
// node is not fenced (a 404 or a check-and-set's 400 tells of the state as
// a 200 does); server errors always go through.
func TestGeoGuard(t *testing.T) {
	// What the reconciler's Lease says: no check yet, then the lease
	// held, then fenced (geo/reconciler's TestLease).
	reason := "checking the Geo epoch with its peers before it answers"
	logger := hclog.NewInterceptLogger(&hclog.LoggerOptions{Output: io.Discard})
	serve := func(code int) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		w := &leaseWriter{ResponseWriter: rec, lease: func() string { return reason }, logger: logger}
		w.Header().Set("Content-Length", "11")
		w.WriteHeader(code)
		w.Write([]byte(`{"data":1}` + "\n"))
		return rec
	}
	if rec := serve(http.StatusOK); rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "outcome unknown: ") || rec.Header().Get("Content-Length") != "" {
		t.Fatalf("no lease: %d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
	reason = ""
	if rec := serve(http.StatusOK); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"data":1`) {
		t.Fatalf("lease held: %d %q", rec.Code, rec.Body.String())
	}
	if rec := serve(http.StatusNotFound); rec.Code != http.StatusNotFound {
		t.Fatalf("a 404 with the lease: %d", rec.Code)
	}
	reason = "fenced: node b2 is in Geo epoch 2"
	if rec := serve(http.StatusNoContent); rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "fenced: node b2") {
		t.Fatalf("fenced: %d %q", rec.Code, rec.Body.String())
	}
	if rec := serve(http.StatusBadRequest); rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "fenced: node b2") {
		t.Fatalf("a 400 (a check-and-set mismatch?) when fenced: %d %q", rec.Code, rec.Body.String())
	}
	if rec := serve(http.StatusNotFound); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("a 404 when fenced: %d", rec.Code)
	}
	if rec := serve(http.StatusServiceUnavailable); rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"data":1`) {
		t.Fatalf("a 503 when fenced is not passed through: %d %q", rec.Code, rec.Body.String())
	}
	// The gate's guard follows the node's lease; without Geo, nothing is
	// held back and w is not wrapped.
	node := &leaseNode{reason: "fenced: node b2 is in Geo epoch 2", geo: true}
	api := &API{n: node, logger: logger}
	rec := httptest.NewRecorder()
	api.geoGuard(rec).WriteHeader(http.StatusOK)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("fenced, through the gate's guard: %d", rec.Code)
	}
	node.reason, node.geo = "", false
	rec = httptest.NewRecorder()
	if w := api.geoGuard(rec); w != http.ResponseWriter(rec) {
		t.Fatalf("without geo the writer is wrapped: %T", w)
	}
}

// leaseNode is a node whose Geo lease says reason (geo: it has Geo).
type leaseNode struct {
	Node
	reason string
	geo    bool
}

func (n *leaseNode) GeoLease() (string, bool) { return n.reason, n.geo }
