package seal

import (
	"bytes"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

const clusterIDSize = 8

// header describes how the KEK of a blob can be recovered: by which
// mechanisms, and with what parameters. Every blob the seal encrypts
// carries the header current at that time (in KeyInfo.WrappedKey), bound
// to the ciphertext as AES-GCM additional data so it cannot be altered.
// A node with no storage yet (joining a cluster) learns it from the blob
// the leader sends.
type header struct {
	Version int    `json:"v"`
	Cluster string `json:"cluster"` // hex id, fixed for the cluster's life
	Gen     uint32 `json:"gen"`     // bumped by every change to the mechanisms
	Check   []byte `json:"check"`   // kekCheck of the KEK: also its name
	Changed int64  `json:"changed"` // unix time of the last change

	PKCS11 *hsmEnrollment    `json:"pkcs11,omitempty"`
	Shamir *shamirEnrollment `json:"shamir,omitempty"`

	// Previous holds every replaced KEK, each wrapped by this header's KEK,
	// so blobs sealed before a replacement (Raft snapshots, stored keys a
	// restore brought back) still open, but only for whoever holds the
	// current KEK; whoever held only an old one learns nothing new. It is
	// not bounded: a bounded history would let an old enough snapshot lock
	// the cluster out after a restore (about 70 bytes per change).
	Previous []previousKEK `json:"previous,omitempty"`
}

// previousKEK is a replaced KEK, named by its check value, wrapped with
// AES-GCM under the KEK of the header that holds it (nonce first).
type previousKEK struct {
	Check   []byte `json:"check"`
	Wrapped []byte `json:"wrapped"`
}

// hsmEnrollment is the KEK wrapped by an AES key on a PKCS#11 token.
type hsmEnrollment struct {
	TokenLabel string `json:"token_label,omitempty"`
	KeyLabel   string `json:"key_label"`
	Wrapped    []byte `json:"wrapped"`
}

// shamirEnrollment says how the KEK is split among operators.
type shamirEnrollment struct {
	Shares    int    `json:"shares"`
	Threshold int    `json:"threshold"`
	Gen       uint32 `json:"gen"` // share generation: shares of older ones are void
	// Digests name the issued shares (shareDigest), so that every share a
	// node is given is checked on its own against what was issued: a
	// forged share is refused before it can take part in an attempt.
	// Headers written before digests existed have none; their shares are
	// checked for threshold and KEK check instead.
	Digests [][]byte `json:"digests,omitempty"`
}

func (h *header) clusterID() [clusterIDSize]byte {
	var id [clusterIDSize]byte
	b, _ := hex.DecodeString(h.Cluster)
	copy(id[:], b)
	return id
}

// keyID names the KEK and the header generation, so OpenBao's autoseal
// re-encrypts its stored keys whenever either changes (UpgradeKeys).
func (h *header) keyID() string { return fmt.Sprintf("%s-g%d", h.kekID(), h.Gen) }

// kekID names the KEK: its check value, in hex.
func (h *header) kekID() string { return hex.EncodeToString(h.Check) }

// mechanisms lists the enrolled mechanism types.
func (h *header) mechanisms() []string {
	var m []string
	if h.PKCS11 != nil {
		m = append(m, MechanismPKCS11)
	}
	if h.Shamir != nil {
		m = append(m, MechanismShamir)
	}
	return m
}

// next is a copy of h for a change of mechanisms: generation bumped.
func (h *header) next(now time.Time) *header {
	n := *h
	n.Gen++
	n.Changed = now.Unix()
	if h.PKCS11 != nil {
		p := *h.PKCS11
		n.PKCS11 = &p
	}
	if h.Shamir != nil {
		s := *h.Shamir
		s.Digests = append([][]byte(nil), h.Shamir.Digests...)
		n.Shamir = &s
	}
	n.Previous = append([]previousKEK(nil), h.Previous...)
	return &n
}

func (h *header) changedTime() time.Time { return time.Unix(h.Changed, 0) }

// newer reports whether h is a later header of the same cluster than o.
func (h *header) newer(o *header) bool {
	return o == nil || h.Cluster != o.Cluster || h.Gen > o.Gen
}

// admits checks that s is one of the shares h issued: of h's cluster and
// share generation, and (with digests) exactly one of the issued shares.
// A share that passes is genuine: it cannot spoil an attempt.
func (h *header) admits(s share) error {
	if s.cluster != h.clusterID() {
		return fmt.Errorf("%w: it is for cluster %x, this node's cluster is %x", ErrForeignShare, s.cluster, h.clusterID())
	}
	if h.Shamir == nil {
		return ErrNoShamir
	}
	switch sh := h.Shamir; {
	case s.gen < sh.Gen:
		return fmt.Errorf("%w: it is from share generation %d, the current shares are generation %d", ErrVoidShare, s.gen, sh.Gen)
	case s.gen > sh.Gen:
		return fmt.Errorf("%w: it is from share generation %d, newer than this node's %d: the change that issued it was never completed, or this node has not caught up with it yet", ErrUnknownShare, s.gen, sh.Gen)
	case len(sh.Digests) > 0:
		d := s.digest()
		for _, want := range sh.Digests {
			if subtle.ConstantTimeCompare(d, want) == 1 {
				return nil
			}
		}
		return fmt.Errorf("%w: it is not one of the %d shares issued for generation %d (it was altered, or comes from a share change that was never completed)", ErrUnknownShare, sh.Shares, sh.Gen)
	case s.threshold != sh.Threshold || !bytes.Equal(s.check[:], h.Check):
		return fmt.Errorf("%w: its threshold or key check differs from the %d-of-%d shares of generation %d", ErrUnknownShare, sh.Threshold, sh.Shares, sh.Gen)
	}
	return nil
}

func (h *header) encode() []byte {
	b, _ := json.Marshal(h)
	return b
}

func decodeHeader(b []byte) (*header, error) {
	if len(b) == 0 {
		return nil, errors.New("the blob has no seal header: it was not written by this appliance's seal")
	}
	h := &header{}
	if err := json.Unmarshal(b, h); err != nil {
		return nil, fmt.Errorf("the blob's seal header is unreadable: %w", err)
	}
	if h.Version != 1 || len(h.Cluster) != 2*clusterIDSize || len(h.Check) != checkSize {
		return nil, errors.New("the blob's seal header is not a version 1 header")
	}
	return h, nil
}

// HeaderInfo is what a seal header tells without any key: whose cluster,
// which generation of the mechanisms, which mechanisms. A Raft snapshot
// carries the header of its time (in the stored keys).
type HeaderInfo struct {
	Cluster    string    `json:"cluster"`
	Generation uint32    `json:"generation"`
	Mechanisms []string  `json:"mechanisms"`
	Changed    time.Time `json:"changed"`
}

// ReadHeaderInfo reads a seal header (the wrapped key of the stored keys'
// blob).
func ReadHeaderInfo(b []byte) (HeaderInfo, error) {
	h, err := decodeHeader(b)
	if err != nil {
		return HeaderInfo{}, err
	}
	return HeaderInfo{Cluster: h.Cluster, Generation: h.Gen, Mechanisms: h.mechanisms(), Changed: h.changedTime().UTC()}, nil
}
