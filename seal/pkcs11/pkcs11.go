// Package pkcs11 is this node's access to its PKCS#11 token: the module
// (one C_Initialize per library per process, shared by every handle), a
// logged-in session with the key found (HSM), AES-GCM wrap and unwrap of
// the seal's key with it, and the guard that keeps a token that stops
// answering from hanging its callers (hang.go). When to use the token,
// and what to do when it fails, is the seal's (package seal).
//
// A build without cgo has no PKCS#11 support: Open fails with ErrLibrary.
package pkcs11

import (
	"errors"
	"fmt"
)

// Errors of the HSM. Each message says what to check; none carries the
// PIN. Callers match them with errors.Is; details are wrapped around them.
var (
	ErrLibrary     = errors.New("the PKCS#11 library cannot be loaded: check seal.pkcs11.library")
	ErrToken       = errors.New("the HSM token was not found: check seal.pkcs11.token_label (or slot) and that the token is present")
	ErrPIN         = errors.New("the HSM refused the PIN: check the PIN in seal.pkcs11.pin_file (or pin_env)")
	ErrKey         = errors.New("the HSM key is not usable: check seal.pkcs11.key_label names one AES-256 secret key allowed to encrypt and decrypt")
	ErrUnwrap      = errors.New("the HSM could not unwrap the seal key: it was wrapped with another key, or the stored copy is damaged")
	ErrUnavailable = errors.New("the HSM is unavailable")
)

// Config says where the KEK-wrapping key lives. The PIN is resolved
// by the caller (from a file or the environment).
type Config struct {
	Library    string // path of the PKCS#11 module (.so)
	TokenLabel string // token to use, by label; or
	Slot       *uint  // slot id (exactly one of TokenLabel and Slot)
	PIN        string // user PIN; never logged, never in an error
	KeyLabel   string // CKA_LABEL of an AES-256 secret key on the token
}

// Describe names the token and key of cfg for messages; never the PIN.
func (cfg Config) Describe() string {
	tok := fmt.Sprintf("token %q", cfg.TokenLabel)
	if cfg.Slot != nil {
		tok = fmt.Sprintf("slot %d", *cfg.Slot)
	}
	return fmt.Sprintf("%s key %q", tok, cfg.KeyLabel)
}
