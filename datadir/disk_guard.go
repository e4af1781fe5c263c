package datadir

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
)

// A full disk must not take the node down. When Raft cannot append to its
// log (ENOSPC), hashicorp/raft steps its leader down, and a leader that
// cannot write its term cannot be elected again; when OpenBao's FSM cannot
// write vault.db it panics. So the appliance refuses writes itself before
// the disk is full: when the data dir's filesystem has less than minFree
// left, API writes (on this node, and forwarded to it as the active node)
// answer 507 with what to do, reads go on, and writes come back by
// themselves once space returns (httpapi's diskGate). The free space is
// read every DiskPoll and again before every API write.
//
// Raft's own bookkeeping and the writes already in its log still need
// room after that. A file of spare space would not keep it: when it is
// freed, whatever fills the disk takes it. So the room is reserved inside
// the two bbolt files themselves (raft/raft.db, the log; vault.db, the
// FSM): blocks allocated past their end (fallocate KEEP_SIZE), which bbolt
// grows into without asking the filesystem, and which no other process can
// take. bbolt grows a file by truncating it to what it needs plus its
// AllocSize (16 MiB: OpenBao's 100 GB InitialMmapSize puts every file past
// bbolt's small-file case), which leaves a hole where nothing was
// allocated; a write into that hole on a full disk is the FSM's panic. So
// the room is twice AllocSize, topped up when a quarter is used: one
// growth stays inside it even before the guard's next look. It is topped
// up whether or not the disk is low: the writes already in Raft's log
// need it most then.
const (
	// DiskPoll is how often the node has the guard look at the free
	// space.
	DiskPoll = 100 * time.Millisecond
	// maxMinFree and minFreeShare set minFree: 256 MiB, or 5 % of the
	// filesystem if that is less.
	maxMinFree   = 256 << 20
	minFreeShare = 20
	// reserve is the room kept allocated past the end of each bbolt
	// file: twice bbolt's AllocSize (see above).
	reserve = 2 * 16 << 20
	// oldBallast is the spare-space file earlier versions kept.
	oldBallast = "disk-ballast"
)

// reservedFiles are the bbolt files the guard keeps room in, relative to
// the data dir.
var reservedFiles = []string{"vault.db", filepath.Join("raft", "raft.db")}

// DiskGuard watches the data dir's filesystem: Look reads the free space,
// Status says what it found, KeepRoom keeps the reserve in the bbolt files.
type DiskGuard struct {
	dir     string
	mu      sync.Mutex // one look at a time, so a change is seen once
	minFree atomic.Uint64
	free    atomic.Uint64
	low     atomic.Bool
	ballast sync.Once // the old ballast file removed
}

// NewDiskGuard watches the filesystem of the data dir dir.
func NewDiskGuard(dir string) *DiskGuard { return &DiskGuard{dir: dir} }

// Status is what the last Look found.
func (g *DiskGuard) Status() client.DiskStatus {
	return client.DiskStatus{FreeBytes: g.free.Load(), MinFreeBytes: g.minFree.Load(), Low: g.low.Load()}
}

// MinFree is the free space below which writes are refused, as the last
// Look computed it.
func (g *DiskGuard) MinFree() uint64 { return g.minFree.Load() }

// MarkLow marks the disk low until the next Look finds room (a write found
// no space left).
func (g *DiskGuard) MarkLow() { g.low.Store(true) }

// Look reads the free space; it reports whether low changed.
func (g *DiskGuard) Look() (changed bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var st syscall.Statfs_t
	if err := syscall.Statfs(g.dir, &st); err != nil {
		return false, err
	}
	size := st.Blocks * uint64(st.Bsize)
	free := st.Bavail * uint64(st.Bsize)
	minFree := min(uint64(maxMinFree), size/minFreeShare)
	g.minFree.Store(minFree)
	g.free.Store(free)
	// Writes come back only with a quarter more than the line, so that
	// the node does not flap at its edge.
	low := g.low.Load()
	next := low
	switch {
	case !low && free < minFree:
		next = true
	case low && free > minFree+minFree/4:
		next = false
	}
	g.low.Store(next)
	return next != low, nil
}

// KeepRoom keeps the reserve past the end of each bbolt file of the data
// dir (see keepRoom), and removes the spare-space file earlier versions
// kept.
func (g *DiskGuard) KeepRoom() {
	g.ballast.Do(func() { os.Remove(filepath.Join(g.dir, oldBallast)) })
	for _, f := range reservedFiles {
		keepRoom(filepath.Join(g.dir, f))
	}
}

// keepRoom makes sure reserve bytes are allocated past the end of the
// file at path (and that the file has no holes bbolt would write into),
// without changing its size. A file that does not exist yet, or a
// filesystem without fallocate, is left as it is: the guard's line still
// refuses writes before the disk is full.
func keepRoom(path string) {
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	want := fi.Size() + reserve
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 >= want-reserve/4 {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	syscall.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, want)
}
