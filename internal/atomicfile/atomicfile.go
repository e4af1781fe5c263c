// Package atomicfile writes small files so that a crash leaves the old
// content or the new one, never a torn file: a temp file beside the
// target, synced, renamed over it, and the directory synced.
package atomicfile

import (
	"os"
	"path/filepath"
)

// WriteFile writes data to path with perm, owned by uid:gid (-1 keeps
// what the process creates).
func WriteFile(path string, data []byte, perm os.FileMode, uid, gid int) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(perm)
	if err == nil && (uid != -1 || gid != -1) {
		err = tmp.Chown(uid, gid)
	}
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// Remove removes path and syncs its directory, so that a crash after it
// returns cannot bring the file back. A missing file is not an error.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
