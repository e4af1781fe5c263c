package datadir

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/snapshot"
	bolt "go.etcd.io/bbolt"
)

// StorageDigests digests the entries under prefix in a stopped node's
// storage (its data dir's vault.db, opened read-only).
func StorageDigests(dataDir string, key []byte, prefix string) (snapshot.Digests, error) {
	if _, err := verifyBolt(filepath.Join(dataDir, "vault.db")); err != nil {
		return nil, fmt.Errorf("%s: %s", filepath.Join(dataDir, "vault.db"), damageText(err))
	}
	db, err := bolt.Open(filepath.Join(dataDir, "vault.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", filepath.Join(dataDir, "vault.db"), err)
	}
	defer db.Close()
	out := snapshot.Digests{}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("data"))
		if b == nil {
			return errors.New("the storage has no data bucket")
		}
		c := b.Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && strings.HasPrefix(string(k), prefix); k, v = c.Next() {
			out[string(k)] = snapshot.EntryDigest(key, string(k), v)
		}
		return nil
	})
	return out, err
}
