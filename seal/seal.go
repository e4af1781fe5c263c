// Package seal is the appliance's multi-unseal seal: OpenBao's root key is
// encrypted with a key-encryption key (KEK), and the KEK can be recovered by
// each enrolled mechanism on its own: an AES key on a PKCS#11 token (the
// HSM, automatic at boot) or a quorum of operators' Shamir shares
// (break-glass). Parallel, not chained: either alone opens the cluster.
//
// To OpenBao the Seal is an auto-unseal wrapper (wrapping.Wrapper). Every
// blob it writes carries a header saying how its KEK can be recovered, so
// every node of a Raft cluster, including one still joining, can unseal
// with either mechanism.
package seal

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	wrapping "github.com/openbao/go-kms-wrapping/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal/pkcs11"
)

// Type is the seal type OpenBao records in the cluster's seal config.
const Type wrapping.WrapperType = "gitlab-multi-unseal"

// Mechanism names, as config, status and the CLI spell them.
const (
	MechanismPKCS11 = "pkcs11"
	MechanismShamir = "shamir"
)

// ErrLocked means the KEK is not in memory: unseal by the HSM failed or is
// not configured, and not enough Shamir shares have been submitted.
var ErrLocked = errors.New("the seal's key is not available: the HSM could not provide it and not enough Shamir shares were submitted")

// Options configure a Seal.
type Options struct {
	// HSM is how this node reaches the PKCS#11 token; nil if it has none.
	HSM *pkcs11.Config
	// StoredHeader returns the seal header of the cluster's stored keys in
	// local storage, or nil if this node has no storage yet.
	StoredHeader func(ctx context.Context) ([]byte, error)
	// HeaderFile is where this node keeps the newest seal header it has
	// seen in its storage or committed itself, outside Raft, so that a
	// restored snapshot (which carries the header of its time) cannot
	// bring back shares or an HSM that a later change voided. Empty: kept
	// in memory only.
	HeaderFile string
	// Persist writes OpenBao's stored keys and recovery key, encrypted
	// with the given function, in one storage transaction. Seal changes
	// commit through it.
	Persist Persist
	Logger  hclog.Logger
}

// Seal is the composite wrapper. It is safe for concurrent use.
type Seal struct {
	opts   Options
	logger hclog.Logger

	ops sync.Mutex // serializes mechanism changes and their commits

	mu        sync.Mutex
	keks      map[string]kekEntry // by hex(kekCheck)
	cur       *header             // newest header known: Encrypt uses it; nil until known
	saved     string              // keyID of the header last written to HeaderFile
	hint      *header             // joining: the header of the leader's blob, to check shares against
	lastUsed  string              // mechanism that provided the KEK of the last unseal
	hsmPaused bool                // an operator sealed the node: unseal by shares only until restart
	shares    collector
	change    *change // the seal change in progress, if any

	hsmHealth hsmHealth
}

// kekEntry is a KEK in memory and the mechanism that gave it.
type kekEntry struct {
	key []byte
	by  string // MechanismPKCS11, MechanismShamir, or "" (made here, or from history)
}

// hsmRetryInterval limits how often a failing HSM is reopened.
const hsmRetryInterval = 5 * time.Second

// New returns a Seal that knows no KEK yet: Initialize (a new cluster),
// the HSM (at the first Decrypt) or SubmitShare provide one.
func New(opts Options) *Seal {
	l := opts.Logger
	if l == nil {
		l = hclog.NewNullLogger()
	}
	s := &Seal{opts: opts, logger: l, keks: map[string]kekEntry{}}
	if h, err := loadHeaderFile(opts.HeaderFile); err != nil {
		l.Error("the recorded seal generation cannot be read; a restored snapshot's older shares would not be recognised as void until this node sees its cluster's header again", "file", opts.HeaderFile, "error", err)
	} else if h != nil {
		s.cur, s.saved = h, h.keyID()
	}
	return s
}

var (
	_ wrapping.Wrapper       = (*Seal)(nil)
	_ wrapping.InitFinalizer = (*Seal)(nil)
)

// Type implements wrapping.Wrapper.
func (s *Seal) Type(context.Context) (wrapping.WrapperType, error) { return Type, nil }

// KeyId implements wrapping.Wrapper: the current KEK and header
// generation. OpenBao re-encrypts its stored keys when it changes.
func (s *Seal) KeyId(ctx context.Context) (string, error) {
	s.refresh(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return "", nil
	}
	return s.cur.keyID(), nil
}

// SetConfig implements wrapping.Wrapper; the Seal is configured by New.
func (s *Seal) SetConfig(context.Context, ...wrapping.Option) (*wrapping.WrapperConfig, error) {
	return &wrapping.WrapperConfig{Metadata: map[string]string{}}, nil
}

// Init implements wrapping.InitFinalizer.
func (s *Seal) Init(context.Context, ...wrapping.Option) error { return nil }

// Finalize closes the HSM session and forgets every key.
func (s *Seal) Finalize(context.Context, ...wrapping.Option) error {
	s.mu.Lock()
	s.forgetLocked()
	s.mu.Unlock()
	return s.closeHSMs()
}

// Encrypt implements wrapping.Wrapper with AES-256-GCM under the current
// KEK; the header is the additional data.
func (s *Seal) Encrypt(ctx context.Context, plaintext []byte, opts ...wrapping.Option) (*wrapping.BlobInfo, error) {
	s.mu.Lock()
	h := s.cur
	s.mu.Unlock()
	if h == nil {
		return nil, ErrLocked
	}
	kek, err := s.kekFor(ctx, h)
	if err != nil {
		return nil, err
	}
	o, err := wrapping.GetOpts(opts...)
	if err != nil {
		return nil, err
	}
	return encryptWith(h, kek, plaintext, o.WithAad)
}

// Encryptor encrypts a blob as the seal does, under a given header.
type Encryptor func(ctx context.Context, plaintext []byte) (*wrapping.BlobInfo, error)

// Persist writes OpenBao's stored keys and recovery key, each encrypted
// with encrypt, in one storage transaction: both change or neither does.
type Persist func(ctx context.Context, encrypt Encryptor) error

func encryptWith(h *header, kek, plaintext, extraAAD []byte) (*wrapping.BlobInfo, error) {
	hdr := h.encode()
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	// The nonce leads the sealed bytes; the blob keeps it apart, as
	// blobs always did.
	out := gcm.Seal(nil, nil, plaintext, aad(hdr, extraAAD))
	return &wrapping.BlobInfo{
		Ciphertext: out[gcmNonceSize:],
		Iv:         out[:gcmNonceSize],
		KeyInfo:    &wrapping.KeyInfo{KeyId: h.keyID(), WrappedKey: hdr},
	}, nil
}

// Decrypt implements wrapping.Wrapper. If the blob's KEK is not in memory
// it asks the HSM (when the blob's header enrolls one and this node has
// one configured).
func (s *Seal) Decrypt(ctx context.Context, blob *wrapping.BlobInfo, opts ...wrapping.Option) ([]byte, error) {
	if blob == nil || blob.KeyInfo == nil {
		return nil, errors.New("the blob has no key info: it was not written by this appliance's seal")
	}
	h, err := decodeHeader(blob.KeyInfo.WrappedKey)
	if err != nil {
		return nil, err
	}
	kek, err := s.kekFor(ctx, h)
	if err != nil {
		return nil, err
	}
	o, err := wrapping.GetOpts(opts...)
	if err != nil {
		return nil, err
	}
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	if len(blob.Iv) != gcmNonceSize {
		return nil, fmt.Errorf("the blob's nonce is %d bytes, not %d: it was not written by this appliance's seal", len(blob.Iv), gcmNonceSize)
	}
	pt, err := gcm.Open(nil, nil, append(slices.Clip(blob.Iv), blob.Ciphertext...), aad(blob.KeyInfo.WrappedKey, o.WithAad))
	if err != nil {
		return nil, fmt.Errorf("the blob does not decrypt under its KEK (altered or corrupted): %w", err)
	}
	// The header is bound to the ciphertext: whoever sealed the blob held
	// its KEK, so a newer header learnt this way (a node joining, or one
	// whose storage is ahead of its memory) is genuine.
	s.adopt(h, false)
	s.mu.Lock()
	if by := s.keks[h.kekID()].by; by != "" {
		s.lastUsed = by
	}
	s.mu.Unlock()
	return pt, nil
}

// kekFor returns the KEK of h: from memory; for a header older than the
// newest this node knows, only through that one's history (never by h's
// own mechanisms, which a later change may have voided: old shares, a
// removed HSM); otherwise from the HSM.
func (s *Seal) kekFor(ctx context.Context, h *header) ([]byte, error) {
	s.mu.Lock()
	e, ok := s.keks[h.kekID()]
	cur := s.cur
	if cur == nil {
		s.hint = h // joining: check shares against the leader's header
	}
	paused := s.hsmPaused
	s.mu.Unlock()
	if ok {
		return e.key, nil
	}
	if cur != nil && cur.Cluster == h.Cluster && cur.Gen > h.Gen {
		curKEK, err := s.kekFor(ctx, cur)
		if err != nil {
			return nil, err
		}
		if kek := s.fromHistory(cur, curKEK, h); kek != nil {
			return kek, nil
		}
		return nil, fmt.Errorf("the blob was sealed under seal generation %d, which the current generation %d does not know: it is not this cluster's", h.Gen, cur.Gen)
	}
	switch {
	case h.PKCS11 == nil:
		return nil, fmt.Errorf("%w (the cluster has no HSM enrolled: submit Shamir shares with `gitlab-secrets-appliance unseal`)", ErrLocked)
	case s.opts.HSM == nil:
		return nil, fmt.Errorf("%w (this node has no seal \"pkcs11\" block configured: submit Shamir shares with `gitlab-secrets-appliance unseal`)", ErrLocked)
	case paused:
		return nil, fmt.Errorf("%w (an operator sealed this node: it unseals with Shamir shares, or with the HSM after a restart)", ErrLocked)
	}
	kek, err := s.unwrapWithHSM(ctx, h)
	if errors.Is(err, errKEKRecovered) {
		// Shares gave the key while the HSM was still thinking.
		s.mu.Lock()
		e, ok := s.keks[h.kekID()]
		s.mu.Unlock()
		if ok {
			return e.key, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: HSM: %w", ErrLocked, err)
	}
	if got := kekCheck(kek); !bytes.Equal(got[:], h.Check) {
		return nil, fmt.Errorf("%w: the HSM unwrapped a key that is not this cluster's KEK", ErrLocked)
	}
	s.remember(kek, MechanismPKCS11)
	s.logger.Info("seal key recovered with the HSM", "token", s.opts.HSM.TokenLabel, "key", h.PKCS11.KeyLabel)
	return kek, nil
}

// fromHistory opens h's KEK from the history of cur, whose KEK is curKEK
// (a blob sealed before a KEK replacement).
func (s *Seal) fromHistory(cur *header, curKEK []byte, h *header) []byte {
	for _, p := range cur.Previous {
		if !bytes.Equal(p.Check, h.Check) {
			continue
		}
		kek, err := openWrapped(curKEK, p.Wrapped)
		if err != nil {
			return nil
		}
		if c := kekCheck(kek); !bytes.Equal(c[:], h.Check) {
			return nil
		}
		s.mu.Lock()
		s.keks[h.kekID()] = kekEntry{key: kek}
		s.mu.Unlock()
		return kek
	}
	return nil
}

// remember caches a recovered KEK with the mechanism that gave it; the
// first blob it opens makes that mechanism the last used.
func (s *Seal) remember(kek []byte, mechanism string) {
	c := kekCheck(kek)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keks[hex.EncodeToString(c[:])] = kekEntry{key: kek, by: mechanism}
}

// adopt makes h the current header if it is newer than the one in use
// (or of another cluster: the data dir was reused). fromStorage: h is in
// this node's storage, so it is recorded in the header file.
func (s *Seal) adopt(h *header, fromStorage bool) {
	s.mu.Lock()
	if h.newer(s.cur) {
		if s.cur != nil && s.cur.Cluster != h.Cluster {
			s.logger.Info("this node's storage belongs to another cluster than the seal header it had recorded; following its storage", "cluster", h.Cluster, "recorded", s.cur.Cluster)
		}
		s.cur = h
	}
	save := fromStorage && s.cur.keyID() == h.keyID() && s.saved != h.keyID()
	s.mu.Unlock()
	if save {
		s.record(h)
	}
}

// record writes h to the header file.
func (s *Seal) record(h *header) {
	if err := saveHeaderFile(s.opts.HeaderFile, h); err != nil {
		s.logger.Error("cannot record the seal generation: until this is fixed, a restored snapshot could revive voided shares on this node after a restart", "file", s.opts.HeaderFile, "error", err)
		return
	}
	s.mu.Lock()
	s.saved = h.keyID()
	s.mu.Unlock()
}

// refresh adopts the header of the stored keys in local storage, the
// cluster's authoritative one, if it is newer.
func (s *Seal) refresh(ctx context.Context) {
	if s.opts.StoredHeader == nil {
		return
	}
	raw, err := s.opts.StoredHeader(ctx)
	if err != nil || raw == nil {
		return
	}
	if h, err := decodeHeader(raw); err == nil {
		s.adopt(h, true)
	}
}

// StoredOlder reports whether the stored keys carry an older header than
// the current one (a snapshot from before a seal change was restored):
// OpenBao's UpgradeKeys then re-encrypts them under the current one.
func (s *Seal) StoredOlder(ctx context.Context) (stored, cur uint32, older bool) {
	if s.opts.StoredHeader == nil {
		return 0, 0, false
	}
	raw, err := s.opts.StoredHeader(ctx)
	if err != nil || raw == nil {
		return 0, 0, false
	}
	h, err := decodeHeader(raw)
	if err != nil {
		return 0, 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || s.cur.Cluster != h.Cluster {
		return 0, 0, false
	}
	return h.Gen, s.cur.Gen, h.Gen < s.cur.Gen
}

// newGCM is AES-256-GCM under kek with a nonce the module draws itself:
// the form FIPS 140-3's Go module approves for sealing (a nonce the
// caller supplies is not, and fips140=only refuses it).
func newGCM(kek []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

// gcmNonceSize is the nonce NewGCMWithRandomNonce draws and puts in front
// of what it seals.
const gcmNonceSize = 12

func aad(header, extra []byte) []byte {
	return append(append(append([]byte{}, header...), 0), extra...)
}
