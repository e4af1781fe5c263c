package seal

import (
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

	// Previous holds replaced KEKs, each wrapped by this header's KEK, so
	// blobs sealed before a replacement (Raft snapshot checksums) still
	// open. Whoever holds the current KEK may open them anyway; whoever
	// held only an old one learns nothing new.
	Previous []previousKEK `json:"previous,omitempty"`
}

// previousKEK is a replaced KEK, named by its check value, wrapped with
// AES-GCM under the KEK of the header that holds it (nonce first).
type previousKEK struct {
	Check   []byte `json:"check"`
	Wrapped []byte `json:"wrapped"`
}

// maxPreviousKEKs bounds the history a header carries.
const maxPreviousKEKs = 8

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
		n.Shamir = &s
	}
	n.Previous = append([]previousKEK(nil), h.Previous...)
	return &n
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
