package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	metrics "github.com/armon/go-metrics"
	hclog "github.com/hashicorp/go-hclog"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/atomicfile"
)

const (
	// snapshotRetry is how soon a failed snapshot is tried again (or the
	// interval, if shorter).
	snapshotRetry = time.Minute
	snapshotPoll  = time.Second
)

// Node is what the schedule needs of the running node.
type Node struct {
	// Active: the active node, with its leadership confirmed by a quorum.
	Active func() bool
	// Save writes a snapshot of the node's storage to w.
	Save func(w io.Writer) error
	// DataDir is the node's data dir; MinFree the free space (bytes) the
	// disk guard keeps on its filesystem.
	DataDir string
	MinFree func() uint64
	Logger  hclog.Logger
}

// Schedule runs the snapshot schedule.
type Schedule struct {
	node     Node
	cfg      config.SnapshotSchedule
	interval time.Duration
	maxAge   time.Duration

	mu          sync.Mutex
	taking      bool
	last        *client.SnapshotResult
	lastSuccess *client.SnapshotResult
	next        time.Time
	kept        int
}

// NewSchedule is the schedule of cfg (validated) on node; Run runs it.
func NewSchedule(node Node, cfg config.SnapshotSchedule) *Schedule {
	s := &Schedule{node: node, cfg: cfg}
	s.interval, _ = time.ParseDuration(cfg.Interval)
	if cfg.RetainAge != "" {
		s.maxAge, _ = time.ParseDuration(cfg.RetainAge)
	}
	return s
}

// Run takes a snapshot whenever this node is the active node and the
// newest one in the directory is an interval old (whoever took it: the
// schedule goes on across a leader change).
func (s *Schedule) Run(ctx context.Context) {
	t := time.NewTicker(min(snapshotPoll, s.interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.node.Active() {
			s.mu.Lock()
			s.next = time.Time{}
			s.mu.Unlock()
			continue
		}
		files, _ := List(s.cfg.Directory)
		due := time.Now()
		if len(files) > 0 {
			due = files[len(files)-1].At.Add(s.interval)
		}
		s.mu.Lock()
		if s.last != nil && s.last.Error != "" {
			due = later(due, s.last.At.Add(min(snapshotRetry, s.interval)))
		}
		s.next = due
		s.kept = len(files)
		s.mu.Unlock()
		if time.Now().Before(due) {
			continue
		}
		s.take(ctx)
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// take writes one snapshot (never two at once) and applies retention.
func (s *Schedule) take(ctx context.Context) {
	s.mu.Lock()
	if s.taking {
		s.mu.Unlock()
		return
	}
	s.taking = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.taking = false
		s.mu.Unlock()
	}()
	start := time.Now().UTC()
	res := &client.SnapshotResult{At: start}
	path, info, err := s.write(start)
	if err == nil {
		res.File, res.Size, res.Index = path, info.FileSize, info.Index
		res.Took = time.Since(start).Round(time.Millisecond).String()
		s.node.Logger.Info("snapshot taken", "file", path, "size", info.FileSize, "index", info.Index, "took", res.Took)
		metrics.SetGauge([]string{"appliance", "snapshot", "last_success_timestamp"}, float32(start.Unix()))
		metrics.SetGauge([]string{"appliance", "snapshot", "last_size_bytes"}, float32(info.FileSize))
	} else {
		res.Error = err.Error()
		s.node.Logger.Error("snapshot failed; the node serves on and tries again", "directory", s.cfg.Directory, "error", err,
			"retry_in", min(snapshotRetry, s.interval).String())
		metrics.IncrCounter([]string{"appliance", "snapshot", "failures"}, 1)
	}
	s.mu.Lock()
	s.last = res
	if err == nil {
		s.lastSuccess = res
	}
	s.mu.Unlock()
}

// write takes the snapshot into a hidden temp file beside its final name,
// checks it, and only then gives it its name: a file with the snapshot
// name is always whole.
func (s *Schedule) write(at time.Time) (string, *Info, error) {
	dir := s.cfg.Directory
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("cannot create %s: %w", dir, config.PathCause(err))
	}
	if err := s.roomFor(dir); err != nil {
		return "", nil, err
	}
	name := Name(at)
	tmp, err := atomicfile.Create(dir, name)
	if err != nil {
		return "", nil, fmt.Errorf("cannot write in %s: %w", dir, config.PathCause(err))
	}
	defer tmp.Discard()
	err = s.node.Save(tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	// raft-snapshot's errors do not wrap: match the message.
	if err != nil && (errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), syscall.ENOSPC.Error())) {
		return "", nil, fmt.Errorf("%s is full (no space left on device): free some space or point snapshot.directory elsewhere", dir)
	}
	if err != nil {
		return "", nil, fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	info, err := InspectFile(tmp.Name())
	if err != nil {
		return "", nil, fmt.Errorf("the snapshot just written does not check out: %w", err)
	}
	s.prune(true)
	path := filepath.Join(dir, name)
	if err := tmp.Commit(path); err != nil {
		return "", nil, err
	}
	return path, info, nil
}

// roomFor refuses a snapshot that would not fit: about the size of the
// last one (the first one is tried), and, on the data dir's filesystem,
// without going below the disk guard's line (that would refuse API
// writes).
func (s *Schedule) roomFor(dir string) error {
	need := int64(0)
	s.mu.Lock()
	if s.lastSuccess != nil {
		need = s.lastSuccess.Size + s.lastSuccess.Size/4
	}
	s.mu.Unlock()
	var st, data syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return err
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if syscall.Statfs(s.node.DataDir, &data) == nil && data.Fsid == st.Fsid {
		need += int64(s.node.MinFree())
	}
	if free < need {
		return fmt.Errorf("not enough space in %s for a snapshot: %d bytes free, about %d needed; free some space or point snapshot.directory elsewhere", dir, free, need)
	}
	return nil
}

// prune applies retention: the newest retain_count, none older than
// retain_age; the newest one always stays. It runs just before a new
// snapshot is named (incoming: it counts as the newest), so that the
// directory never holds more than retain_count.
func (s *Schedule) prune(incoming bool) {
	files, err := List(s.cfg.Directory)
	if err != nil {
		return
	}
	total, candidates := len(files), files
	if incoming {
		total++
	} else if len(files) > 0 {
		candidates = files[:len(files)-1]
	}
	keep := total
	if s.cfg.RetainCount > 0 {
		keep = min(keep, s.cfg.RetainCount)
	}
	var removed []string
	for i, f := range candidates {
		old := s.maxAge > 0 && time.Since(f.At) > s.maxAge
		if i < total-keep || old {
			if err := os.Remove(f.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
				s.node.Logger.Error("snapshot retention: cannot remove an old snapshot", "file", f.Path, "error", err)
				continue
			}
			removed = append(removed, filepath.Base(f.Path))
		}
	}
	if len(removed) > 0 {
		s.node.Logger.Info("snapshot retention: removed old snapshots", "files", strings.Join(removed, ","))
	}
	s.mu.Lock()
	s.kept = total - len(removed)
	s.mu.Unlock()
}

// Status is what the node's status says of the schedule.
func (s *Schedule) Status() *client.SnapshotStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &client.SnapshotStatus{Directory: s.cfg.Directory, Interval: s.cfg.Interval, Kept: s.kept, Last: s.last, LastSuccess: s.lastSuccess, Next: s.next}
}
