package seal

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/openbao/openbao/sdk/v2/helper/shamir"
)

// A seal change runs in three steps, like OpenBao's rekey with
// verification:
//
//  1. StartChange (the caller has checked the operator's token): nothing
//     changes yet; a nonce names the attempt.
//  2. AuthorizeChange, once per key: a quorum of the current Shamir shares
//     (or of OpenBao's recovery keys) proves that the holders of the
//     current mechanism agree. A token alone never changes the seal.
//     When the quorum is in, the new state is prepared in memory; new
//     shares are returned, once, in that answer.
//  3. VerifyChange, once per new share: a quorum of the new shares is
//     given back, proving they reached their holders. Only then is the new
//     state committed, in one storage transaction.
//
// Changes that issue no shares (adding or re-wrapping the HSM, removing
// Shamir) commit at the end of step 2: the HSM has unwrapped what it
// wrapped before anything depends on it. Until the commit the old
// generation is the only one in storage; the commit is one Raft entry; a
// crash at any point leaves the old generation or the new one complete.
// A change lives in the active node's memory only: a restart or a leader
// change ends it, with nothing changed.

// Operation names a change of the seal mechanisms.
type Operation string

// Seal changes.
const (
	RotateShares Operation = "rotate-shares" // a new KEK and new shares: every earlier share is void
	AddShamir    Operation = "add-shamir"    // shares of the current KEK
	AddHSM       Operation = "add-pkcs11"    // this node's HSM key wraps the current KEK
	RewrapHSM    Operation = "rewrap-hsm"    // wrap the KEK with the HSM key the config names now
	RemoveShamir Operation = "remove-shamir" // a new KEK, wrapped by the HSM only
	RemoveHSM    Operation = "remove-pkcs11" // a new KEK and new shares; the HSM opens nothing current
)

// What authorizes a change.
const (
	AuthorizeShares       = "shares"        // the current Shamir shares
	AuthorizeRecoveryKeys = "recovery_keys" // OpenBao's recovery keys (required when the HSM is the only mechanism)
)

// States of a change.
const (
	ChangeAuthorizing = "authorizing" // waiting for a quorum of current keys
	ChangeVerifying   = "verifying"   // waiting for a quorum of the new shares
	ChangeDone        = "done"        // committed
)

// Errors of seal changes.
var (
	ErrChangePending     = errors.New("another seal change is in progress")
	ErrNoChange          = errors.New("no seal change with this nonce is in progress on this node")
	ErrWrongRecoveryKeys = errors.New("the submitted recovery keys do not recover the recovery key: one of them is wrong; they were discarded, start the authorization again")
	ErrMalformedKey      = errors.New("the recovery key is malformed: paste it exactly as init printed it")
)

// ChangeRequest asks for a seal change.
type ChangeRequest struct {
	Operation Operation
	// Shares and Threshold: the new split (RotateShares, AddShamir,
	// RemoveHSM). Required: the caller applies its defaults.
	Shares, Threshold int
	PGPKeys           []string // optional: one per new share
	// AuthorizeWith is AuthorizeShares or AuthorizeRecoveryKeys; empty:
	// shares when Shamir is enrolled, else recovery keys.
	AuthorizeWith string
	RequestedBy   string // who asked (a token's display name), for status and audit
}

// RecoveryKeys lets a quorum of OpenBao's recovery keys authorize a change.
type RecoveryKeys struct {
	Threshold int
	Verify    func(ctx context.Context, key []byte) error
}

// ChangeStatus is where a seal change stands. It holds no key material
// except Shares, set only in the one answer that prepared them.
type ChangeStatus struct {
	Nonce         string    `json:"nonce"`
	Operation     Operation `json:"operation"`
	State         string    `json:"state"`
	Started       time.Time `json:"started"`
	RequestedBy   string    `json:"requested_by,omitempty"`
	AuthorizeWith string    `json:"authorize_with"`
	// Progress and Threshold: keys (or new shares, when verifying) in so
	// far, and how many are needed.
	Progress      int    `json:"progress"`
	Threshold     int    `json:"threshold"`
	Generation    uint32 `json:"generation"` // the current generation
	NewGeneration uint32 `json:"new_generation,omitempty"`
	// Shares are the new shares (PGP-encrypted if keys were given), in the
	// answer that prepared them only; NewThreshold of them unseal.
	Shares       []string `json:"unseal_shares,omitempty"`
	NewThreshold int      `json:"unseal_threshold,omitempty"`
	// Mechanisms enrolled once done.
	Mechanisms []string `json:"mechanisms,omitempty"`
}

// change is a seal change in progress.
type change struct {
	nonce    string
	req      ChangeRequest
	started  time.Time
	from     *header // the header it changes
	authWith string
	recovery *RecoveryKeys

	auth          collector // current shares (AuthorizeShares)
	recoveryParts [][]byte  // recovery keys (AuthorizeRecoveryKeys)

	next    *header // prepared once authorized
	nextKEK []byte
	verify  collector // new shares given back
}

// StartChange begins a seal change. Nothing changes until it is
// authorized (and, if it issues shares, verified). One change at a time.
func (s *Seal) StartChange(ctx context.Context, req ChangeRequest, rk *RecoveryKeys) (ChangeStatus, error) {
	s.ops.Lock()
	defer s.ops.Unlock()
	s.refresh(ctx)
	s.mu.Lock()
	cur, pending := s.cur, s.change
	_, unsealed := s.keks[kekIDOf(cur)]
	s.mu.Unlock()
	if pending != nil {
		return ChangeStatus{}, fmt.Errorf("%w (%s, started %s, state %s): finish it (`seal authorize`, `seal verify`) or cancel it (`seal cancel`)",
			ErrChangePending, pending.req.Operation, pending.started.UTC().Format(time.RFC3339), pending.state())
	}
	if cur == nil || !unsealed {
		return ChangeStatus{}, fmt.Errorf("the node must be unsealed to change the seal: %w", ErrLocked)
	}
	if err := s.checkRequest(cur, req); err != nil {
		return ChangeStatus{}, err
	}
	with := req.AuthorizeWith
	if with == "" {
		with = AuthorizeRecoveryKeys
		if cur.Shamir != nil {
			with = AuthorizeShares
		}
	}
	switch with {
	case AuthorizeShares:
		if cur.Shamir == nil {
			return ChangeStatus{}, errors.New("authorize with shares: the cluster has no Shamir shares; authorize with its recovery keys")
		}
	case AuthorizeRecoveryKeys:
		if rk == nil || rk.Threshold < 1 || rk.Verify == nil {
			return ChangeStatus{}, errors.New("authorize with recovery keys: the cluster has no recovery keys")
		}
	default:
		return ChangeStatus{}, fmt.Errorf("authorize with %q: use %s or %s", with, AuthorizeShares, AuthorizeRecoveryKeys)
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return ChangeStatus{}, err
	}
	ch := &change{nonce: hex.EncodeToString(nonce), req: req, started: time.Now(), from: cur, authWith: with, recovery: rk}
	s.mu.Lock()
	s.change = ch
	s.mu.Unlock()
	s.logger.Info("seal change started: waiting for a quorum of the current keys", "operation", req.Operation, "authorize_with", with, "requested_by", req.RequestedBy)
	return s.statusOf(ch), nil
}

// checkRequest refuses, before anything is asked of the operators, a
// change that cannot be made.
func (s *Seal) checkRequest(cur *header, req ChangeRequest) error {
	split := func() error {
		if err := CheckSplit(req.Shares, req.Threshold); err != nil {
			return err
		}
		if len(req.PGPKeys) > 0 && len(req.PGPKeys) != req.Shares {
			return fmt.Errorf("%d PGP keys for %d shares: give one key per share", len(req.PGPKeys), req.Shares)
		}
		return nil
	}
	switch req.Operation {
	case RotateShares:
		return split()
	case AddShamir:
		if cur.Shamir != nil {
			return errors.New("Shamir shares are enrolled already: use rotate-shares to replace them")
		}
		return split()
	case AddHSM, RewrapHSM:
		if s.opts.HSM == nil {
			return errors.New("this node has no seal \"pkcs11\" block configured: add one with the HSM's library, token, PIN file and key label, restart, then retry")
		}
		return nil
	case RemoveShamir:
		if cur.Shamir == nil {
			return ErrNoShamir
		}
		if cur.PKCS11 == nil {
			return errors.New("Shamir shares are the only seal mechanism: add the HSM first (the last mechanism cannot be removed)")
		}
		return nil
	case RemoveHSM:
		if cur.PKCS11 == nil {
			return errors.New("no HSM is enrolled")
		}
		if cur.Shamir == nil {
			return errors.New("the HSM is the only seal mechanism: add Shamir shares first (the last mechanism cannot be removed)")
		}
		return split()
	}
	return fmt.Errorf("unknown seal change %q", req.Operation)
}

// AuthorizeChange takes one current share (or recovery key) for the change
// named by nonce. A refused key changes nothing. With the quorum in, the
// new state is prepared; a change that issues no shares is committed.
func (s *Seal) AuthorizeChange(ctx context.Context, nonce, key string) (ChangeStatus, error) {
	s.ops.Lock()
	defer s.ops.Unlock()
	ch, err := s.pending(nonce)
	if err != nil {
		return ChangeStatus{}, err
	}
	if ch.next != nil {
		return s.statusOf(ch), errors.New("the change is authorized already: give back the new shares with `seal verify`")
	}
	var done bool
	if ch.authWith == AuthorizeShares {
		done, err = ch.addShare(key)
	} else {
		done, err = ch.addRecoveryKey(ctx, key)
	}
	if err != nil || !done {
		return s.statusOf(ch), err
	}
	shares, err := s.prepare(ctx, ch)
	if err != nil {
		s.dropChange(ch)
		return ChangeStatus{}, fmt.Errorf("the change was authorized but could not be prepared, nothing changed: %w", err)
	}
	if len(shares) == 0 {
		return s.commit(ctx, ch)
	}
	st := s.statusOf(ch)
	st.Shares = shares
	s.logger.Info("seal change authorized: new shares issued, waiting for a quorum of them to be given back", "operation", ch.req.Operation, "new_generation", ch.next.Gen)
	return st, nil
}

// VerifyChange takes one of the new shares back. With a quorum of them in,
// the change is committed.
func (s *Seal) VerifyChange(ctx context.Context, nonce, text string) (ChangeStatus, error) {
	s.ops.Lock()
	defer s.ops.Unlock()
	ch, err := s.pending(nonce)
	if err != nil {
		return ChangeStatus{}, err
	}
	if ch.next == nil {
		return s.statusOf(ch), errors.New("the change is not authorized yet: submit a quorum of the current keys with `seal authorize` first")
	}
	sh, err := decodeShare(text)
	if err != nil {
		return s.statusOf(ch), err
	}
	kek, err := ch.verify.add(sh, ch.next)
	if err != nil || kek == nil {
		return s.statusOf(ch), err
	}
	clear(kek) // the same as ch.nextKEK: admits and combine checked it
	return s.commit(ctx, ch)
}

// CancelChange ends the change in progress (nonce "" : whichever it is);
// nothing changes.
func (s *Seal) CancelChange(nonce string) error {
	s.ops.Lock()
	defer s.ops.Unlock()
	ch, err := s.pending(nonce)
	if err != nil {
		return err
	}
	s.dropChange(ch)
	s.logger.Info("seal change cancelled, nothing changed", "operation", ch.req.Operation)
	return nil
}

// PendingChange is the change in progress, or nil.
func (s *Seal) PendingChange() *ChangeStatus {
	s.mu.Lock()
	ch := s.change
	s.mu.Unlock()
	if ch == nil {
		return nil
	}
	st := s.statusOf(ch)
	return &st
}

func (s *Seal) pending(nonce string) (*change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.change
	if ch == nil || nonce != "" && !hmac.Equal([]byte(nonce), []byte(ch.nonce)) {
		return nil, ErrNoChange
	}
	if s.cur == nil || s.cur.keyID() != ch.from.keyID() {
		s.change = nil
		return nil, fmt.Errorf("%w: the seal changed since this change was started; start it again", ErrNoChange)
	}
	return ch, nil
}

// dropChange forgets ch and any key it made.
func (s *Seal) dropChange(ch *change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.change == ch {
		s.change = nil
	}
	ch.auth.reset()
	ch.verify.reset()
	for _, p := range ch.recoveryParts {
		clear(p)
	}
	if ch.nextKEK != nil && ch.next.kekID() != ch.from.kekID() {
		clear(ch.nextKEK)
	}
}

// addShare takes one current share; done once they recover the KEK.
func (ch *change) addShare(text string) (bool, error) {
	sh, err := decodeShare(text)
	if err != nil {
		return false, err
	}
	kek, err := ch.auth.add(sh, ch.from)
	if err != nil || kek == nil {
		return false, err
	}
	clear(kek) // the current KEK, which the seal holds already
	return true, nil
}

// addRecoveryKey takes one recovery key; done once the keys in recover
// OpenBao's recovery key.
func (ch *change) addRecoveryKey(ctx context.Context, text string) (bool, error) {
	text = strings.TrimSpace(text)
	part, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		part, err = hex.DecodeString(text)
	}
	if err != nil || len(part) < 2 {
		return false, ErrMalformedKey
	}
	t := ch.recovery.Threshold
	for _, p := range ch.recoveryParts {
		if bytes.Equal(p, part) || t > 1 && p[len(p)-1] == part[len(part)-1] {
			return false, errors.New("this recovery key was already submitted for this change: submit a different holder's key")
		}
	}
	ch.recoveryParts = append(ch.recoveryParts, part)
	if len(ch.recoveryParts) < t {
		return false, nil
	}
	key := ch.recoveryParts[0]
	if t > 1 {
		if key, err = shamir.Combine(ch.recoveryParts); err != nil {
			key = nil
		}
	}
	if key == nil || ch.recovery.Verify(ctx, key) != nil {
		for _, p := range ch.recoveryParts {
			clear(p)
		}
		ch.recoveryParts = nil
		return false, ErrWrongRecoveryKeys
	}
	if t > 1 {
		clear(key)
	}
	return true, nil
}
