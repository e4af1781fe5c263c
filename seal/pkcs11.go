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
	"time"

	"github.com/miekg/pkcs11"
)

// HSM is an open, logged-in session on the token with the key found. It is
// safe for concurrent use: calls on the one session are serialized.
//
// Every use honours its context even while the token does not answer: the
// calls into the library run on a goroutine of their own (see hsm_hang.go).
type HSM struct {
	cfg PKCS11Config
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
	refs  int  // open HSM handles and calls left running; guarded by the table's lock
	owned bool // we called C_Initialize (false: someone else in the process had, so we never finalize it)

	// mu guards the fields below. It is never held across a call into the
	// library: calls hold the library shared (users > 0) and a
	// re-initialization holds it exclusively (reinit), and waiting for
	// either honours the waiter's context.
	mu      sync.Mutex
	users   int
	reinit  bool
	running map[*call]struct{} // calls into the library that have not returned
	changed chan struct{}      // closed when users, reinit or running change
	// gen counts the re-initializations, so that a handle notices its
	// session went with the old one and opens a new one; written with the
	// library held exclusively, read with it held.
	gen    uint64
	broken bool // the last re-initialization failed (same rule as gen)
}

// call is one run of calls into the library on a goroutine of its own.
type call struct {
	token, what string
	since       time.Time
	finished    bool // it returned
	gaveUp      bool // its caller stopped waiting before it returned
}

// modules is the table of loaded libraries. lock is a one-slot semaphore,
// so that waiting for it can end with a context.
var modules = struct {
	lock   chan struct{}
	byPath map[string]*module
}{lock: make(chan struct{}, 1), byPath: map[string]*module{}}

// loadModule returns the module for the library at path, loading and
// initializing it if no handle has it open. shared reports that it was
// already open.
func loadModule(ctx context.Context, path string) (m *module, shared bool, err error) {
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

	select {
	case modules.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, false, fmt.Errorf("waiting to load %s: %w", path, ctx.Err())
	}
	defer func() { <-modules.lock }()
	if m := modules.byPath[canon]; m != nil {
		m.refs++
		return m, true, nil
	}
	ctx11 := pkcs11.New(canon)
	if ctx11 == nil {
		return nil, false, fmt.Errorf("%w: %s is not a loadable PKCS#11 module", ErrHSMLibrary, path)
	}
	owned := true
	if err := ctx11.Initialize(); err != nil {
		if !isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			ctx11.Destroy()
			return nil, false, fmt.Errorf("%w: %s: C_Initialize: %v", ErrHSMLibrary, path, err)
		}
		owned = false // another part of this process (e.g. OpenBao's own pkcs11 seal) initialized it
	}
	m = &module{path: canon, ctx: ctx11, refs: 1, owned: owned, running: map[*call]struct{}{}}
	modules.byPath[canon] = m
	return m, false, nil
}

// release drops one reference; the last one finalizes and unloads the
// library. Only ever called once no call of that reference is running.
func (m *module) release() {
	modules.lock <- struct{}{}
	defer func() { <-modules.lock }()
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

// notify wakes everyone waiting on m.changed; the caller holds m.mu.
func (m *module) notify() {
	if m.changed != nil {
		close(m.changed)
		m.changed = nil
	}
}

// changedCh is closed at the next change; the caller holds m.mu.
func (m *module) changedCh() <-chan struct{} {
	if m.changed == nil {
		m.changed = make(chan struct{})
	}
	return m.changed
}

// hung returns the oldest call that was given up on and has not returned,
// and the oldest call running at all; the caller holds m.mu.
func (m *module) hung() (gaveUp, oldest *call) {
	for c := range m.running {
		if c.gaveUp && (gaveUp == nil || c.since.Before(gaveUp.since)) {
			gaveUp = c
		}
		if oldest == nil || c.since.Before(oldest.since) {
			oldest = c
		}
	}
	return gaveUp, oldest
}

func (c *call) busy() error {
	return &HungError{Token: c.token, What: c.what, Since: c.since, Busy: true}
}

// waited is the error of a caller whose context ended while c kept it
// waiting since start.
func (c *call) waited(ctx context.Context, start time.Time) error {
	return &HungError{Token: c.token, What: c.what, Since: c.since, Waited: time.Since(start), Err: ctx.Err()}
}

// enter holds the library shared (for calls on a session) or exclusively
// (to re-initialize it), waiting until ctx ends. A library with a call
// that was given up on is refused at once.
func (m *module) enter(ctx context.Context, exclusive bool) error {
	start := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		gaveUp, oldest := m.hung()
		if gaveUp != nil {
			return gaveUp.busy()
		}
		if !m.reinit && (!exclusive || m.users == 0) {
			if exclusive {
				m.reinit = true
			} else {
				m.users++
			}
			return nil
		}
		ch := m.changedCh()
		m.mu.Unlock()
		select {
		case <-ch:
			m.mu.Lock()
		case <-ctx.Done():
			m.mu.Lock()
			if oldest != nil {
				return oldest.waited(ctx, start)
			}
			return fmt.Errorf("waiting for the PKCS#11 library %s: %w", m.path, ctx.Err())
		}
	}
}

// exit undoes enter.
func (m *module) exit(exclusive bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if exclusive {
		m.reinit = false
	} else {
		m.users--
	}
	m.notify()
}

// run runs f, which calls into the library, on a goroutine of its own and
// waits for it until ctx ends. after runs on that goroutine once f has
// returned, whether or not the caller still waits (gaveUp says), and
// must release what the caller held for f. If ctx ends first, run returns
// a *HungError with gaveUp true: f's goroutine is left to finish on its
// own, and until it does every new use of the library is refused.
func (m *module) run(ctx context.Context, token, what string, f func() error, after func(err error, gaveUp bool)) (gaveUp bool, err error) {
	c := &call{token: token, what: what, since: time.Now()}
	m.mu.Lock()
	m.running[c] = struct{}{}
	m.mu.Unlock()
	res := make(chan error, 1)
	go func() {
		err := f()
		m.mu.Lock()
		c.finished = true
		gaveUp := c.gaveUp
		delete(m.running, c)
		m.notify()
		m.mu.Unlock()
		after(err, gaveUp)
		res <- err
	}()
	select {
	case err := <-res:
		return false, err
	case <-ctx.Done():
	}
	m.mu.Lock()
	if c.finished {
		m.mu.Unlock()
		return false, <-res
	}
	c.gaveUp = true
	m.notify()
	m.mu.Unlock()
	return true, c.waited(ctx, c.since)
}

// reinitialize finalizes and initializes the library again. Modules such
// as SoftHSM list their tokens only in C_Initialize, so a token that came
// back after being removed is invisible until then. Every session on the
// module ends; the other handles open new ones on their next call. The
// caller holds a reference; if it gives up (gaveUp), the reference goes
// with the call, which releases it when it returns.
func (m *module) reinitialize(ctx context.Context) (gaveUp bool, err error) {
	if err := m.enter(ctx, true); err != nil {
		return false, err
	}
	return m.run(ctx, "the PKCS#11 library "+m.path, "a re-initialization", func() error {
		m.gen++
		m.ctx.Finalize()
		err := m.ctx.Initialize()
		m.broken = err != nil && !isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)
		if m.broken {
			return fmt.Errorf("%w: %s: C_Initialize: %v", ErrHSMUnavailable, m.path, err)
		}
		return nil
	}, func(_ error, gaveUp bool) {
		m.exit(true)
		if gaveUp {
			m.release()
		}
	})
}

// OpenHSM loads the library, finds the token, logs in and finds the key.
// It returns when ctx ends even if the token does not answer.
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
	mod, shared, err := loadModule(ctx, cfg.Library)
	if err != nil {
		return nil, err
	}
	h := &HSM{cfg: cfg, mod: mod, sem: make(chan struct{}, 1)}
	broken, gaveUp, err := h.openSession(ctx)
	if !gaveUp && (errors.Is(err, ErrHSMToken) || broken) && shared && mod.owned {
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
// ErrHSMUnwrap; a token that does not answer is ErrHSMUnavailable.
func (h *HSM) Unwrap(ctx context.Context, blob []byte) ([]byte, error) {
	return h.unwrap(ctx, "an unwrap", blob)
}

func (h *HSM) unwrap(ctx context.Context, what string, blob []byte) ([]byte, error) {
	if len(blob) < 1+gcmIVSize+gcmTagBits/8 {
		return nil, fmt.Errorf("%w: the wrapped key is %d bytes, too short", ErrHSMUnwrap, len(blob))
	}
	if blob[0] != wrapVersion {
		return nil, fmt.Errorf("%w: the wrapped key has format version %d; this version reads %d", ErrHSMUnwrap, blob[0], wrapVersion)
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
		return fmt.Errorf("%w (%s: %v)", ErrHSMUnwrap, h.Describe(), err)
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
		return fmt.Errorf("%w: the session on %s is closed", ErrHSMUnavailable, h.Describe())
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
				return fmt.Errorf("%w: opening a new session after the library was re-initialized: %w", ErrHSMUnavailable, err)
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
	w, err := h.wrap(ctx, "a probe", probe)
	if err != nil {
		return err
	}
	back, err := h.unwrap(ctx, "a probe", w)
	if err != nil {
		return err
	}
	if string(back) != string(probe) {
		return fmt.Errorf("%w: %s returned a wrong probe", ErrHSMUnavailable, h.Describe())
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
func (h *HSM) Describe() string { return describe(h.cfg) }

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
