package datadir

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
)

// LockFile is the file in data_dir that a running node holds an
// exclusive lock on (flock), with its process ID in it.
const LockFile = ".lock"

// ErrInUse marks a Start refused because another node (another
// process, or another Appliance in this one) holds the data directory.
var ErrInUse = errors.New("data_dir is in use")

// InUseError says which process holds the data directory.
type InUseError struct {
	Dir string
	PID int // 0 if the lock file does not say
}

func (e *InUseError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "process " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("data_dir %s is in use by %s: one node owns a data directory; "+
		"stop that node first, or give this one its own data_dir", e.Dir, who)
}

func (e *InUseError) Unwrap() error { return ErrInUse }

// Lock is a held lock on a data directory.
type Lock struct{ f *os.File }

// Acquire takes the exclusive lock on dir's lock file without waiting,
// and writes this process's ID into it. The kernel drops the lock when the
// process ends, however it ends (kill -9 included), so a stale file never
// blocks the next start; the file itself stays.
func Acquire(dir string) (*Lock, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data_dir: cannot open the lock file %s: %w; check the directory's owner and permissions", path, config.PathCause(err))
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid := lockHolder(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &InUseError{Dir: dir, PID: pid}
		}
		return nil, fmt.Errorf("data_dir: cannot lock %s: %w", path, err)
	}
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt(pid, 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("data_dir: cannot write the lock file %s: %w", path, config.PathCause(err))
	}
	return &Lock{f: f}, nil
}

// lockHolder is the process ID in a lock file, or 0.
func lockHolder(f *os.File) int {
	b, err := io.ReadAll(io.LimitReader(f, 32))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// Release gives up the lock; safe on nil.
func (l *Lock) Release() error {
	if l == nil {
		return nil
	}
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	return l.f.Close()
}
