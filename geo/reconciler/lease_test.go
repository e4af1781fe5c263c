package reconciler

import (
	"strings"
	"testing"
	"time"
)

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

// Lease holds back a node that is fenced whatever its epoch lease says,
// and one whose lease does not hold.
func TestLease(t *testing.T) {
	g := &Reconciler{}
	if r := g.Lease(); !strings.Contains(r, "before it answers") {
		t.Fatalf("no check yet: %q", r)
	}
	g.lease.renew(bootClock())
	if r := g.Lease(); r != "" {
		t.Fatalf("lease held: %q", r)
	}
	g.fenced = "fenced: node b2 is in Geo epoch 2"
	if r := g.Lease(); r != g.fenced {
		t.Fatalf("fenced, lease held: %q", r)
	}
}
