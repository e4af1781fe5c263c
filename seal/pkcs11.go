//go:build cgo

package seal

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// HSM is an open, logged-in session on the token with the key found. It is
// safe for concurrent use: calls on the one session are serialized.
type HSM struct {
	cfg     PKCS11Config
	mod     *module
	mu      sync.Mutex
	session pkcs11.SessionHandle
	key     pkcs11.ObjectHandle
	closed  bool
}

// module is one loaded, initialized PKCS#11 library. A module may be
// initialized only once per process (C_Initialize), so HSM handles on the
// same library share it; modules is the one process-wide table this
// package keeps, for that reason.
type module struct {
	path string
	ctx  *pkcs11.Ctx
	refs int
}

var (
	modulesMu sync.Mutex
	modules   = map[string]*module{}
)

func loadModule(path string) (*module, error) {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if m := modules[path]; m != nil {
		m.refs++
		return m, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrHSMLibrary, path, unwrapPath(err))
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("%w: %s is not a loadable PKCS#11 module", ErrHSMLibrary, path)
	}
	if err := ctx.Initialize(); err != nil && !isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ctx.Destroy()
		return nil, fmt.Errorf("%w: %s: C_Initialize: %v", ErrHSMLibrary, path, err)
	}
	m := &module{path: path, ctx: ctx, refs: 1}
	modules[path] = m
	return m, nil
}

func (m *module) release() {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(modules, m.path)
	m.ctx.Finalize()
	m.ctx.Destroy()
}

// OpenHSM loads the library, finds the token, logs in and finds the key.
func OpenHSM(ctx context.Context, cfg PKCS11Config) (*HSM, error) {
	if cfg.KeyLabel == "" {
		return nil, fmt.Errorf("%w: no key label given", ErrHSMKey)
	}
	mod, err := loadModule(cfg.Library)
	if err != nil {
		return nil, err
	}
	h := &HSM{cfg: cfg, mod: mod}
	if err := h.open(); err != nil {
		mod.release()
		return nil, err
	}
	return h, nil
}

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
	if err := p.Login(s, pkcs11.CKU_USER, h.cfg.PIN); err != nil && !isCode(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
		p.CloseSession(s)
		if isCode(err, pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_LEN_RANGE, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_EXPIRED) {
			return fmt.Errorf("%w (%s: %v)", ErrHSMPIN, h.Describe(), err)
		}
		return fmt.Errorf("%w: logging in to %s: %v", ErrHSMUnavailable, h.Describe(), err)
	}
	key, err := h.findKey(s)
	if err != nil {
		// No C_Logout here nor in Close: it would log out every other
		// session of this process on the token. Closing the last session
		// logs out.
		p.CloseSession(s)
		return err
	}
	h.session, h.key = s, key
	return nil
}

func (h *HSM) findSlot() (uint, error) {
	p := h.mod.ctx
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("%w: listing slots: %v", ErrHSMUnavailable, err)
	}
	if h.cfg.Slot != nil {
		if slices.Contains(slots, *h.cfg.Slot) {
			return *h.cfg.Slot, nil
		}
		return 0, fmt.Errorf("%w: no token in slot %d (slots with tokens: %v)", ErrHSMToken, *h.cfg.Slot, slots)
	}
	var labels []string
	for _, s := range slots {
		info, err := p.GetTokenInfo(s)
		if err != nil {
			continue
		}
		label := strings.TrimRight(info.Label, " \x00")
		if label == h.cfg.TokenLabel {
			return s, nil
		}
		labels = append(labels, fmt.Sprintf("%q", label))
	}
	have := "none"
	if len(labels) > 0 {
		have = strings.Join(labels, ", ")
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
	})
	if err != nil || len(attrs) != 2 {
		return 0, fmt.Errorf("%w: reading the attributes of key %q: %v", ErrHSMKey, h.cfg.KeyLabel, err)
	}
	if kt := bytesToUint(attrs[0].Value); kt != pkcs11.CKK_AES {
		return 0, fmt.Errorf("%w: key %q is not an AES key", ErrHSMKey, h.cfg.KeyLabel)
	}
	if n := bytesToUint(attrs[1].Value); n != 32 {
		return 0, fmt.Errorf("%w: key %q is AES-%d, not AES-256", ErrHSMKey, h.cfg.KeyLabel, n*8)
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
	ct, err := h.gcm(true, iv, plaintext)
	if err != nil {
		return nil, err
	}
	return append(append([]byte{wrapVersion}, iv...), ct...), nil
}

// Unwrap undoes Wrap.
func (h *HSM) Unwrap(ctx context.Context, blob []byte) ([]byte, error) {
	if len(blob) < 1+gcmIVSize+gcmTagBits/8 || blob[0] != wrapVersion {
		return nil, fmt.Errorf("%w: the wrapped key is malformed", ErrHSMUnwrap)
	}
	return h.gcm(false, blob[1:1+gcmIVSize], blob[1+gcmIVSize:])
}

func (h *HSM) gcm(encrypt bool, iv, in []byte) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, fmt.Errorf("%w: the session is closed", ErrHSMUnavailable)
	}
	p := h.mod.ctx
	params := pkcs11.NewGCMParams(iv, nil, gcmTagBits)
	defer params.Free()
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}
	var out []byte
	var err error
	if encrypt {
		if err = p.EncryptInit(h.session, mech, h.key); err == nil {
			out, err = p.Encrypt(h.session, in)
		}
	} else {
		if err = p.DecryptInit(h.session, mech, h.key); err == nil {
			out, err = p.Decrypt(h.session, in)
		}
	}
	if err == nil {
		return out, nil
	}
	if !encrypt && isCode(err, pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE, pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_FUNCTION_FAILED) {
		return nil, fmt.Errorf("%w (%s: %v)", ErrHSMUnwrap, h.Describe(), err)
	}
	if isCode(err, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11.CKR_KEY_TYPE_INCONSISTENT, pkcs11.CKR_MECHANISM_INVALID) {
		return nil, fmt.Errorf("%w (%s: %v)", ErrHSMKey, h.Describe(), err)
	}
	return nil, fmt.Errorf("%w: %s: %v", ErrHSMUnavailable, h.Describe(), err)
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

// Close closes the session and releases the library.
func (h *HSM) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	err := h.mod.ctx.CloseSession(h.session)
	h.mod.release()
	return err
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
