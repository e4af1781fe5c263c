package atomicfile

import (
	"errors"
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

// A streamed file has no name until Commit; Discard leaves nothing;
// CommitNew leaves an existing file alone.
func TestTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "snap")
	tmp, err := Create(dir, "snap")
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Discard()
	tmp.Write([]byte("one "))
	tmp.Write([]byte("two"))
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the name exists before Commit: %v", err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(tmp.Name()); string(b) != "one two" {
		t.Fatalf("temp file holds %q", b)
	}
	if err := tmp.CommitNew(path); err != nil {
		t.Fatal(err)
	}
	tmp.Discard()
	if b, _ := os.ReadFile(path); string(b) != "one two" {
		t.Fatalf("committed file holds %q", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}

	again, err := Create(dir, "snap")
	if err != nil {
		t.Fatal(err)
	}
	again.Write([]byte("other"))
	if err := again.CommitNew(path); !errors.Is(err, os.ErrExist) {
		t.Fatalf("CommitNew over an existing file: %v", err)
	}
	again.Discard()
	if b, _ := os.ReadFile(path); string(b) != "one two" {
		t.Fatalf("CommitNew changed the existing file: %q", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("Discard left: %v", entries)
	}
}
