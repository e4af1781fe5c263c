package appliance

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// The room kept in a bbolt file is allocated past its end and leaves its
// size alone; a file that is not there yet is left alone.
func TestKeepRoom(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vault.db")
	keepRoom(path)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("keepRoom made a file that was not there: %v", err)
	}
	data := bytes.Repeat([]byte("x"), 32<<10)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// A hole below the end, as bbolt's growth by truncate leaves one.
	if err := os.Truncate(path, 1<<20); err != nil {
		t.Fatal(err)
	}
	keepRoom(path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 1<<20 {
		t.Errorf("keepRoom changed the size: %d", fi.Size())
	}
	allocated := fi.Sys().(*syscall.Stat_t).Blocks * 512
	if allocated < 1<<20+reserve {
		var fs syscall.Statfs_t
		syscall.Statfs(dir, &fs)
		t.Fatalf("%d bytes allocated, want at least %d (filesystem type %#x)", allocated, 1<<20+reserve, fs.Type)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got[:len(data)], data) || !bytes.Equal(got[len(data):], make([]byte, len(got)-len(data))) {
		t.Fatal("keepRoom changed the file's content")
	}
}
