package appliance

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// A full disk must not take the node down. When Raft cannot append to its
// log (ENOSPC), hashicorp/raft steps its leader down, and a leader that
// cannot write its term cannot be elected again: the node would stop
// answering reads too. So the appliance refuses writes itself before the
// disk is full: when the data dir's filesystem has less than minFree
// left, API writes (on this node, and forwarded to it as the active node)
// answer 507 with what to do, reads go on, and writes come back by
// themselves once space returns. A ballast file (released when space runs
// low) keeps room for Raft's own bookkeeping if something else fills the
// disk faster than the guard looks.
const (
	// diskPoll is how often the guard looks at the free space.
	diskPoll = 100 * time.Millisecond
	// maxMinFree and minFreeShare set minFree: 256 MiB, or 5 % of the
	// filesystem if that is less.
	maxMinFree   = 256 << 20
	minFreeShare = 20
	// ballastSize is the file kept in the data dir for Raft's bookkeeping.
	ballastSize = 16 << 20
	ballastFile = "disk-ballast"
)

// DiskStatus is the data dir's free space as the guard sees it.
type DiskStatus struct {
	FreeBytes    uint64 `json:"free_bytes"`
	MinFreeBytes uint64 `json:"min_free_bytes"`
	// Low: writes are refused until free_bytes is above min_free_bytes.
	Low bool `json:"low"`
}

// diskGuard watches the data dir's filesystem.
type diskGuard struct {
	dir     string
	minFree atomic.Uint64
	free    atomic.Uint64
	low     atomic.Bool
}

func (g *diskGuard) status() DiskStatus {
	return DiskStatus{FreeBytes: g.free.Load(), MinFreeBytes: g.minFree.Load(), Low: g.low.Load()}
}

// look reads the free space; it reports whether low changed.
func (g *diskGuard) look() (changed bool, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(g.dir, &st); err != nil {
		return false, err
	}
	size := st.Blocks * uint64(st.Bsize)
	free := st.Bavail * uint64(st.Bsize)
	minFree := min(uint64(maxMinFree), size/minFreeShare)
	g.minFree.Store(minFree)
	g.free.Store(free)
	// Writes come back only with room above the line for the ballast
	// (released when space ran low) and a quarter more, so that the node
	// does not flap at its edge.
	low := g.low.Load()
	next := low
	switch {
	case !low && free < minFree:
		next = true
	case low && free > minFree+minFree/4+ballastSize:
		next = false
	}
	g.low.Store(next)
	return next != low, nil
}

// watchDisk runs the guard until ctx ends.
func (a *Appliance) watchDisk(ctx context.Context) {
	ballast := filepath.Join(a.cfg.DataDir, ballastFile)
	a.disk.look()
	if !a.disk.low.Load() {
		a.keepBallast(ballast)
	}
	t := time.NewTicker(diskPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := a.disk.look()
		if err != nil || !changed {
			continue
		}
		st := a.disk.status()
		if st.Low {
			os.Remove(ballast)
			a.logger.Error("the data dir is nearly full: API writes are refused until space is freed; reads go on",
				"data_dir", a.cfg.DataDir, "free_bytes", st.FreeBytes, "min_free_bytes", st.MinFreeBytes)
			continue
		}
		a.keepBallast(ballast)
		a.logger.Info("space is back in the data dir: API writes are accepted again", "free_bytes", st.FreeBytes)
	}
}

// keepBallast makes sure the ballast file exists, allocated.
func (a *Appliance) keepBallast(path string) {
	if st, err := os.Stat(path); err == nil && st.Size() == ballastSize {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, ballastSize); err != nil {
		// No fallocate (some filesystems): write it.
		buf := make([]byte, 1<<20)
		for off := int64(0); off < ballastSize; off += int64(len(buf)) {
			if _, err := f.WriteAt(buf, off); err != nil {
				f.Close()
				os.Remove(path)
				return
			}
		}
	}
}

// ErrDiskFull refuses a write while the data dir is nearly full.
var ErrDiskFull = errors.New("the data directory is nearly full: writes are refused until space is freed on it; reads still work")

// diskGate answers API writes with 507 while the disk is low, and turns
// OpenBao's own ENOSPC answers (a write that raced the guard) into the
// same 507.
func (a *Appliance) diskGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, isAPI := strings.CutPrefix(r.URL.Path, "/v1/")
		write := r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions && r.Method != "LIST"
		if !isAPI || !write || gateExempt[strings.TrimSuffix(path, "/")] {
			next.ServeHTTP(w, r)
			return
		}
		if a.disk.low.Load() {
			writeError(w, http.StatusInsufficientStorage, fmt.Errorf("%w (%s: %d bytes free, %d needed)", ErrDiskFull, a.cfg.DataDir, a.disk.free.Load(), a.disk.minFree.Load()))
			return
		}
		h := &heldAnswer{w: w, header: http.Header{}}
		next.ServeHTTP(h, r)
		if h.code == http.StatusInternalServerError && strings.Contains(h.body.String(), "no space left on device") {
			// Faster than the guard: room for Raft to elect its leader again.
			a.disk.low.Store(true)
			os.Remove(filepath.Join(a.cfg.DataDir, ballastFile))
			writeError(w, http.StatusInsufficientStorage, fmt.Errorf("%w (%s: no space left on device)", ErrDiskFull, a.cfg.DataDir))
			return
		}
		h.release()
	})
}
