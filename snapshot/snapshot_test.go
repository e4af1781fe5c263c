package snapshot

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/openbao/openbao/vault"
)

// The stored keys entry is OpenBao's: the copy of its path here must be
// the embedded version's.
func TestStoredBarrierKeysPathIsOpenBaos(t *testing.T) {
	if StoredBarrierKeysPath != vault.StoredBarrierKeysPath {
		t.Fatalf("StoredBarrierKeysPath %q, OpenBao's %q", StoredBarrierKeysPath, vault.StoredBarrierKeysPath)
	}
}

// List finds what Name names, oldest first, and nothing else.
func TestNameListNewest(t *testing.T) {
	dir := t.TempDir()
	if _, err := Newest(dir); err == nil {
		t.Fatal("Newest of an empty directory found one")
	}
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 123e6, time.UTC)
	for _, at := range []time.Time{t0.Add(time.Hour), t0, t0.Add(2 * time.Hour)} {
		os.WriteFile(filepath.Join(dir, Name(at)), []byte("x"), 0o600)
	}
	os.WriteFile(filepath.Join(dir, Prefix+"not-a-time"+Suffix), []byte("x"), 0o600)
	os.Mkdir(filepath.Join(dir, Name(t0.Add(3*time.Hour))), 0o700)
	files, err := List(dir)
	if err != nil || len(files) != 3 || !files[0].At.Equal(t0) || !files[2].At.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("List: %v %+v", err, files)
	}
	if n, err := Newest(dir); err != nil || n != filepath.Join(dir, Name(t0.Add(2*time.Hour))) {
		t.Fatalf("Newest: %q %v", n, err)
	}
}
