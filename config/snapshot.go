package config

import (
	"path/filepath"
	"strings"
	"time"
)

// SnapshotSchedule is the snapshot block: Raft snapshots taken by the
// active node at an interval into a directory, with retention.
type SnapshotSchedule struct {
	Interval string `hcl:"interval,optional"`
	// Directory defaults to <data_dir>/snapshots.
	Directory string `hcl:"directory,optional"`
	// RetainCount keeps the newest N; RetainAge deletes older ones. With
	// neither, the newest DefaultSnapshotRetainCount are kept.
	RetainCount int    `hcl:"retain_count,optional"`
	RetainAge   string `hcl:"retain_age,optional"`
}

// Snapshot schedule defaults.
const (
	DefaultSnapshotInterval    = "1h"
	DefaultSnapshotRetainCount = 24
	minSnapshotInterval        = time.Second
)

func (s *SnapshotSchedule) applyDefaults(dataDir string) {
	if s.Interval == "" {
		s.Interval = DefaultSnapshotInterval
	}
	if s.Directory == "" && dataDir != "" {
		s.Directory = filepath.Join(dataDir, "snapshots")
	}
	if s.RetainCount == 0 && s.RetainAge == "" {
		s.RetainCount = DefaultSnapshotRetainCount
	}
}

func (s *SnapshotSchedule) validate(v *validator, dataDir string) {
	if d, err := time.ParseDuration(s.Interval); err != nil || d < minSnapshotInterval {
		v.add("snapshot.interval", "%q is not a duration of at least 1s (e.g. \"1h\")", s.Interval)
	}
	if s.RetainAge != "" {
		if d, err := time.ParseDuration(s.RetainAge); err != nil || d <= 0 {
			v.add("snapshot.retain_age", "%q is not a positive duration (e.g. \"168h\")", s.RetainAge)
		}
	}
	if s.RetainCount < 0 {
		v.add("snapshot.retain_count", "%d is negative; keep at least 1, or 0 with retain_age", s.RetainCount)
	}
	switch {
	case !filepath.IsAbs(s.Directory):
		v.add("snapshot.directory", "%q is not an absolute path", s.Directory)
	case dataDir != "" && within(s.Directory, filepath.Join(dataDir, "raft")):
		v.add("snapshot.directory", "%s is inside Raft's own directory; use <data_dir>/snapshots or another directory", s.Directory)
	}
}

func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}
