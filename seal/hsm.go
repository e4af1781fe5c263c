package seal

import "errors"

// Errors of the HSM. Each message says what to check; none carries the
// PIN. Callers match them with errors.Is; details are wrapped around them.
var (
	ErrHSMLibrary     = errors.New("the PKCS#11 library cannot be loaded: check seal.pkcs11.library")
	ErrHSMToken       = errors.New("the HSM token was not found: check seal.pkcs11.token_label (or slot) and that the token is present")
	ErrHSMPIN         = errors.New("the HSM refused the PIN: check the PIN in seal.pkcs11.pin_file (or pin_env)")
	ErrHSMKey         = errors.New("the HSM key is not usable: check seal.pkcs11.key_label names one AES-256 secret key allowed to encrypt and decrypt")
	ErrHSMUnwrap      = errors.New("the HSM could not unwrap the seal key: it was wrapped with another key, or the stored copy is damaged")
	ErrHSMUnavailable = errors.New("the HSM is unavailable")
)

// PKCS11Config says where the KEK-wrapping key lives. The PIN is resolved
// by the caller (from a file or the environment).
type PKCS11Config struct {
	Library    string // path of the PKCS#11 module (.so)
	TokenLabel string // token to use, by label; or
	Slot       *uint  // slot id (exactly one of TokenLabel and Slot)
	PIN        string // user PIN; never logged, never in an error
	KeyLabel   string // CKA_LABEL of an AES-256 secret key on the token
}
