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
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	wrapping "github.com/openbao/go-kms-wrapping/v2"
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
	HSM *PKCS11Config
	// StoredHeader returns the seal header of the cluster's stored keys in
	// local storage, or nil if this node has no storage yet.
	StoredHeader func(ctx context.Context) ([]byte, error)
	Logger       hclog.Logger
}

// Seal is the composite wrapper. It is safe for concurrent use.
type Seal struct {
	opts   Options
	logger hclog.Logger

	ops sync.Mutex // serializes mechanism changes

	mu       sync.Mutex
	keks     map[string][]byte // by hex(kekCheck)
	cur      *header           // header for Encrypt; nil until known
	lastUsed string            // mechanism that provided the KEK in use
	shares   collector

	hsmHealth hsmHealth
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
	return &Seal{opts: opts, logger: l, keks: map[string][]byte{}}
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
	defer s.mu.Unlock()
	for k, v := range s.keks {
		clear(v)
		delete(s.keks, k)
	}
	s.shares.reset()
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
	hdr := h.encode()
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	iv := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	return &wrapping.BlobInfo{
		Ciphertext: gcm.Seal(nil, iv, plaintext, aad(hdr, o.WithAad)),
		Iv:         iv,
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
	pt, err := gcm.Open(nil, blob.Iv, blob.Ciphertext, aad(blob.KeyInfo.WrappedKey, o.WithAad))
	if err != nil {
		return nil, fmt.Errorf("the blob does not decrypt under its KEK (altered or corrupted): %w", err)
	}
	s.adopt(h)
	return pt, nil
}

// kekFor returns the KEK of h from memory or, failing that, the HSM.
func (s *Seal) kekFor(ctx context.Context, h *header) ([]byte, error) {
	s.mu.Lock()
	kek, ok := s.keks[h.kekID()]
	s.mu.Unlock()
	if ok {
		return kek, nil
	}
	if kek := s.fromHistory(h); kek != nil {
		return kek, nil
	}
	if h.PKCS11 == nil {
		return nil, fmt.Errorf("%w (the cluster has no HSM enrolled: submit Shamir shares with `gitlab-secrets-appliance unseal`)", ErrLocked)
	}
	if s.opts.HSM == nil {
		return nil, fmt.Errorf("%w (this node has no seal \"pkcs11\" block configured: submit Shamir shares with `gitlab-secrets-appliance unseal`)", ErrLocked)
	}
	kek, err := s.unwrapWithHSM(ctx, h)
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

// fromHistory finds h's KEK in the history of the current header, when
// the current KEK is in memory (a blob sealed before a KEK replacement).
func (s *Seal) fromHistory(h *header) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || s.cur.Cluster != h.Cluster {
		return nil
	}
	cur, ok := s.keks[s.cur.kekID()]
	if !ok {
		return nil
	}
	for _, p := range s.cur.Previous {
		if !bytes.Equal(p.Check, h.Check) {
			continue
		}
		kek, err := openWrapped(cur, p.Wrapped)
		if err != nil {
			return nil
		}
		if c := kekCheck(kek); !bytes.Equal(c[:], h.Check) {
			return nil
		}
		s.keks[h.kekID()] = kek
		return kek
	}
	return nil
}

// remember caches a recovered KEK and notes the mechanism that gave it.
func (s *Seal) remember(kek []byte, mechanism string) {
	c := kekCheck(kek)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keks[hex.EncodeToString(c[:])] = kek
	s.lastUsed = mechanism
}

// adopt makes h the current header if it is newer than the one in use.
func (s *Seal) adopt(h *header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || (s.cur.Cluster == h.Cluster && h.Gen > s.cur.Gen) {
		s.cur = h
	}
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
		s.adopt(h)
	}
}

func newGCM(kek []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func aad(header, extra []byte) []byte {
	return append(append(append([]byte{}, header...), 0), extra...)
}
