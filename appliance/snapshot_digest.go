package appliance

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/openbao/openbao/sdk/v2/plugin/pb"
	bolt "go.etcd.io/bbolt"
)

// Digests are keyed hashes (HMAC-SHA256 under a key the caller draws and
// keeps) of storage entries by path: two copies of the storage compare
// without a value ever leaving either, and a digest tells nothing about a
// value to whoever lacks the key.
type Digests map[string][sha256.Size]byte

func digest(key []byte, path string, value []byte) [sha256.Size]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(path))
	m.Write([]byte{0})
	m.Write(value)
	var out [sha256.Size]byte
	copy(out[:], m.Sum(nil))
	return out
}

// SnapshotDigests digests every storage entry of a snapshot whose path
// starts with prefix ("logical/": every secret engine's data).
func SnapshotDigests(r io.Reader, key []byte, prefix string) (Digests, error) {
	out := Digests{}
	_, err := scanSnapshot(r, func(e *pb.StorageEntry) {
		if strings.HasPrefix(e.Key, prefix) {
			out[e.Key] = digest(key, e.Key, e.Value)
		}
	})
	return out, err
}

// StorageDigests digests the entries under prefix in a stopped node's
// storage (its data dir's vault.db, opened read-only).
func StorageDigests(dataDir string, key []byte, prefix string) (Digests, error) {
	if _, err := verifyBolt(filepath.Join(dataDir, "vault.db")); err != nil {
		return nil, fmt.Errorf("%s: %s", filepath.Join(dataDir, "vault.db"), damageText(err))
	}
	db, err := bolt.Open(filepath.Join(dataDir, "vault.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", filepath.Join(dataDir, "vault.db"), err)
	}
	defer db.Close()
	out := Digests{}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("data"))
		if b == nil {
			return errors.New("the storage has no data bucket")
		}
		c := b.Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && strings.HasPrefix(string(k), prefix); k, v = c.Next() {
			out[string(k)] = digest(key, string(k), v)
		}
		return nil
	})
	return out, err
}

// Missing lists the paths of want that got lacks or holds with another
// value.
func (want Digests) Missing(got Digests) []string {
	var out []string
	for p, d := range want {
		if g, ok := got[p]; !ok || !hmac.Equal(g[:], d[:]) {
			out = append(out, p)
		}
	}
	return out
}
