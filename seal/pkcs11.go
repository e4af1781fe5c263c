//go:build cgo

package seal

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// HSM is an open, logged-in session on the token with the key found. It is
// safe for concurrent use: calls on the one session are serialized.
type HSM struct {
	cfg PKCS11Config
	mod *module

	// sem serializes use of the session (a one-slot semaphore rather than a
	// mutex, so that a caller waiting behind a hung token call gives up
	// when its context ends). It guards every field below.
	sem     chan struct{}
	closed  bool
	slot    uint
	session pkcs11.SessionHandle
	key     pkcs11.ObjectHandle
	gen     uint64 // the module's generation the session belongs to
}

// module is one loaded, initialized PKCS#11 library.
//
// PKCS#11 allows one C_Initialize per library per process, and C_Finalize
// ends every session of the process on it. So HSM handles on the same
// library share one module, counted by refs, and the library is finalized
// when the last handle closes. The table of modules is the one piece of
// process-wide state in this package, for that reason.
type module struct {
	path  string // canonical path, the key in the table
	ctx   *pkcs11.Ctx
	refs  int  // open HSM handles; guarded by modules.mu
	owned bool // we called C_Initialize (false: someone else in the process had, so we never finalize it)

	// mu is held shared by every call into the library and exclusively to
	// re-initialize it; gen counts the re-initializations, so that a handle
	// notices its session went with the old one and opens a new one.
	mu     sync.RWMutex
	gen    uint64
	broken bool // the last re-initialization failed
}

var modules = struct {
	mu     sync.Mutex
	byPath map[string]*module
}{byPath: map[string]*module{}}

// loadModule returns the module for the library at path, loading and
// initializing it if no handle has it open. shared reports that it was
// already open.
func loadModule(path string) (m *module, shared bool, err error) {
	if path == "" {
		return nil, false, fmt.Errorf("%w: no library path given", ErrHSMLibrary)
	}
	// The same library under two names (a symlink) is one library: dlopen
	// returns the same copy, and one C_Finalize would end both.
	canon, err := filepath.EvalSymlinks(path)
	if err == nil {
		canon, err = filepath.Abs(canon)
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: %s: %v", ErrHSMLibrary, path, unwrapPath(err))
	}
	if st, err := os.Stat(canon); err != nil {
		return nil, false, fmt.Errorf("%w: %s: %v", ErrHSMLibrary, path, unwrapPath(err))
	} else if !st.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%w: %s is not a file", ErrHSMLibrary, path)
	}

	modules.mu.Lock()
	defer modules.mu.Unlock()
	if m := modules.byPath[canon]; m != nil {
		m.refs++
		return m, true, nil
	}
	ctx := pkcs11.New(canon)
	if ctx == nil {
		return nil, false, fmt.Errorf("%w: %s is not a loadable PKCS#11 module", ErrHSMLibrary, path)
	}
	owned := true
	if err := ctx.Initialize(); err != nil {
		if !isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			ctx.Destroy()
			return nil, false, fmt.Errorf("%w: %s: C_Initialize: %v", ErrHSMLibrary, path, err)
		}
		owned = false // another part of this process (e.g. OpenBao's own pkcs11 seal) initialized it
	}
	m = &module{path: canon, ctx: ctx, refs: 1, owned: owned}
	modules.byPath[canon] = m
	return m, false, nil
}

// release drops one handle's reference; the last one finalizes and unloads
// the library.
func (m *module) release() {
	modules.mu.Lock()
	defer modules.mu.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(modules.byPath, m.path)
	if m.owned {
		m.ctx.Finalize()
	}
	m.ctx.Destroy()
}

// reinitialize finalizes and initializes the library again. Modules such
// as SoftHSM list their tokens only in C_Initialize, so a token that came
// back after being removed is invisible until then. Every session on the
// module ends; the other handles open new ones on their next call.
func (m *module) reinitialize() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	m.ctx.Finalize()
	err := m.ctx.Initialize()
	m.broken = err != nil && !isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)
	if m.broken {
		return fmt.Errorf("%w: %s: C_Initialize: %v", ErrHSMUnavailable, m.path, err)
	}
	return nil
}

// OpenHSM loads the library, finds the token, logs in and finds the key.
//
// PKCS#11 keeps one login state per token for the whole process: while
// another handle on the same token is open, the token accepts the login
// without checking the PIN again.
func OpenHSM(ctx context.Context, cfg PKCS11Config) (*HSM, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("opening the HSM: %w", err)
	}
	switch {
	case cfg.TokenLabel == "" && cfg.Slot == nil:
		return nil, fmt.Errorf("%w: neither a token label nor a slot given", ErrHSMToken)
	case cfg.TokenLabel != "" && cfg.Slot != nil:
		return nil, fmt.Errorf("%w: both a token label and a slot given; set one", ErrHSMToken)
	case cfg.KeyLabel == "":
		return nil, fmt.Errorf("%w: no key label given", ErrHSMKey)
	}
	mod, shared, err := loadModule(cfg.Library)
	if err != nil {
		return nil, err
	}
	h := &HSM{cfg: cfg, mod: mod, sem: make(chan struct{}, 1)}
	mod.mu.RLock()
	err = h.open()
	broken := mod.broken
	mod.mu.RUnlock()
	if (errors.Is(err, ErrHSMToken) || broken) && shared && mod.owned {
		// The token may have come back since the library was initialized
		// (or an earlier re-initialization failed).
		if err = mod.reinitialize(); err == nil {
			mod.mu.RLock()
			err = h.open()
			mod.mu.RUnlock()
		}
	}
	if err != nil {
		mod.release()
		return nil, err
	}
	return h, nil
}

// open finds the token, opens a session, logs in and finds the key. The
// caller holds h.mod.mu (shared) and, once h is shared, h.sem.
func (h *HSM) open() error {
	p := h.mod.ctx
	slot, err := h.findSlot()
	if err != nil {
		return err
	}
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("%w: opening a session on %s: %v", ErrHSMUnavailable, h.Describe(), err)
	}
	// No C_Logout on the failure paths below (nor in Close): it would log
	// out every other session of this process on the token. Closing the
	// last session logs out.
	if err := p.Login(s, pkcs11.CKU_USER, h.cfg.PIN); err != nil && !isCode(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
		p.CloseSession(s)
		if isCode(err, pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_LEN_RANGE, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_EXPIRED) {
			return fmt.Errorf("%w (%s: %v)", ErrHSMPIN, h.Describe(), err)
		}
		return fmt.Errorf("%w: logging in to %s: %v", ErrHSMUnavailable, h.Describe(), err)
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
		return 0, fmt.Errorf("%w: listing slots: %v", ErrHSMUnavailable, err)
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
		return 0, fmt.Errorf("%w: no initialized token in slot %d (tokens present: %s)", ErrHSMToken, *h.cfg.Slot, have)
	}
	return 0, fmt.Errorf("%w: no token labelled %q (tokens present: %s)", ErrHSMToken, h.cfg.TokenLabel, have)
}

func (h *HSM) findKey(s pkcs11.SessionHandle) (pkcs11.ObjectHandle, error) {
	p := h.mod.ctx
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, h.cfg.KeyLabel),
	}
	if err := p.FindObjectsInit(s, tmpl); err != nil {
		return 0, fmt.Errorf("%w: searching for key %q: %v", ErrHSMUnavailable, h.cfg.KeyLabel, err)
	}
	objs, _, err := p.FindObjects(s, 2)
	p.FindObjectsFinal(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%w: searching for key %q: %v", ErrHSMUnavailable, h.cfg.KeyLabel, err)
	case len(objs) == 0:
		return 0, fmt.Errorf("%w: no secret key labelled %q on %s", ErrHSMKey, h.cfg.KeyLabel, h.Describe())
	case len(objs) > 1:
		return 0, fmt.Errorf("%w: more than one secret key labelled %q on %s", ErrHSMKey, h.cfg.KeyLabel, h.Describe())
	}
	attrs, err := p.GetAttributeValue(s, objs[0], []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, nil),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, nil),
	})
	if err != nil || len(attrs) != 4 {
		return 0, fmt.Errorf("%w: reading the attributes of key %q: %v", ErrHSMKey, h.cfg.KeyLabel, err)
	}
	if kt := bytesToUint(attrs[0].Value); kt != pkcs11.CKK_AES {
		return 0, fmt.Errorf("%w: key %q is not an AES key", ErrHSMKey, h.cfg.KeyLabel)
	}
	if n := bytesToUint(attrs[1].Value); n != 32 {
		return 0, fmt.Errorf("%w: key %q is AES-%d, not AES-256", ErrHSMKey, h.cfg.KeyLabel, n*8)
	}
	if bytesToUint(attrs[2].Value) == 0 || bytesToUint(attrs[3].Value) == 0 {
		return 0, fmt.Errorf("%w: key %q may not encrypt and decrypt (CKA_ENCRYPT and CKA_DECRYPT must be true)", ErrHSMKey, h.cfg.KeyLabel)
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
	iv := make([]byte, gcmIVSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	var ct []byte
	err := h.use(ctx, func() (err error) {
		ct, err = h.gcm(true, iv, plaintext)
		return h.classify(err)
	})
	if err != nil {
		return nil, err
	}
	return append(append([]byte{wrapVersion}, iv...), ct...), nil
}

// Unwrap undoes Wrap. A blob that does not decrypt under this key is
// ErrHSMUnwrap; a token that does not answer is ErrHSMUnavailable.
func (h *HSM) Unwrap(ctx context.Context, blob []byte) ([]byte, error) {
	if len(blob) < 1+gcmIVSize+gcmTagBits/8 {
		return nil, fmt.Errorf("%w: the wrapped key is %d bytes, too short", ErrHSMUnwrap, len(blob))
	}
	if blob[0] != wrapVersion {
		return nil, fmt.Errorf("%w: the wrapped key has format version %d; this version reads %d", ErrHSMUnwrap, blob[0], wrapVersion)
	}
	var out []byte
	err := h.use(ctx, func() error {
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
		return fmt.Errorf("%w (%s: %v)", ErrHSMUnwrap, h.Describe(), err)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// use runs f with the session to itself, opening a new session first if
// the library was re-initialized since this one was opened.
func (h *HSM) use(ctx context.Context, f func() error) error {
	select {
	case h.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s: %w", h.Describe(), ctx.Err())
	}
	defer func() { <-h.sem }()
	if h.closed {
		return fmt.Errorf("%w: the session on %s is closed", ErrHSMUnavailable, h.Describe())
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("using %s: %w", h.Describe(), err)
	}
	h.mod.mu.RLock()
	defer h.mod.mu.RUnlock()
	if h.gen != h.mod.gen {
		// The old session ended with the old initialization.
		if err := h.open(); err != nil {
			return fmt.Errorf("%w: opening a new session after the library was re-initialized: %w", ErrHSMUnavailable, err)
		}
	}
	return f()
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
		return fmt.Errorf("%w (%s: %v)", ErrHSMKey, h.Describe(), err)
	default:
		// CKR_OBJECT_HANDLE_INVALID, CKR_SESSION_HANDLE_INVALID,
		// CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, ...: the session or
		// the key is gone; a new OpenHSM may find them again.
		return fmt.Errorf("%w: %s: %v", ErrHSMUnavailable, h.Describe(), err)
	}
}

// Check tells whether the token is reachable and the key usable now, by
// wrapping and unwrapping a probe.
func (h *HSM) Check(ctx context.Context) error {
	probe := []byte("gitlab-secrets-appliance hsm probe")
	w, err := h.Wrap(ctx, probe)
	if err != nil {
		return err
	}
	back, err := h.Unwrap(ctx, w)
	if err != nil {
		return err
	}
	if string(back) != string(probe) {
		return fmt.Errorf("%w: %s returned a wrong probe", ErrHSMUnavailable, h.Describe())
	}
	return nil
}

// Close closes the session and releases the library (the last handle on
// it finalizes and unloads it). It waits for a call in progress; a second
// Close does nothing.
func (h *HSM) Close() error {
	h.sem <- struct{}{}
	defer func() { <-h.sem }()
	if h.closed {
		return nil
	}
	h.closed = true
	var err error
	h.mod.mu.RLock()
	if h.gen == h.mod.gen {
		if err = h.mod.ctx.CloseSession(h.session); isCode(err, pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT) {
			err = nil // already gone with the token
		}
	}
	h.mod.mu.RUnlock()
	h.mod.release()
	if err != nil {
		return fmt.Errorf("closing the session on %s: %v", h.Describe(), err)
	}
	return nil
}

// Describe names the token and key for messages; never the PIN.
func (h *HSM) Describe() string {
	tok := fmt.Sprintf("token %q", h.cfg.TokenLabel)
	if h.cfg.Slot != nil {
		tok = fmt.Sprintf("slot %d", *h.cfg.Slot)
	}
	return fmt.Sprintf("%s key %q", tok, h.cfg.KeyLabel)
}

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
