package snapshot

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
)

// Retention before a new snapshot is named: the newest retain_count in
// all (the new one counted), none older than retain_age, other files
// left alone; without a new one the newest always stays.
func TestSnapshotRetention(t *testing.T) {
	dir := t.TempDir()
	now := time.Now().UTC()
	name := func(age time.Duration) string {
		return Name(now.Add(-age))
	}
	ages := []time.Duration{240 * time.Hour, 72 * time.Hour, 3 * time.Hour, 2 * time.Hour, time.Hour}
	for _, a := range ages {
		os.WriteFile(filepath.Join(dir, name(a)), []byte("x"), 0o600)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600)
	s := NewSchedule(Node{Logger: hclog.NewInterceptLogger(&hclog.LoggerOptions{Output: io.Discard})}, config.SnapshotSchedule{Interval: "1h", Directory: dir, RetainCount: 3, RetainAge: "48h"})
	left := func() []string {
		var out []string
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	s.prune(true)
	want := []string{name(2 * time.Hour), name(time.Hour), "notes.txt"}
	if got := left(); !slices.Equal(got, want) {
		t.Fatalf("after prune(incoming): %v, want %v", got, want)
	}
	// All too old: the newest stays.
	s = NewSchedule(s.node, config.SnapshotSchedule{Interval: "1h", Directory: dir, RetainAge: "1m"})
	s.prune(false)
	if got := left(); !slices.Equal(got, []string{name(time.Hour), "notes.txt"}) {
		t.Fatalf("after prune with every snapshot too old: %v", got)
	}
}
