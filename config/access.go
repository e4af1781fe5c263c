package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// AccessCheck is a path the node will use, and how: "write" (a directory
// it creates files in, created if missing), "append" (a file it appends
// to, created if missing), "read" (a file it reads).
type AccessCheck struct {
	Key  string // the config key, for the problem
	Path string
	Mode string
}

// AccessChecks lists the paths the node writes and the files it reads at
// start, with the config keys that name them: what the user the node
// runs as must be able to do (see CheckAccess). Load applies defaults
// first, so the snapshot directory is listed even when the file names
// none.
func (c *Config) AccessChecks() []AccessCheck {
	var out []AccessCheck
	add := func(key, path, mode string) {
		if path != "" {
			out = append(out, AccessCheck{Key: key, Path: path, Mode: mode})
		}
	}
	add("data_dir", c.DataDir, "write")
	if c.Snapshot != nil {
		add("snapshot.directory", c.Snapshot.Directory, "write")
	}
	for i, a := range c.Audit {
		if p := a.Options["file_path"]; a.Type == "file" && p != "stdout" && p != "discard" {
			add(fmt.Sprintf("audit[%d].options.file_path", i), p, "append")
		}
	}
	for i, l := range c.Listeners {
		add(fmt.Sprintf("listener[%d].tls_cert_file", i), l.TLSCertFile, "read")
		add(fmt.Sprintf("listener[%d].tls_key_file", i), l.TLSKeyFile, "read")
		add(fmt.Sprintf("listener[%d].tls_client_ca_file", i), l.TLSClientCAFile, "read")
	}
	if c.Seal != nil && c.Seal.PKCS11 != nil {
		add("seal.pkcs11.pin_file", c.Seal.PKCS11.PINFile, "read")
	}
	return out
}

// CheckAccess tries each check with this process's credentials, leaving
// nothing behind: a directory must take a new file (a missing one: its
// nearest existing parent must take a new directory), a file must open
// for appending (a missing one: as a directory to write), a file to read
// must open. who names the user in the problems ("user git (uid 998)").
// Run it with the credentials the node runs with (see `config validate
// --user`): a config that is valid for root may name a directory that the
// service user can never write.
func CheckAccess(checks []AccessCheck, who string) []Problem {
	var out []Problem
	for _, c := range checks {
		if err := checkAccess(c); err != nil {
			out = append(out, Problem{Key: c.Key, Message: fmt.Sprintf("%s cannot %s %s: %v", who, verb(c.Mode), c.Path, err)})
		}
	}
	return out
}

func verb(mode string) string {
	switch mode {
	case "read":
		return "read"
	case "append":
		return "append to"
	}
	return "create files in"
}

// denied explains a permission error on path: the first directory on
// the way that cannot be entered, with its owner and mode, or err.
func denied(path string, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return PathCause(err)
	}
	path = filepath.Clean(path)
	prefix := string(filepath.Separator)
	rest := path[1:]
	for rest != "" {
		var part string
		part, rest, _ = cutSep(rest)
		next := filepath.Join(prefix, part)
		if _, err := os.Lstat(next); errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("permission denied: %s cannot be entered (%s)", prefix, owner(prefix))
		}
		prefix = next
	}
	if st, serr := os.Stat(path); serr == nil && st.IsDir() {
		return fmt.Errorf("permission denied (%s is %s)", path, owner(path))
	}
	return PathCause(err)
}

func cutSep(s string) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == filepath.Separator {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// owner is "owner uid 998 gid 998, mode 0700" for path, as far as it
// can be read.
func owner(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return "not readable: " + PathCause(err).Error()
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf("owner uid %d gid %d, mode %04o", sys.Uid, sys.Gid, st.Mode().Perm())
	}
	return fmt.Sprintf("mode %04o", st.Mode().Perm())
}

func checkAccess(c AccessCheck) error {
	switch c.Mode {
	case "read":
		f, err := os.Open(c.Path)
		if err != nil {
			return denied(c.Path, err)
		}
		return f.Close()
	case "append":
		f, err := os.OpenFile(c.Path, os.O_WRONLY|os.O_APPEND, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return checkDirWritable(filepath.Dir(c.Path))
		}
		if err != nil {
			return denied(c.Path, err)
		}
		return f.Close()
	}
	return checkDirWritable(c.Path)
}

// checkDirWritable: dir takes a new file, or, missing, its nearest
// existing parent takes a new directory (the node creates it, 0700).
func checkDirWritable(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case err == nil && !st.IsDir():
		return errors.New("it is not a directory")
	case err == nil:
		f, err := os.CreateTemp(dir, ".gsa-validate-*")
		if err != nil {
			return denied(dir, err)
		}
		f.Close()
		return os.Remove(f.Name())
	case errors.Is(err, fs.ErrNotExist):
		parent := filepath.Dir(dir)
		if parent == dir {
			return PathCause(err)
		}
		for {
			st, err := os.Stat(parent)
			if err == nil {
				if !st.IsDir() {
					return fmt.Errorf("%s is not a directory", parent)
				}
				break
			}
			if !errors.Is(err, fs.ErrNotExist) || filepath.Dir(parent) == parent {
				return denied(parent, err)
			}
			parent = filepath.Dir(parent)
		}
		d, err := os.MkdirTemp(parent, ".gsa-validate-*")
		if err != nil {
			return fmt.Errorf("it does not exist, and %s takes no new directory: %v", parent, denied(parent, err))
		}
		return os.Remove(d)
	default:
		return denied(dir, err)
	}
}
