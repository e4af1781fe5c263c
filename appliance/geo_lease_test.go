package appliance

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func leaseAppliance() *Appliance {
	a := &Appliance{logger: hclog.NewInterceptLogger(&hclog.LoggerOptions{Output: io.Discard})}
	a.geo = &geoRun{a: a}
	return a
}

// The lease holds for geoLease from the start of the last clean check:
// none before the first, and a check that started before a stall renews
// nothing that outlives it.
func TestEpochLease(t *testing.T) {
	var l epochLease
	if r := l.lapsed(); !strings.Contains(r, "before it answers") {
		t.Fatalf("no check yet: %q", r)
	}
	l.renew(bootClock())
	if r := l.lapsed(); r != "" {
		t.Fatalf("fresh check: %q", r)
	}
	stale := bootClock() - geoLease - time.Second // a check that started before a stall
	var s epochLease
	s.renew(stale)
	if r := s.lapsed(); !strings.Contains(r, "re-checking the Geo epoch") {
		t.Fatalf("check started before a stall: %q", r)
	}
	l.renew(stale) // an older check finishing late does not move the lease back
	if r := l.lapsed(); r != "" {
		t.Fatalf("after a late old check: %q", r)
	}
}

// geoGuard lets an answer below 500 out only while the lease holds and the
// node is not fenced (a 404 or a check-and-set's 400 tells of the state as
// a 200 does); server errors always go through.
func TestGeoGuard(t *testing.T) {
	a := leaseAppliance()
	serve := func(code int) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		w := a.geoGuard(rec)
		w.Header().Set("Content-Length", "11")
		w.WriteHeader(code)
		w.Write([]byte(`{"data":1}` + "\n"))
		return rec
	}
	if rec := serve(http.StatusOK); rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "outcome unknown: ") || rec.Header().Get("Content-Length") != "" {
		t.Fatalf("no lease: %d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
	a.geo.lease.renew(bootClock())
	if rec := serve(http.StatusOK); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"data":1`) {
		t.Fatalf("lease held: %d %q", rec.Code, rec.Body.String())
	}
	if rec := serve(http.StatusNotFound); rec.Code != http.StatusNotFound {
		t.Fatalf("a 404 with the lease: %d", rec.Code)
	}
	a.geo.fenced = "fenced: node b2 is in Geo epoch 2"
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
	// Without Geo, nothing is held back.
	plain := &Appliance{}
	rec := httptest.NewRecorder()
	plain.geoGuard(rec).WriteHeader(http.StatusOK)
	if rec.Code != http.StatusOK {
		t.Fatalf("without geo: %d", rec.Code)
	}
}
