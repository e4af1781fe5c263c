package reconciler

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
)

// A newer epoch fences a node only when it was made without that node: the
// nodes promoted together may number it differently until Raft tells them
// the same number.
func TestEpochSupersedes(t *testing.T) {
	old := geo.Epoch{}
	e1 := geo.Epoch{Number: 1, Site: "b", Members: []string{"b1", "b2"}}
	for _, c := range []struct {
		e, mine geo.Epoch
		node    string
		want    bool
	}{
		{e1, old, "a1", true},
		{e1, old, "b1", false}, // a member that has not heard yet
		{e1, e1, "a1", false},  // a rejoined node: same number
		{old, e1, "b1", false}, // an older peer fences nobody
		{geo.Epoch{Number: 2, Members: []string{"c1"}}, e1, "b1", true},
	} {
		if got := c.e.Supersedes(c.mine, c.node); got != c.want {
			t.Errorf("epoch %d %v over %d for %s: %v, want %v", c.e.Number, c.e.Members, c.mine.Number, c.node, got, c.want)
		}
	}
}

// The survivors of one promotion merge, whoever heard of them first; the
// RPO is the distance from the kept index to the newest survivor's.
func TestEpochMergeAndRPO(t *testing.T) {
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	a := geo.Epoch{Number: 1, Survivors: []geo.Survivor{{Node: "b2", LastIndex: 448, LastAt: at.Add(7 * time.Millisecond)}}}
	b := geo.Epoch{Number: 1, Survivors: []geo.Survivor{{Node: "b1", LastIndex: 446, LastAt: at}}, KeptBy: "b1", KeptIndex: 446, KeptAt: at}
	if a.RPO() != nil {
		t.Fatal("an RPO before the first active node recorded the kept index")
	}
	m := mergeEpoch(a, b)
	if len(m.Survivors) != 2 || m.Survivors[0].Node != "b1" || m.KeptBy != "b1" {
		t.Fatalf("merged: %+v", m)
	}
	if again := mergeEpoch(m, a); !sameRecord(again, m) || len(again.Survivors) != 2 {
		t.Fatalf("merging twice: %+v", again)
	}
	r := m.RPO()
	if r.KeptIndex != 446 || r.NewestIndex != 448 || r.NewestNode != "b2" || r.LostEntriesAtMost != 2 || r.LostSeconds != 0.007 {
		t.Fatalf("rpo: %+v", r)
	}
}

// The epoch file: none is epoch 0, a torn or foreign one is refused with
// what to do, a written one reads back.
func TestEpochFile(t *testing.T) {
	dir := t.TempDir()
	if e, err := datadir.ReadEpochFile(dir); err != nil || e.Number != 0 {
		t.Fatalf("no file: %+v %v", e, err)
	}
	want := geo.Epoch{Number: 3, Site: "b", At: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Members: []string{"b1"}}
	if err := datadir.WriteEpochFile(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := datadir.ReadEpochFile(dir)
	if err != nil || got.Number != 3 || got.Site != "b" || !got.At.Equal(want.At) {
		t.Fatalf("read back %+v %v", got, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, datadir.GeoEpochFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	os.WriteFile(filepath.Join(dir, datadir.GeoEpochFile), []byte("{torn"), 0o600)
	if _, err := datadir.ReadEpochFile(dir); err == nil {
		t.Fatal("a torn epoch file was taken")
	}
}
