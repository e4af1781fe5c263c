package snapshot

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// A scheduled snapshot is named Prefix + its UTC time (Stamp) + Suffix.
const Prefix, Suffix, Stamp = "gitlab-secrets-appliance-", ".snap", "20060102T150405.000Z"

// Name is the file name of a scheduled snapshot taken at at.
func Name(at time.Time) string { return Prefix + at.UTC().Format(Stamp) + Suffix }

// File is one scheduled snapshot in a directory.
type File struct {
	Path string
	At   time.Time // the time in its name
}

// List is the directory's snapshots by the time in their names, oldest
// first (files of other names are left alone).
func List(dir string) ([]File, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []File
	for _, e := range entries {
		n := e.Name()
		stamp, ok := strings.CutPrefix(n, Prefix)
		if !ok || !strings.HasSuffix(stamp, Suffix) || !e.Type().IsRegular() {
			continue
		}
		at, err := time.Parse(Stamp, strings.TrimSuffix(stamp, Suffix))
		if err != nil {
			continue
		}
		out = append(out, File{Path: filepath.Join(dir, n), At: at})
	}
	slices.SortFunc(out, func(a, b File) int { return a.At.Compare(b.At) })
	return out, nil
}

// Newest is the newest scheduled snapshot in dir (by the time in
// its name).
func Newest(dir string) (string, error) {
	files, err := List(dir)
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("%s holds no scheduled snapshot (%s<time>%s)", dir, Prefix, Suffix)
	}
	return files[len(files)-1].Path, nil
}
