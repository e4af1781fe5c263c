//go:build cgo

package pkcs11

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/miekg/pkcs11"
)

// HSM is an open, logged-in session on the token with the key found. It is
// safe for concurrent use: calls on the one session are serialized.
//
// Every use honours its context even while the token does not answer: the
// calls into the library run on a goroutine of their own (see hang.go).
type HSM struct {
	cfg Config
	mod *module

	// sem serializes use of the session: a one-slot semaphore, taken by the
	// caller and given back by the goroutine that made the calls once they
	// returned (unlock). It guards every field below but closeLater.
	sem     chan struct{}
	closed  bool
	slot    uint
	session pkcs11.SessionHandle
	key     pkcs11.ObjectHandle
	gen     uint64 // the module's generation the session belongs to

	// closeLater (guarded by mod.mu): Close gave up waiting for a call that
	// had not returned; the goroutine of that call closes the session when
	// it does.
	closeLater bool
}

// Open loads the library, finds the token, logs in and finds the key.
// It returns when ctx ends even if the token does not answer.
//
// PKCS#11 keeps one login state per token for the whole process: while
// another handle on the same token is open, the token accepts the login
// without checking the PIN again.
func Open(ctx context.Context, cfg Config) (*HSM, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("opening the HSM: %w", err)
	}
	switch {
	case cfg.TokenLabel == "" && cfg.Slot == nil:
		return nil, fmt.Errorf("%w: neither a token label nor a slot given", ErrToken)
	case cfg.TokenLabel != "" && cfg.Slot != nil:
		return nil, fmt.Errorf("%w: both a token label and a slot given; set one", ErrToken)
	case cfg.KeyLabel == "":
		return nil, fmt.Errorf("%w: no key label given", ErrKey)
	}
	mod, shared, err := loadModule(ctx, cfg.Library)
	if err != nil {
		return nil, err
	}
	h := &HSM{cfg: cfg, mod: mod, sem: make(chan struct{}, 1)}
	broken, gaveUp, err := h.openSession(ctx)
	if !gaveUp && (errors.Is(err, ErrToken) || broken) && shared && mod.owned {
		// The token may have come back since the library was initialized
		// (or an earlier re-initialization failed).
		if gaveUp, err = mod.reinitialize(ctx); err == nil {
			_, gaveUp, err = h.openSession(ctx)
		}
	}
	if err != nil {
		if !gaveUp { // else the call left running releases the module
			mod.release()
		}
		return nil, err
	}
	return h, nil
}

// openSession runs open on its own goroutine. If the caller gives up, the
// goroutine closes what it opened and releases the module when the token
// answers at last. broken is the module's state seen by open.
func (h *HSM) openSession(ctx context.Context) (broken, gaveUp bool, err error) {
	if err := h.mod.enter(ctx, false); err != nil {
		return false, false, err
	}
	gaveUp, err = h.mod.run(ctx, h.Describe(), "opening a session", func() error {
		broken = h.mod.broken
		return h.open()
	}, func(err error, gaveUp bool) {
		if gaveUp && err == nil {
			h.mod.ctx.CloseSession(h.session)
		}
		h.mod.exit(false)
		if gaveUp {
			h.mod.release()
		}
	})
	if gaveUp {
		return false, true, err // broken is the goroutine's still
	}
	return broken, false, err
}

// open finds the token, opens a session, logs in and finds the key. The
// caller holds the library shared (enter) and, once h is shared, h.sem.
func (h *HSM) open() error {
	p := h.mod.ctx
	slot, err := h.findSlot()
	if err != nil {
		return err
	}
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("%w: opening a session on %s: %v", ErrUnavailable, h.Describe(), err)
	}
	// No C_Logout on the failure paths below (nor in Close): it would log
	// out every other session of this process on the token. Closing the
	// last session logs out.
	if err := p.Login(s, pkcs11.CKU_USER, h.cfg.PIN); err != nil && !isCode(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
		p.CloseSession(s)
		if isCode(err, pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_LEN_RANGE, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_EXPIRED) {
			return fmt.Errorf("%w (%s: %v)", ErrPIN, h.Describe(), err)
		}
		return fmt.Errorf("%w: logging in to %s: %v", ErrUnavailable, h.Describe(), err)
	}
	key, err := h.findKey(s)
	if err != nil {
		p.CloseSession(s)
		return err
	}
	h.slot, h.session, h.key, h.gen = slot, s, key, h.mod.gen
	return nil
}

func (h *HSM) findSlot() (uint, error) {
	p := h.mod.ctx
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("%w: listing slots: %v", ErrUnavailable, err)
	}
	var present []string // initialized tokens, for the error
	for _, s := range slots {
		info, err := p.GetTokenInfo(s)
		if err != nil || info.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		label := strings.TrimRight(info.Label, " \x00")
		if h.cfg.Slot != nil && s == *h.cfg.Slot || h.cfg.Slot == nil && label == h.cfg.TokenLabel {
			return s, nil
		}
		present = append(present, fmt.Sprintf("%q in slot %d", label, s))
	}
	have := "none"
	if len(present) > 0 {
		have = strings.Join(present, ", ")
	}
	if h.cfg.Slot != nil {
		return 0, fmt.Errorf("%w: no initialized token in slot %d (tokens present: %s)", ErrToken, *h.cfg.Slot, have)
	}
	return 0, fmt.Errorf("%w: no token labelled %q (tokens present: %s)", ErrToken, h.cfg.TokenLabel, have)
}

func (h *HSM) findKey(s pkcs11.SessionHandle) (pkcs11.ObjectHandle, error) {
	p := h.mod.ctx
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, h.cfg.KeyLabel),
	}
	if err := p.FindObjectsInit(s, tmpl); err != nil {
		return 0, fmt.Errorf("%w: searching for key %q: %v", ErrUnavailable, h.cfg.KeyLabel, err)
	}
	objs, _, err := p.FindObjects(s, 2)
	p.FindObjectsFinal(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%w: searching for key %q: %v", ErrUnavailable, h.cfg.KeyLabel, err)
	case len(objs) == 0:
		return 0, fmt.Errorf("%w: no secret key labelled %q on %s", ErrKey, h.cfg.KeyLabel, h.Describe())
	case len(objs) > 1:
		return 0, fmt.Errorf("%w: more than one secret key labelled %q on %s", ErrKey, h.cfg.KeyLabel, h.Describe())
	}
	attrs, err := p.GetAttributeValue(s, objs[0], []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, nil),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, nil),
	})
	if err != nil || len(attrs) != 4 {
		return 0, fmt.Errorf("%w: reading the attributes of key %q: %v", ErrKey, h.cfg.KeyLabel, err)
	}
	if kt := bytesToUint(attrs[0].Value); kt != pkcs11.CKK_AES {
		return 0, fmt.Errorf("%w: key %q is not an AES key", ErrKey, h.cfg.KeyLabel)
	}
	if n := bytesToUint(attrs[1].Value); n != 32 {
		return 0, fmt.Errorf("%w: key %q is AES-%d, not AES-256", ErrKey, h.cfg.KeyLabel, n*8)
	}
	if bytesToUint(attrs[2].Value) == 0 || bytesToUint(attrs[3].Value) == 0 {
		return 0, fmt.Errorf("%w: key %q may not encrypt and decrypt (CKA_ENCRYPT and CKA_DECRYPT must be true)", ErrKey, h.cfg.KeyLabel)
	}
	return objs[0], nil
}

const (
	wrapVersion = 1
	gcmIVSize   = 12
	gcmTagBits  = 128
)

// Wrap encrypts plaintext with the token's key (CKM_AES_GCM, random IV):
// version | iv | ciphertext+tag.
func (h *HSM) Wrap(ctx context.Context, plaintext []byte) ([]byte, error) {
	return h.wrap(ctx, "a wrap", plaintext)
}

func (h *HSM) wrap(ctx context.Context, what string, plaintext []byte) ([]byte, error) {
	iv := make([]byte, gcmIVSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	var ct []byte
	err := h.do(ctx, what, func() (err error) {
		ct, err = h.gcm(true, iv, plaintext)
		return h.classify(err)
	})
	if err != nil {
		return nil, err
	}
	return append(append([]byte{wrapVersion}, iv...), ct...), nil
}

// Unwrap undoes Wrap. A blob that does not decrypt under this key is
// ErrUnwrap; a token that does not answer is ErrUnavailable.
func (h *HSM) Unwrap(ctx context.Context, blob []byte) ([]byte, error) {
	return h.unwrap(ctx, "an unwrap", blob)
}

func (h *HSM) unwrap(ctx context.Context, what string, blob []byte) ([]byte, error) {
	if len(blob) < 1+gcmIVSize+gcmTagBits/8 {
		return nil, fmt.Errorf("%w: the wrapped key is %d bytes, too short", ErrUnwrap, len(blob))
	}
	if blob[0] != wrapVersion {
		return nil, fmt.Errorf("%w: the wrapped key has format version %d; this version reads %d", ErrUnwrap, blob[0], wrapVersion)
	}
	var out []byte
	err := h.do(ctx, what, func() error {
		var err error
		out, err = h.gcm(false, blob[1:1+gcmIVSize], blob[1+gcmIVSize:])
		if err == nil || !isCode(err, pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE, pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_FUNCTION_FAILED) {
			return h.classify(err)
		}
		// A GCM tag that does not verify comes back as one of these (SoftHSM
		// says CKR_GENERAL_ERROR), and so can a failing device. Encrypting
		// under the same key tells the two apart.
		iv := make([]byte, gcmIVSize)
		rand.Read(iv)
		if _, perr := h.gcm(true, iv, nil); perr != nil {
			return h.classify(perr)
		}
		return fmt.Errorf("%w (%s: %v)", ErrUnwrap, h.Describe(), err)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// use runs f with the session to itself (see do).
func (h *HSM) use(ctx context.Context, f func() error) error { return h.do(ctx, "a call", f) }

// do runs f with the session to itself, opening a new session first if
// the library was re-initialized since this one was opened. f runs on a
// goroutine of its own; do returns when f does or when ctx ends, whichever
// is first (what names f in the error then). Only one f per session runs
// at a time: while one that was given up on has not returned, do refuses
// at once.
func (h *HSM) do(ctx context.Context, what string, f func() error) error {
	if err := h.lock(ctx); err != nil {
		return err
	}
	if h.closed {
		h.unlock()
		return fmt.Errorf("%w: the session on %s is closed", ErrUnavailable, h.Describe())
	}
	if err := ctx.Err(); err != nil {
		h.unlock()
		return fmt.Errorf("using %s: %w", h.Describe(), err)
	}
	if err := h.mod.enter(ctx, false); err != nil {
		h.unlock()
		return err
	}
	_, err := h.mod.run(ctx, h.Describe(), what, func() error {
		if h.gen != h.mod.gen {
			// The old session ended with the old initialization.
			if err := h.open(); err != nil {
				return fmt.Errorf("%w: opening a new session after the library was re-initialized: %w", ErrUnavailable, err)
			}
		}
		return f()
	}, func(error, bool) {
		h.mod.exit(false)
		h.unlock()
	})
	return err
}

// lock takes the session's semaphore, waiting until ctx ends; a session
// (or library) with a call that was given up on is refused at once.
func (h *HSM) lock(ctx context.Context) error {
	start := time.Now()
	for {
		select {
		case h.sem <- struct{}{}:
			return nil
		default:
		}
		m := h.mod
		m.mu.Lock()
		gaveUp, oldest := m.hung()
		ch := m.changedCh()
		m.mu.Unlock()
		if gaveUp != nil {
			return gaveUp.busy()
		}
		if ctx.Err() == nil {
			select {
			case h.sem <- struct{}{}:
				return nil
			case <-ch: // a call returned or was given up on: look again
				continue
			case <-ctx.Done():
			}
		}
		if oldest != nil {
			return oldest.waited(ctx, start)
		}
		return fmt.Errorf("waiting for %s: %w", h.Describe(), ctx.Err())
	}
}

// unlock gives the semaphore back, closing the session first if Close
// gave up on it meanwhile.
func (h *HSM) unlock() {
	m := h.mod
	m.mu.Lock()
	later := h.closeLater
	h.closeLater = false
	if !later {
		<-h.sem
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	h.closeSession(context.Background())
	<-h.sem
}

// gcm runs one AES-GCM operation on the session (held by the caller).
func (h *HSM) gcm(encrypt bool, iv, in []byte) ([]byte, error) {
	p := h.mod.ctx
	params := pkcs11.NewGCMParams(iv, nil, gcmTagBits)
	defer params.Free()
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}
	if encrypt {
		if err := p.EncryptInit(h.session, mech, h.key); err != nil {
			return nil, err
		}
		return p.Encrypt(h.session, in)
	}
	if err := p.DecryptInit(h.session, mech, h.key); err != nil {
		return nil, err
	}
	return p.Decrypt(h.session, in)
}

// classify turns a PKCS#11 error from using the key into one of ours.
func (h *HSM) classify(err error) error {
	switch {
	case err == nil:
		return nil
	case isCode(err, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11.CKR_KEY_TYPE_INCONSISTENT, pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID):
		return fmt.Errorf("%w (%s: %v)", ErrKey, h.Describe(), err)
	default:
		// CKR_OBJECT_HANDLE_INVALID, CKR_SESSION_HANDLE_INVALID,
		// CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, ...: the session or
		// the key is gone; a new Open may find them again.
		return fmt.Errorf("%w: %s: %v", ErrUnavailable, h.Describe(), err)
	}
}

// Check tells whether the token is reachable and the key usable now, by
// wrapping and unwrapping a probe.
func (h *HSM) Check(ctx context.Context) error {
	probe := []byte("gitlab-secrets-appliance hsm probe")
	w, err := h.wrap(ctx, "a probe", probe)
	if err != nil {
		return err
	}
	back, err := h.unwrap(ctx, "a probe", w)
	if err != nil {
		return err
	}
	if string(back) != string(probe) {
		return fmt.Errorf("%w: %s returned a wrong probe", ErrUnavailable, h.Describe())
	}
	return nil
}

// hsmCloseTimeout bounds how long Close waits for a call in progress on
// the session, and for the token to close it.
const hsmCloseTimeout = 2 * time.Second

// Close closes the session and releases the library (the last handle on
// it finalizes and unloads it); a second Close does nothing. It waits for
// a call in progress for hsmCloseTimeout at most: if the token has not
// answered by then, Close returns an error saying so, and the session is
// closed when (if ever) that call returns.
func (h *HSM) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), hsmCloseTimeout)
	defer cancel()
	if err := h.lock(ctx); err != nil {
		m := h.mod
		m.mu.Lock()
		select {
		case h.sem <- struct{}{}: // the call returned just now
			m.mu.Unlock()
		default:
			h.closeLater = true
			m.mu.Unlock()
			return fmt.Errorf("closing the session on %s: the token did not answer (%w); the session is closed if that call ever returns", h.Describe(), err)
		}
	}
	err := h.closeSession(ctx)
	<-h.sem
	return err
}

// closeSession ends the session and drops the handle's reference on the
// module, once. The caller holds h.sem.
func (h *HSM) closeSession(ctx context.Context) error {
	if h.closed {
		return nil
	}
	h.closed = true
	if err := h.mod.enter(ctx, false); err != nil {
		// Another call into the library has not returned: leave the
		// session, which goes with the process or the library.
		h.mod.release()
		return fmt.Errorf("closing the session on %s: %w", h.Describe(), err)
	}
	_, err := h.mod.run(ctx, h.Describe(), "closing the session", func() error {
		if h.gen != h.mod.gen {
			return nil // gone with the old initialization
		}
		err := h.mod.ctx.CloseSession(h.session)
		if isCode(err, pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT) {
			return nil // already gone with the token
		}
		return err
	}, func(error, bool) {
		h.mod.exit(false)
		h.mod.release()
	})
	if err != nil {
		return fmt.Errorf("closing the session on %s: %w", h.Describe(), err)
	}
	return nil
}

// Describe names the token and key for messages; never the PIN.
func (h *HSM) Describe() string { return h.cfg.Describe() }

func isCode(err error, codes ...uint) bool {
	var e pkcs11.Error
	if !errors.As(err, &e) {
		return false
	}
	return slices.Contains(codes, uint(e))
}

func bytesToUint(b []byte) uint {
	var n uint
	for i := len(b) - 1; i >= 0; i-- { // PKCS#11 CK_ULONG: native (little) endian here
		n = n<<8 | uint(b[i])
	}
	return n
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
