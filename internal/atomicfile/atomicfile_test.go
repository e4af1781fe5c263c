package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// A write replaces the file whole, with its mode, and leaves no temp file.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	os.WriteFile(path, []byte("old"), 0o644)
	if err := WriteFile(path, []byte("new"), 0o600, -1, -1); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	fi, _ := os.Stat(path)
	if string(b) != "new" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("content %q mode %v", b, fi.Mode())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "f"), nil, 0o600, -1, -1); err == nil {
		t.Fatal("a write into a missing directory succeeded")
	}
}
