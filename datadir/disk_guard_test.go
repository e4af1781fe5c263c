package datadir

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"
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

// bbolt grows a file by truncating it past what it needs (its AllocSize,
// 16 MiB, with OpenBao's InitialMmapSize): the room kept must cover such a
// growth, or the grown part is a hole that a write on a full disk cannot
// fill (OpenBao's FSM panics on that). Each growth must land in allocated
// blocks, with the guard topping up only after it.
func TestReserveOutlastsBboltGrowth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vault.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{InitialMmapSize: 100 << 30, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keepRoom(path)
	value := bytes.Repeat([]byte("v"), 256<<10)
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	// keepRoom allocates [0, size+reserve): a growth is safe when the new
	// size stays within that.
	allocated := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Blocks * 512
	}
	last, growths := size(), 0
	if allocated() < last+reserve {
		t.Skip("the filesystem of the test's temporary dir cannot allocate past a file's end")
	}
	for i := 0; growths < 3; i++ {
		if i > 2000 {
			t.Fatalf("the file never grew three times (%d bytes)", last)
		}
		if err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return b.Put([]byte(fmt.Sprint(i)), value)
		}); err != nil {
			t.Fatal(err)
		}
		now := size()
		if now == last {
			continue
		}
		growths++
		if now > last+reserve {
			t.Fatalf("growth %d: bbolt grew the file from %d to %d bytes, past the %d bytes kept: the grown part has a hole", growths, last, now, last+reserve)
		}
		last = now
		keepRoom(path)
	}
}
