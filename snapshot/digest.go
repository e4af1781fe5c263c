package snapshot

import (
	"crypto/hmac"
	"crypto/sha256"
	"io"
	"strings"

	"github.com/openbao/openbao/sdk/v2/plugin/pb"
)

// Digests are keyed hashes (HMAC-SHA256 under a key the caller draws and
// keeps) of storage entries by path: two copies of the storage compare
// without a value ever leaving either, and a digest tells nothing about a
// value to whoever lacks the key.
type Digests map[string][sha256.Size]byte

// EntryDigest is the digest of one storage entry under key.
func EntryDigest(key []byte, path string, value []byte) [sha256.Size]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(path))
	m.Write([]byte{0})
	m.Write(value)
	var out [sha256.Size]byte
	copy(out[:], m.Sum(nil))
	return out
}

// DigestSnapshot digests every storage entry of a snapshot whose path
// starts with prefix ("logical/": every secret engine's data).
func DigestSnapshot(r io.Reader, key []byte, prefix string) (Digests, error) {
	out := Digests{}
	_, err := scan(r, func(e *pb.StorageEntry) {
		if strings.HasPrefix(e.Key, prefix) {
			out[e.Key] = EntryDigest(key, e.Key, e.Value)
		}
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
