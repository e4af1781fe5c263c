package seal

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"

	"github.com/openbao/openbao/helper/pgpkeys"
	"github.com/openbao/openbao/sdk/v2/helper/shamir"
)

// Errors a submitted share can get. Each says what to do; none carries the
// share or any part of it.
var (
	ErrMalformedShare = errors.New("the share is malformed: paste it exactly as init or rotate-shares printed it")
	ErrCorruptShare   = errors.New("the share is corrupted (its checksum does not match): re-enter it carefully, or use another operator's share")
	ErrForeignShare   = errors.New("the share belongs to another cluster")
	ErrVoidShare      = errors.New("the share was voided by a share rotation")
	ErrDuplicateShare = errors.New("this share was already submitted in this unseal attempt: submit a different operator's share")
	ErrWrongShares    = errors.New("the submitted shares do not recover this cluster's key: one of them is wrong; progress was reset, start again")
	ErrNoShamir       = errors.New("Shamir shares are not a seal mechanism of this cluster")
)

const (
	shareVersion = 1
	kekSize      = 32
	partSize     = kekSize + 1 // shamir adds the x coordinate
	checkSize    = 8
	// version | cluster id | shamir generation | threshold | kek check | part | crc32
	shareSize = 1 + clusterIDSize + 4 + 1 + checkSize + partSize + 4
)

// share is one operator's Shamir share of the KEK, with what is needed to
// check it alone: the cluster it belongs to, the share generation (bumped
// by every rotation), the threshold, a check value of the KEK it
// recovers, and a checksum against typing and copying errors.
type share struct {
	cluster   [clusterIDSize]byte
	gen       uint32
	threshold int
	check     [checkSize]byte
	part      []byte
}

func (s share) encode() string {
	b := make([]byte, 0, shareSize)
	b = append(b, shareVersion)
	b = append(b, s.cluster[:]...)
	b = binary.BigEndian.AppendUint32(b, s.gen)
	b = append(b, byte(s.threshold))
	b = append(b, s.check[:]...)
	b = append(b, s.part...)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	return base64.StdEncoding.EncodeToString(b)
}

func decodeShare(text string) (share, error) {
	var s share
	text = strings.TrimSpace(text)
	b, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		b, err = hex.DecodeString(text) // as bao prints "keys"
	}
	if err != nil || len(b) != shareSize || b[0] != shareVersion {
		return s, ErrMalformedShare
	}
	body, sum := b[:shareSize-4], binary.BigEndian.Uint32(b[shareSize-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return s, ErrCorruptShare
	}
	off := 1
	copy(s.cluster[:], body[off:])
	off += clusterIDSize
	s.gen = binary.BigEndian.Uint32(body[off:])
	off += 4
	s.threshold = int(body[off])
	off++
	copy(s.check[:], body[off:])
	off += checkSize
	s.part = bytes.Clone(body[off : off+partSize])
	if s.threshold < 1 {
		return s, ErrMalformedShare
	}
	return s, nil
}

// kekCheck is a short value that tells whether a recovered KEK is the
// right one without revealing anything about it.
func kekCheck(kek []byte) [checkSize]byte {
	m := hmac.New(sha256.New, kek)
	m.Write([]byte("gitlab-secrets-appliance kek check v1"))
	var c [checkSize]byte
	copy(c[:], m.Sum(nil))
	return c
}

// splitKEK makes n shares of kek, any t of which recover it. With pgpKeys
// (one per share, base64 public keys as OpenBao's init takes them) each
// share is returned encrypted to its operator's key, base64-encoded.
func splitKEK(kek []byte, cluster [clusterIDSize]byte, gen uint32, n, t int, pgpKeys []string) ([]string, error) {
	if n < 1 || n > 255 || t < 1 || t > n {
		return nil, fmt.Errorf("invalid share split %d of %d: use 1 <= threshold <= shares <= 255", t, n)
	}
	if n > 1 && t == 1 {
		return nil, fmt.Errorf("threshold 1 of %d shares would let any single share unseal: use a threshold of at least 2", n)
	}
	if len(pgpKeys) > 0 && len(pgpKeys) != n {
		return nil, fmt.Errorf("%d PGP keys for %d shares: give one key per share", len(pgpKeys), n)
	}
	var parts [][]byte
	if t == 1 {
		for i := range n {
			// Shamir needs t >= 2; a 1-of-n "split" is n copies with
			// distinct x coordinates so duplicates are still recognised.
			parts = append(parts, append(bytes.Clone(kek), byte(i+1)))
		}
	} else {
		var err error
		if parts, err = shamir.Split(kek, n, t); err != nil {
			return nil, err
		}
	}
	s := share{cluster: cluster, gen: gen, threshold: t, check: kekCheck(kek)}
	out := make([]string, n)
	for i, p := range parts {
		s.part = p
		out[i] = s.encode()
	}
	if len(pgpKeys) > 0 {
		plain := make([][]byte, n)
		for i := range out {
			plain[i] = []byte(out[i])
		}
		_, enc, err := pgpkeys.EncryptShares(plain, pgpKeys)
		if err != nil {
			return nil, fmt.Errorf("encrypting the shares to the operators' PGP keys: %w", err)
		}
		for i := range enc {
			out[i] = base64.StdEncoding.EncodeToString(enc[i])
		}
	}
	return out, nil
}

// collector gathers the shares of one unseal attempt.
type collector struct {
	parts [][]byte
	first *share
}

// add checks s against the cluster (when known) and the shares so far,
// and records it. It returns the recovered KEK once the threshold is met.
func (c *collector) add(s share, want *header) ([]byte, error) {
	if want != nil {
		if s.cluster != want.clusterID() {
			return nil, fmt.Errorf("%w: it is for cluster %x, this node's cluster is %x", ErrForeignShare, s.cluster, want.clusterID())
		}
		if want.Shamir == nil {
			return nil, ErrNoShamir
		}
		if s.gen != want.Shamir.Gen {
			return nil, fmt.Errorf("%w: it is from share generation %d, the current shares are generation %d", ErrVoidShare, s.gen, want.Shamir.Gen)
		}
	}
	if c.first != nil {
		f := c.first
		switch {
		case s.cluster != f.cluster:
			return nil, fmt.Errorf("%w: it is for cluster %x, the shares submitted so far are for %x", ErrForeignShare, s.cluster, f.cluster)
		case s.gen != f.gen:
			return nil, fmt.Errorf("%w: it is from share generation %d, the shares submitted so far are generation %d", ErrVoidShare, s.gen, f.gen)
		case s.threshold != f.threshold || s.check != f.check:
			return nil, ErrCorruptShare
		}
	}
	for _, p := range c.parts {
		if p[len(p)-1] == s.part[len(s.part)-1] {
			return nil, ErrDuplicateShare
		}
	}
	if c.first == nil {
		c.first = &s
	}
	c.parts = append(c.parts, s.part)
	if len(c.parts) < s.threshold {
		return nil, nil
	}
	defer c.reset()
	var kek []byte
	if s.threshold == 1 {
		kek = bytes.Clone(s.part[:kekSize])
	} else {
		var err error
		if kek, err = shamir.Combine(c.parts); err != nil {
			return nil, ErrWrongShares
		}
	}
	if got := kekCheck(kek); !hmac.Equal(got[:], s.check[:]) {
		return nil, ErrWrongShares
	}
	return kek, nil
}

func (c *collector) progress() (n, threshold int) {
	if c.first == nil {
		return 0, 0
	}
	return len(c.parts), c.first.threshold
}

func (c *collector) reset() {
	for _, p := range c.parts {
		clear(p)
	}
	c.parts, c.first = nil, nil
}
