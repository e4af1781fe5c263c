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
		if shares, err = splitKEK(kek, cluster, h.Gen, spec.Shares, spec.Threshold, spec.PGPKeys); err != nil {
			return nil, err
		}
		h.Shamir = &shamirEnrollment{Shares: spec.Shares, Threshold: spec.Threshold, Gen: h.Gen}
	}
	s.mu.Lock()
	s.keks[h.kekID()] = kek
	s.cur = h
	s.lastUsed = ""
	s.mu.Unlock()
	s.logger.Info("seal initialized", "mechanisms", h.mechanisms(), "cluster", h.Cluster)
	return shares, nil
}

// Forget drops every key and header from memory, as if just started.
func (s *Seal) Forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.keks {
		clear(v)
		delete(s.keks, k)
	}
	s.cur = nil
	s.lastUsed = ""
	s.shares.reset()
}

// Progress is where a Shamir unseal attempt stands.
type Progress struct {
	Submitted int  `json:"progress"`
	Threshold int  `json:"threshold"`
	Recovered bool `json:"recovered"` // the KEK is in memory now
}

// SubmitShare checks one operator share on its own (format, checksum,
// cluster, generation, duplicate) and records it. When the threshold is
// met the KEK is recovered and verified; the caller then unseals OpenBao.
// A refused share changes nothing, except a wrong set at the threshold,
// which starts the attempt over.
func (s *Seal) SubmitShare(ctx context.Context, text string) (Progress, error) {
	sh, err := decodeShare(text)
	if err != nil {
		return s.progress(), err
	}
	s.refresh(ctx)
	s.mu.Lock()
	kek, err := s.shares.add(sh, s.cur)
	if err == nil && kek != nil {
		c := kekCheck(kek)
		s.keks[hex.EncodeToString(c[:])] = kek
		s.lastUsed = MechanismShamir
	}
	s.mu.Unlock()
	if err != nil {
		if errors.Is(err, ErrWrongShares) {
			s.logger.Warn("the submitted Shamir shares did not recover the seal key; progress reset")
		}
		return s.progress(), err
	}
	if kek != nil {
		s.logger.Info("seal key recovered from Shamir shares", "threshold", sh.threshold)
		return Progress{Submitted: sh.threshold, Threshold: sh.threshold, Recovered: true}, nil
	}
	return s.progress(), nil
}

// ResetShares discards the shares submitted so far.
func (s *Seal) ResetShares() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shares.reset()
}

func (s *Seal) progress() Progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, t := s.shares.progress()
	if t == 0 && s.cur != nil && s.cur.Shamir != nil {
		t = s.cur.Shamir.Threshold
	}
	p := Progress{Submitted: n, Threshold: t}
	if s.cur != nil {
		_, p.Recovered = s.keks[s.cur.kekID()]
	}
	return p
}

// Persist re-encrypts everything the seal protects (OpenBao's stored keys
// and recovery key) under the seal's current header. The appliance
// supplies it to the mechanism changes below.
type Persist func(ctx context.Context) error

// RotateShares replaces the KEK and issues n new shares with threshold t:
// every earlier share is void. An enrolled HSM wraps the new KEK.
func (s *Seal) RotateShares(ctx context.Context, n, t int, pgpKeys []string, persist Persist) ([]string, error) {
	return s.change(ctx, persist, func(h *header, kek []byte) ([]byte, []string, error) {
		return s.rekey(ctx, h, kek, n, t, pgpKeys)
	})
}

// AddShamir enrolls Shamir shares of the current KEK.
func (s *Seal) AddShamir(ctx context.Context, n, t int, pgpKeys []string, persist Persist) ([]string, error) {
	return s.change(ctx, persist, func(h *header, kek []byte) ([]byte, []string, error) {
		if h.Shamir != nil {
			return nil, nil, errors.New("Shamir shares are enrolled already: use rotate-shares to replace them")
		}
		shares, err := splitKEK(kek, h.clusterID(), h.Gen, n, t, pgpKeys)
		h.Shamir = &shamirEnrollment{Shares: n, Threshold: t, Gen: h.Gen}
		return kek, shares, err
	})
}

// RemoveShamir voids every share: a new KEK, wrapped by the HSM only.
func (s *Seal) RemoveShamir(ctx context.Context, persist Persist) error {
	_, err := s.change(ctx, persist, func(h *header, kek []byte) ([]byte, []string, error) {
		if h.Shamir == nil {
			return nil, nil, ErrNoShamir
		}
		return s.rekey(ctx, h, kek, 0, 0, nil)
	})
	return err
}

// AddHSM wraps the current KEK with this node's HSM key (after the HSM was
// added to the config). Run after an HSM key change too: it re-wraps the
// KEK with the key the config names now.
func (s *Seal) AddHSM(ctx context.Context, persist Persist) error {
	_, err := s.change(ctx, persist, func(h *header, kek []byte) ([]byte, []string, error) {
		e, err := s.wrapWithHSM(ctx, kek)
		h.PKCS11 = e
		return kek, nil, err
	})
	return err
}

// RemoveHSM stops the HSM from opening the cluster: a new KEK, and new
// Shamir shares (same split) that replace the current ones.
func (s *Seal) RemoveHSM(ctx context.Context, pgpKeys []string, persist Persist) ([]string, error) {
	return s.change(ctx, persist, func(h *header, kek []byte) ([]byte, []string, error) {
		if h.PKCS11 == nil {
			return nil, nil, errors.New("no HSM is enrolled")
		}
		if h.Shamir == nil {
			return nil, nil, errors.New("the HSM is the only seal mechanism: add Shamir shares first (the last mechanism cannot be removed)")
		}
		h.PKCS11 = nil
		return s.rekey(ctx, h, kek, h.Shamir.Shares, h.Shamir.Threshold, pgpKeys)
	})
}

// rekey gives h a new KEK: shares (n > 0) and HSM wrapping as h enrolls.
// The replaced KEK (old) joins h's history, wrapped by the new one.
func (s *Seal) rekey(ctx context.Context, h *header, old []byte, n, t int, pgpKeys []string) ([]byte, []string, error) {
	kek := make([]byte, kekSize)
	if _, err := rand.Read(kek); err != nil {
		return nil, nil, err
	}
	prev, err := rewrapHistory(h, old, kek)
	if err != nil {
		return nil, nil, err
	}
	h.Previous = prev
	c := kekCheck(kek)
	h.Check = c[:]
	h.Shamir = nil
	var shares []string
	if n > 0 {
		var err error
		if shares, err = splitKEK(kek, h.clusterID(), h.Gen, n, t, pgpKeys); err != nil {
			return nil, nil, err
		}
		h.Shamir = &shamirEnrollment{Shares: n, Threshold: t, Gen: h.Gen}
	}
	if h.PKCS11 != nil {
		e, err := s.wrapWithHSM(ctx, kek)
		if err != nil {
			return nil, nil, err
		}
		h.PKCS11 = e
	}
	return kek, shares, nil
}

// change applies mutate to a copy of the current header (generation
// bumped), makes it current, and persists. If persisting fails it puts the
// old header back and persists again, so what is stored stays openable.
func (s *Seal) change(ctx context.Context, persist Persist, mutate func(h *header, kek []byte) ([]byte, []string, error)) ([]string, error) {
	s.ops.Lock()
	defer s.ops.Unlock()
	s.refresh(ctx)
	s.mu.Lock()
	old := s.cur
	s.mu.Unlock()
	if old == nil {
		return nil, ErrLocked
	}
	kek, err := s.kekFor(ctx, old)
	if err != nil {
		return nil, fmt.Errorf("the node must be unsealed to change the seal: %w", err)
	}
	h := old.next(time.Now())
	newKEK, shares, err := mutate(h, kek)
	if err != nil {
		return nil, err
	}
	if len(h.mechanisms()) == 0 {
		return nil, errors.New("that would leave no seal mechanism: the last one cannot be removed")
	}
	s.mu.Lock()
	s.keks[h.kekID()] = newKEK
	s.cur = h
	s.mu.Unlock()
	if err := persist(ctx); err != nil {
		s.mu.Lock()
		s.cur = old
		s.mu.Unlock()
		if rerr := persist(ctx); rerr != nil {
			return nil, fmt.Errorf("saving the new seal state failed (%w) and restoring the old one failed too (%v): do not restart this node; retry the command", err, rerr)
		}
		return nil, fmt.Errorf("saving the new seal state failed, nothing changed: %w", err)
	}
	s.logger.Info("seal mechanisms changed", "mechanisms", h.mechanisms(), "generation", h.Gen)
	return shares, nil
}

// rewrapHistory moves h's history (wrapped by old, h's KEK) under next and
// adds old itself, keeping the newest maxPreviousKEKs.
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
	out = append(out, previousKEK{Check: h.Check, Wrapped: w})
	if len(out) > maxPreviousKEKs {
		out = out[len(out)-maxPreviousKEKs:]
	}
	return out, nil
}

func sealWrapped(kek, plaintext []byte) ([]byte, error) {
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return gcm.Seal(nonce, nonce, plaintext, []byte("gitlab-secrets-appliance previous kek")), nil
}

func openWrapped(kek, wrapped []byte) ([]byte, error) {
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	if len(wrapped) < gcm.NonceSize() {
		return nil, errors.New("wrapped key too short")
	}
	return gcm.Open(nil, wrapped[:gcm.NonceSize()], wrapped[gcm.NonceSize():], []byte("gitlab-secrets-appliance previous kek"))
}
