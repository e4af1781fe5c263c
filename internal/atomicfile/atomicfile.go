// Package atomicfile writes files so that a crash leaves the old content or
// the new one, never a torn file: a temp file beside the target, synced,
// renamed (or linked) to its name, and the directory synced. WriteFile does
// it for bytes in memory; Create streams (a snapshot larger than memory).
package atomicfile

import (
	"os"
	"path/filepath"
)

// WriteFile writes data to path with perm, owned by uid:gid (-1 keeps
// what the process creates).
func WriteFile(path string, data []byte, perm os.FileMode, uid, gid int) error {
	t, err := Create(filepath.Dir(path), filepath.Base(path))
	if err != nil {
		return err
	}
	defer t.Discard()
	err = t.f.Chmod(perm)
	if err == nil && (uid != -1 || gid != -1) {
		err = t.f.Chown(uid, gid)
	}
	if err == nil {
		_, err = t.Write(data)
	}
	if err != nil {
		return err
	}
	return t.Commit(path)
}

// Temp is a file being written beside its final name, hidden: nothing
// appears under that name before Commit, and Discard leaves nothing.
type Temp struct {
	f      *os.File
	closed bool
	err    error // of the close
}

// Create opens a hidden temp file in dir (mode 0600) for a file that will
// be named after name.
func Create(dir, name string) (*Temp, error) {
	f, err := os.CreateTemp(dir, "."+name+".partial-*")
	if err != nil {
		return nil, err
	}
	return &Temp{f: f}, nil
}

// Write writes to the temp file.
func (t *Temp) Write(p []byte) (int, error) { return t.f.Write(p) }

// Name is the temp file's path (to check what was written before Commit).
func (t *Temp) Name() string { return t.f.Name() }

// Close syncs the temp file to disk and closes it; Commit does it too.
// Call it before reading the file back by Name.
func (t *Temp) Close() error {
	if !t.closed {
		t.closed = true
		t.err = t.f.Sync()
		if err := t.f.Close(); t.err == nil {
			t.err = err
		}
	}
	return t.err
}

// Commit gives the temp file the name path, replacing what was there, and
// syncs the directory: once it returns, a crash leaves the new file.
func (t *Temp) Commit(path string) error {
	return t.commit(path, os.Rename)
}

// CommitNew is Commit for a path that must not exist yet: an existing file
// is left alone and the error is os.ErrExist.
func (t *Temp) CommitNew(path string) error {
	return t.commit(path, func(tmp, path string) error {
		if err := os.Link(tmp, path); err != nil {
			return err
		}
		return os.Remove(tmp)
	})
}

func (t *Temp) commit(path string, name func(tmp, path string) error) error {
	if err := t.Close(); err != nil {
		return err
	}
	if err := name(t.f.Name(), path); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// Discard removes the temp file if it is still there; after a Commit it
// does nothing. Safe to defer.
func (t *Temp) Discard() {
	t.Close()
	os.Remove(t.f.Name())
}

// Remove removes path and syncs its directory, so that a crash after it
// returns cannot bring the file back. A missing file is not an error.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir makes the creations, renames and removals in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
