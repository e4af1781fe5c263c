package geo

import (
	"strings"
	"testing"
	"time"
)

func TestResolve(t *testing.T) {
	top := topo(3, 2, 1) // A primary
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	primary := func(r Resolution) string { return r.Topology.Primary().Name }

	if r := Resolve(top, nil, nil); primary(r) != "A" || r.Source != "topology" || r.Persist != nil {
		t.Fatalf("plain: %+v", r)
	}
	// gitlab-ctl geo promote on b1: B is primary, and that is persisted.
	r := Resolve(top, nil, []Claim{{Node: "b1", Role: RolePrimary, At: t0}, {Node: "a1", Role: RoleSecondary, At: t0}})
	if primary(r) != "B" || r.Persist == nil || r.Persist.Site != "B" || r.Persist.TopologyPrimary != "A" || r.Source != "gitlab-cluster.json on b1" {
		t.Fatalf("claim: %+v", r)
	}
	o := r.Persist
	// The same claim again (b1 down or not) changes nothing more.
	if r := Resolve(top, o, []Claim{{Node: "b1", Role: RolePrimary, At: t0}}); primary(r) != "B" || r.Persist != nil {
		t.Fatalf("same claim: %+v", r)
	}
	if r := Resolve(top, o, nil); primary(r) != "B" {
		t.Fatalf("claimant unreachable: %+v", r)
	}
	// Omnibus re-renders the topology with B primary: the override lapses
	// and the topology rules; later failing back to A in the topology is
	// not undone by B's old file.
	topB, _ := top.WithPrimary("B")
	r = Resolve(topB, o, []Claim{{Node: "b1", Role: RolePrimary, At: t0}})
	if primary(r) != "B" || r.Source != "topology" || r.Persist == nil || !r.Persist.Lapsed || r.Persist.At != t0 {
		t.Fatalf("topology caught up: %+v", r)
	}
	lapsed := r.Persist
	if r := Resolve(top, lapsed, []Claim{{Node: "b1", Role: RolePrimary, At: t0}}); primary(r) != "A" || r.Persist != nil {
		t.Fatalf("failed back: %+v", r)
	}
	// geo promote --site C after B's claim: C; a newer claim from A: A.
	oc := &Override{Site: "C", TopologyPrimary: "A", Source: "geo promote", At: t0.Add(time.Hour)}
	if r := Resolve(top, oc, []Claim{{Node: "b1", Role: RolePrimary, At: t0}}); primary(r) != "C" || r.Source != "geo promote" {
		t.Fatalf("promoted to C: %+v", r)
	}
	if r := Resolve(top, oc, []Claim{{Node: "a2", Role: RolePrimary, At: t0.Add(2 * time.Hour)}}); primary(r) != "A" || r.Persist == nil {
		t.Fatalf("newer claim: %+v", r)
	}
	// Two sites claim: nothing moves, and it says why.
	r = Resolve(top, nil, []Claim{{Node: "b1", Role: RolePrimary, At: t0}, {Node: "c1", Role: RolePrimary, At: t0}})
	if primary(r) != "A" || r.Persist != nil || !strings.Contains(strings.Join(r.Notes, ""), "claims primary for 2 sites: B (b1), C (c1)") {
		t.Fatalf("two claims: %+v", r)
	}
	// A claim from a node the topology does not list is ignored.
	if r := Resolve(top, nil, []Claim{{Node: "zz", Role: RolePrimary, At: t0}}); primary(r) != "A" {
		t.Fatalf("unknown node: %+v", r)
	}
}
