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
	ErrWrongShares    = errors.New("the submitted shares do not recover this cluster's key: one of them is wrong; those shares were discarded, start again")
	ErrNoShamir       = errors.New("Shamir shares are not a seal mechanism of this cluster")
	ErrUnknownShare   = errors.New("the share was not issued for this cluster's current shares")
	ErrTooManyShares  = errors.New("too many shares were submitted before this node could check them: submit the genuine shares again once it has heard from its cluster's leader (it then checks each share on its own)")
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
	b := s.body()
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	return base64.StdEncoding.EncodeToString(b)
}

// body is the share's encoding without its checksum.
func (s share) body() []byte {
	b := make([]byte, 0, shareSize-4)
	b = append(b, shareVersion)
	b = append(b, s.cluster[:]...)
	b = binary.BigEndian.AppendUint32(b, s.gen)
	b = append(b, byte(s.threshold))
	b = append(b, s.check[:]...)
	return append(b, s.part...)
}

// digest names the share in its header's list of issued shares. A
// share's part is uniformly random to anyone holding fewer than the
// threshold, so its SHA-256 reveals nothing of it.
func (s share) digest() []byte {
	h := sha256.New()
	h.Write([]byte("gitlab-secrets-appliance share digest v1\x00"))
	h.Write(s.body())
	return h.Sum(nil)
}

// x is the share's Shamir x coordinate.
func (s share) x() byte { return s.part[len(s.part)-1] }

func (s share) equal(o share) bool { return bytes.Equal(s.body(), o.body()) }

// sameSet: s and o claim to be shares of the same split.
func (s share) sameSet(o share) bool {
	return s.cluster == o.cluster && s.gen == o.gen && s.threshold == o.threshold && s.check == o.check
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

// CheckSplit says what is wrong with a split of n shares, threshold t.
func CheckSplit(n, t int) error {
	switch {
	case n < 1 || n > 255:
		return fmt.Errorf("shares %d: use 1 to 255 shares", n)
	case t < 1 || t > n:
		return fmt.Errorf("threshold %d: use a threshold from 1 to the number of shares (%d)", t, n)
	case n > 1 && t == 1:
		return fmt.Errorf("threshold 1 of %d shares would let any single share unseal: use a threshold of at least 2", n)
	}
	return nil
}

// splitKEK makes n shares of kek, any t of which recover it, and their
// digests for the header. With pgpKeys (one per share, base64 public keys
// as OpenBao's init takes them) each share is returned encrypted to its
// operator's key, base64-encoded.
func splitKEK(kek []byte, cluster [clusterIDSize]byte, gen uint32, n, t int, pgpKeys []string) ([]string, [][]byte, error) {
	if err := CheckSplit(n, t); err != nil {
		return nil, nil, err
	}
	if len(pgpKeys) > 0 && len(pgpKeys) != n {
		return nil, nil, fmt.Errorf("%d PGP keys for %d shares: give one key per share", len(pgpKeys), n)
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
			return nil, nil, err
		}
	}
	s := share{cluster: cluster, gen: gen, threshold: t, check: kekCheck(kek)}
	out := make([]string, n)
	digests := make([][]byte, n)
	for i, p := range parts {
		s.part = p
		out[i] = s.encode()
		digests[i] = s.digest()
	}
	if len(pgpKeys) > 0 {
		plain := make([][]byte, n)
		for i := range out {
			plain[i] = []byte(out[i])
		}
		_, enc, err := pgpkeys.EncryptShares(plain, pgpKeys)
		if err != nil {
			return nil, nil, fmt.Errorf("encrypting the shares to the operators' PGP keys: %w", err)
		}
		for i := range enc {
			out[i] = base64.StdEncoding.EncodeToString(enc[i])
		}
	}
	return out, digests, nil
}

// maxLooseShares bounds the shares a collector keeps while no header says
// which are genuine (a node joining its cluster before it has heard from
// the leader).
const maxLooseShares = 64

// collector gathers the shares of one attempt: an unseal, or a seal
// change's authorization or verification. With a header (want) every
// share is checked on its own before it is kept, so a refused share
// changes nothing. Without one (a joining node that has not yet heard
// from its leader) shares are kept apart by what they claim (cluster,
// generation, threshold, key check), so a forged claim cannot spoil the
// genuine shares' attempt.
type collector struct {
	shares []share
}

// add checks s (against want, when known) and keeps it. It returns the
// recovered KEK once a threshold of matching shares is in; the collector
// is then empty.
func (c *collector) add(s share, want *header) ([]byte, error) {
	if want != nil {
		if err := want.admits(s); err != nil {
			return nil, err
		}
	}
	for _, p := range c.shares {
		if p.equal(s) || (p.sameSet(s) && p.x() == s.x()) {
			return nil, ErrDuplicateShare
		}
	}
	if want == nil && len(c.shares) >= maxLooseShares {
		return nil, ErrTooManyShares
	}
	c.shares = append(c.shares, s)
	set := c.matching(s, want)
	if len(set) < s.threshold {
		return nil, nil
	}
	kek, err := combine(set)
	c.drop(s, want)
	if err != nil {
		return nil, err
	}
	if want == nil {
		c.reset() // recovered: whatever else was submitted is moot
	}
	return kek, nil
}

// matching is the shares kept that belong with s: those want admits, or
// (no header) those claiming the same set as s.
func (c *collector) matching(s share, want *header) []share {
	var out []share
	for _, p := range c.shares {
		if want != nil && want.admits(p) == nil || want == nil && p.sameSet(s) {
			out = append(out, p)
		}
	}
	return out
}

// drop forgets the shares of s's set (recovered, or wrong together).
func (c *collector) drop(s share, want *header) {
	keep := c.shares[:0]
	for _, p := range c.shares {
		if want != nil && want.admits(p) == nil || want == nil && p.sameSet(s) {
			clear(p.part)
			continue
		}
		keep = append(keep, p)
	}
	c.shares = keep
}

// combine recovers the KEK from a threshold of shares and checks it.
func combine(set []share) ([]byte, error) {
	first := set[0]
	var kek []byte
	if first.threshold == 1 {
		kek = bytes.Clone(first.part[:kekSize])
	} else {
		parts := make([][]byte, first.threshold)
		for i := range parts {
			parts[i] = set[i].part
		}
		var err error
		if kek, err = shamir.Combine(parts); err != nil {
			return nil, ErrWrongShares
		}
	}
	if got := kekCheck(kek); !hmac.Equal(got[:], first.check[:]) {
		clear(kek)
		return nil, ErrWrongShares
	}
	return kek, nil
}

// progress is how many shares count towards want's KEK (without a
// header: the fullest set) and how many are needed.
func (c *collector) progress(want *header) (n, threshold int) {
	if want != nil {
		if want.Shamir != nil {
			threshold = want.Shamir.Threshold
		}
		for _, p := range c.shares {
			if want.admits(p) == nil {
				n++
			}
		}
		return n, threshold
	}
	for _, s := range c.shares {
		if m := len(c.matching(s, nil)); m > n {
			n, threshold = m, s.threshold
		}
	}
	return n, threshold
}

func (c *collector) reset() {
	for _, p := range c.shares {
		clear(p.part)
	}
	c.shares = nil
}
