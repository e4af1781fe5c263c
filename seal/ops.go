package seal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// InitSpec says which mechanisms a new cluster enrolls.
type InitSpec struct {
	Shamir            bool
	Shares, Threshold int
	PGPKeys           []string // optional: one per share, base64 public keys
	HSM               bool     // wrap the KEK with this node's HSM key
}

// Initialize creates the KEK of a new cluster and enrolls every mechanism
// in spec at once. It returns the Shamir shares (encrypted to the PGP keys
// if given): the only time they exist outside memory. On a later failure to
// initialize OpenBao, call Forget.
func (s *Seal) Initialize(ctx context.Context, spec InitSpec) ([]string, error) {
	if !spec.Shamir && !spec.HSM {
		return nil, errors.New("no seal mechanism to enroll: configure seal \"pkcs11\", seal \"shamir\" or both")
	}
	if spec.Shamir {
		if err := CheckSplit(spec.Shares, spec.Threshold); err != nil {
			return nil, err
		}
	}
	s.ops.Lock()
	defer s.ops.Unlock()
	kek := make([]byte, kekSize)
	var cluster [clusterIDSize]byte
	if _, err := rand.Read(kek); err != nil {
		return nil, err
	}
	if _, err := rand.Read(cluster[:]); err != nil {
		return nil, err
	}
	c := kekCheck(kek)
	h := &header{Version: 1, Cluster: hex.EncodeToString(cluster[:]), Gen: 1, Check: c[:], Changed: time.Now().Unix()}
	if spec.HSM {
		e, err := s.wrapWithHSM(ctx, kek)
		if err != nil {
			return nil, err
		}
		h.PKCS11 = e
	}
	var shares []string
	if spec.Shamir {
		var err error
		var digests [][]byte
		if shares, digests, err = splitKEK(kek, cluster, h.Gen, spec.Shares, spec.Threshold, spec.PGPKeys); err != nil {
			return nil, err
		}
		h.Shamir = &shamirEnrollment{Shares: spec.Shares, Threshold: spec.Threshold, Gen: h.Gen, Digests: digests}
	}
	s.mu.Lock()
	s.forgetLocked()
	s.keks[h.kekID()] = kekEntry{key: kek}
	s.cur = h
	s.mu.Unlock()
	s.logger.Info("seal initialized", "mechanisms", h.mechanisms(), "cluster", h.Cluster)
	return shares, nil
}

// Forget drops every key from memory, the shares submitted so far and any
// seal change in progress. With operator set (an operator sealed the
// node), the HSM is not used again until a restart: the node unseals
// with shares only, as an operator who sealed it expects.
func (s *Seal) Forget(operator bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetLocked()
	if operator {
		s.hsmPaused = true
	}
}

func (s *Seal) forgetLocked() {
	for k, v := range s.keks {
		clear(v.key)
		delete(s.keks, k)
	}
	s.lastUsed = ""
	s.hint = nil
	s.shares.reset()
	s.change = nil
}

// ForgetInit undoes Initialize after OpenBao failed to initialize: the
// header it made belongs to no cluster.
func (s *Seal) ForgetInit() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetLocked()
	if s.saved == "" || s.cur == nil || s.saved != s.cur.keyID() {
		s.cur = nil
	}
}

// Progress is where a Shamir unseal attempt stands.
type Progress struct {
	Submitted int  `json:"progress"`
	Threshold int  `json:"threshold"`
	Recovered bool `json:"recovered"` // the KEK is in memory now
}

// SubmitShare checks one operator share on its own against the newest
// header this node knows (format, checksum, cluster, generation, and that
// it is one of the shares issued) and records it. When the threshold is
// met the KEK is recovered and verified; the caller then unseals OpenBao.
// A refused share changes nothing: a forged share cannot spoil the
// operators' attempt.
func (s *Seal) SubmitShare(ctx context.Context, text string) (Progress, error) {
	sh, err := decodeShare(text)
	if err != nil {
		return s.progress(), err
	}
	s.refresh(ctx)
	s.mu.Lock()
	want := s.cur
	if want == nil {
		want = s.hint
	}
	kek, err := s.shares.add(sh, want)
	s.mu.Unlock()
	if err != nil {
		if errors.Is(err, ErrWrongShares) {
			s.logger.Warn("the submitted Shamir shares did not recover the seal key; they were discarded")
		}
		return s.progress(), err
	}
	if kek != nil {
		s.remember(kek, MechanismShamir)
		s.logger.Info("seal key recovered from Shamir shares", "threshold", sh.threshold)
		return Progress{Submitted: sh.threshold, Threshold: sh.threshold, Recovered: true}, nil
	}
	return s.progress(), nil
}

// HasCurrentKey reports whether the KEK of the newest header is in memory.
// An unsealed node can lack it: it unsealed with the stored keys of an
// older generation, and a newer one reached its storage afterwards (the
// Raft log of a change it committed just before it was killed). It then
// serves, but cannot change the seal or seal a snapshot until the HSM or
// shares of the newer generation give the key (RecoverCurrentKey,
// SubmitShare).
func (s *Seal) HasCurrentKey(ctx context.Context) bool {
	s.refresh(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.keks[kekIDOf(s.cur)]
	return s.cur != nil && ok
}

// RecoverCurrentKey asks the HSM (when the current header enrolls it) for
// the current KEK.
func (s *Seal) RecoverCurrentKey(ctx context.Context) error {
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	if cur == nil {
		return ErrLocked
	}
	_, err := s.kekFor(ctx, cur)
	return err
}

// RecoverStoredKey brings into memory the KEK that opens the cluster's
// stored keys, asking the HSM if it must (bounded, and cut short by
// shares, as every HSM unwrap). Call it before OpenBao's
// UnsealWithStoredKeys: OpenBao asks the seal for the stored keys while
// holding its state lock, which sys/seal-status and sys/health wait on,
// so a token that hangs there would hang them too. Nil when nothing is
// stored yet: OpenBao then says so itself.
func (s *Seal) RecoverStoredKey(ctx context.Context) error {
	if s.opts.StoredHeader == nil {
		return nil
	}
	raw, err := s.opts.StoredHeader(ctx)
	if err != nil || raw == nil {
		return nil
	}
	h, err := decodeHeader(raw)
	if err != nil {
		return nil // OpenBao's own read of the keys says what is wrong
	}
	s.adopt(h, true)
	_, err = s.kekFor(ctx, h)
	return err
}

// ResetShares discards the shares of an unseal attempt. The caller proves
// that it is one of the attempt's operators with one share of it (text):
// with the cluster's header the share must be one of the shares issued
// (as SubmitShare checks it) and every share submitted so far is
// discarded; without one (a joining node) only the shares that claim the
// same split as text are, so a forged claim discards nothing but forged
// claims. The share itself is not counted: submit it again. A refused
// share changes nothing and gets SubmitShare's error.
func (s *Seal) ResetShares(ctx context.Context, text string) error {
	sh, err := decodeShare(text)
	if err != nil {
		return err
	}
	defer clear(sh.part)
	s.refresh(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	want := s.cur
	if want == nil {
		want = s.hint
	}
	if want == nil {
		s.shares.drop(sh, nil)
		return nil
	}
	if err := want.admits(sh); err != nil {
		return err
	}
	s.shares.reset()
	return nil
}

// ShamirProgress is where the unseal attempt by Shamir shares stands:
// shares submitted, the threshold, and the shares issued (0 when the
// cluster has no Shamir enrollment this node knows of). It never asks the
// HSM: sys/seal-status serves it.
func (s *Seal) ShamirProgress() (submitted, threshold, shares int) {
	p := s.progress()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && s.cur.Shamir != nil {
		shares = s.cur.Shamir.Shares
	}
	return p.Submitted, p.Threshold, shares
}

func (s *Seal) progress() Progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := s.cur
	if want == nil {
		want = s.hint
	}
	n, t := s.shares.progress(want)
	p := Progress{Submitted: n, Threshold: t}
	if s.cur != nil {
		_, p.Recovered = s.keks[s.cur.kekID()]
	}
	return p
}

// rewrapHistory moves h's history (wrapped by old, h's KEK) under next and
// adds old itself.
func rewrapHistory(h *header, old, next []byte) ([]previousKEK, error) {
	var out []previousKEK
	for _, p := range h.Previous {
		k, err := openWrapped(old, p.Wrapped)
		if err != nil {
			return nil, fmt.Errorf("the seal key history does not open under the current key: %w", err)
		}
		w, err := sealWrapped(next, k)
		if err != nil {
			return nil, err
		}
		out = append(out, previousKEK{Check: p.Check, Wrapped: w})
	}
	w, err := sealWrapped(next, old)
	if err != nil {
		return nil, err
	}
	return append(out, previousKEK{Check: h.Check, Wrapped: w}), nil
}

func sealWrapped(kek, plaintext []byte) ([]byte, error) {
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	return gcm.Seal(nil, nil, plaintext, []byte("gitlab-secrets-appliance previous kek")), nil // the nonce first
}

func openWrapped(kek, wrapped []byte) ([]byte, error) {
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	if len(wrapped) < gcmNonceSize {
		return nil, errors.New("wrapped key too short")
	}
	return gcm.Open(nil, nil, wrapped, []byte("gitlab-secrets-appliance previous kek"))
}
