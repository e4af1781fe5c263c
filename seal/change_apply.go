package seal

// The second phase of a seal change, once its quorum authorized it: the
// new header is prepared in memory (the root key wrapped again, new shares
// split) and, once the operator verified it, committed.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	wrapping "github.com/openbao/go-kms-wrapping/v2"
)

// prepare makes the new header and KEK in memory (nothing is stored) and
// returns the new shares, if the change issues any.
func (s *Seal) prepare(ctx context.Context, ch *change) ([]string, error) {
	s.mu.Lock()
	cur := s.keks[ch.from.kekID()].key
	s.mu.Unlock()
	if cur == nil {
		return nil, ErrLocked
	}
	h := ch.from.next(time.Now())
	r := ch.req
	var kek []byte
	var shares []string
	var err error
	switch r.Operation {
	case RotateShares:
		kek, shares, err = s.rekey(ctx, h, cur, r.Shares, r.Threshold, r.PGPKeys)
	case AddShamir:
		var digests [][]byte
		shares, digests, err = splitKEK(cur, h.clusterID(), h.Gen, r.Shares, r.Threshold, r.PGPKeys)
		h.Shamir = &shamirEnrollment{Shares: r.Shares, Threshold: r.Threshold, Gen: h.Gen, Digests: digests}
		kek = cur
	case AddHSM, RewrapHSM:
		h.PKCS11, err = s.wrapWithHSM(ctx, cur)
		kek = cur
	case RemoveShamir:
		kek, _, err = s.rekey(ctx, h, cur, 0, 0, nil)
	case RemoveHSM:
		h.PKCS11 = nil
		kek, shares, err = s.rekey(ctx, h, cur, r.Shares, r.Threshold, r.PGPKeys)
	default:
		err = fmt.Errorf("unknown seal change %q", r.Operation)
	}
	if err != nil {
		return nil, err
	}
	if len(h.mechanisms()) == 0 {
		return nil, errors.New("that would leave no seal mechanism: the last one cannot be removed")
	}
	ch.next, ch.nextKEK = h, kek
	return shares, nil
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
		var digests [][]byte
		if shares, digests, err = splitKEK(kek, h.clusterID(), h.Gen, n, t, pgpKeys); err != nil {
			return nil, nil, err
		}
		h.Shamir = &shamirEnrollment{Shares: n, Threshold: t, Gen: h.Gen, Digests: digests}
	}
	if h.PKCS11 != nil {
		if h.PKCS11, err = s.wrapWithHSM(ctx, kek); err != nil {
			return nil, nil, err
		}
	}
	return kek, shares, nil
}

// commit stores the prepared state in one transaction and makes it
// current. If the transaction's outcome is unknown, the new KEK stays in
// memory, so that whichever generation storage holds keeps working.
func (s *Seal) commit(ctx context.Context, ch *change) (ChangeStatus, error) {
	if s.opts.Persist == nil {
		s.dropChange(ch)
		return ChangeStatus{}, errors.New("this seal cannot store a change")
	}
	s.mu.Lock()
	s.keks[ch.next.kekID()] = kekEntry{key: ch.nextKEK}
	s.mu.Unlock()
	err := s.opts.Persist(ctx, func(ctx context.Context, plaintext []byte) (*wrapping.BlobInfo, error) {
		return encryptWith(ch.next, ch.nextKEK, plaintext, nil)
	})
	if err != nil {
		s.mu.Lock()
		if s.change == ch {
			s.change = nil
		}
		s.mu.Unlock()
		s.logger.Error("saving a seal change failed", "operation", ch.req.Operation, "error", err)
		return ChangeStatus{}, fmt.Errorf("saving the new seal state failed: %w. If it did not reach storage, generation %d stays current and nothing changed; "+
			"if it did, generation %d is current: `status` shows which (seal generation). Keep the old and the new shares until then", err, ch.from.Gen, ch.next.Gen)
	}
	s.mu.Lock()
	s.cur = ch.next
	if s.change == ch {
		s.change = nil
	}
	s.mu.Unlock()
	s.record(ch.next)
	st := s.statusOf(ch)
	st.State, st.Mechanisms, st.Generation = ChangeDone, ch.next.mechanisms(), ch.next.Gen
	s.logger.Info("seal mechanisms changed", "operation", ch.req.Operation, "mechanisms", ch.next.mechanisms(), "generation", ch.next.Gen)
	return st, nil
}

func (ch *change) state() string {
	if ch.next == nil {
		return ChangeAuthorizing
	}
	return ChangeVerifying
}

func (s *Seal) statusOf(ch *change) ChangeStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := ChangeStatus{
		Nonce: ch.nonce, Operation: ch.req.Operation, State: ch.state(), Started: ch.started,
		RequestedBy: ch.req.RequestedBy, AuthorizeWith: ch.authWith, Generation: ch.from.Gen,
	}
	switch {
	case ch.next != nil:
		st.NewGeneration = ch.next.Gen
		st.Progress, st.Threshold = ch.verify.progress(ch.next)
		st.NewThreshold = st.Threshold
	case ch.authWith == AuthorizeShares:
		st.Progress, st.Threshold = ch.auth.progress(ch.from)
	default:
		st.Progress, st.Threshold = len(ch.recoveryParts), ch.recovery.Threshold
	}
	return st
}

func kekIDOf(h *header) string {
	if h == nil {
		return ""
	}
	return h.kekID()
}
