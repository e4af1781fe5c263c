package filter

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
)

// Rows for the builtin plugins the appliance ships (internal/bao/plugins.go). Each
// looks at one path shape inside a mount, whatever the mount's type: a
// write elsewhere that happens to have that shape and those fields (a KV
// v1 secret at keys/<name> with type rsa-2048 and derived true) is refused
// too, which costs nobody anything real.

// checkTransitDerivedRSA closes GHSA-8w8f-r2xv-4q4j: OpenBao 2.4.0
// creates a Transit RSA key with derived=true (key derivation is for AES,
// ChaCha20 and Ed25519 keys), which its operations then cannot handle.
// Later releases refuse it; so does this row: <mount>/keys/<name> with an
// rsa-* type and derived true.
func checkTransitDerivedRSA(_ *requestFilter, r *http.Request) (int, error) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		return 0, nil
	}
	if p := strings.Trim(r.URL.Path, "/"); strings.Count(p, "/") < 3 || parentSegment(p) != "keys" {
		return 0, nil // not /v1/<mount>/keys/<name>
	}
	typ, err := bodyString(r, "type")
	if err != nil || !strings.HasPrefix(typ, "rsa-") {
		return 0, nil
	}
	raw, form, _ := bodyField(r, "derived")
	derived := isTrue(form)
	if raw != nil {
		var b bool
		var s string
		switch {
		case json.Unmarshal(raw, &b) == nil:
			derived = b
		case json.Unmarshal(raw, &s) == nil:
			derived = isTrue(s)
		}
	}
	if derived {
		return http.StatusBadRequest, errors.New("key derivation is not supported for RSA keys (GHSA-8w8f-r2xv-4q4j): create the key without derived")
	}
	return 0, nil
}

// isTrue reads a boolean as OpenBao's TypeBool does from a string.
func isTrue(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "t", "true":
		return true
	}
	return false
}

// checkOIDCDirectCallback closes GHSA-7q7g-x6vg-xpc3 and
// GHSA-cpj3-3r2f-xj59 (OpenBao 2.5.2) for the jwt/oidc auth method:
//
//   - a role with callback_mode "direct" lets an attacker start a login,
//     have a victim open the provider's URL, and poll for the victim's
//     token (2.4.0 asks no confirmation): role writes with it are refused
//     (auth/<mount>/role/<name>; "client", the default, and "device" stay);
//   - the direct callback (auth/<mount>/oidc/callback) puts the provider's
//     error_description into its HTML page unescaped: a callback carrying
//     one is refused, and the login fails as it would have.
func checkOIDCDirectCallback(_ *requestFilter, r *http.Request) (int, error) {
	p := strings.Trim(r.URL.Path, "/")
	if strings.HasSuffix(p, "/oidc/callback") && strings.Contains(p, "auth/") {
		if r.URL.Query().Has("error_description") || r.URL.Query().Has("error") {
			return http.StatusBadRequest, errors.New("the identity provider refused the login (see its logs); the error it sent is not shown (GHSA-cpj3-3r2f-xj59)")
		}
		return 0, nil
	}
	if r.Method != http.MethodPost && r.Method != http.MethodPut || strings.Count(p, "/") < 4 || parentSegment(p) != "role" || !strings.Contains(p, "auth/") {
		return 0, nil // not /v1/auth/<mount>/role/<name>
	}
	if mode, _ := bodyString(r, "callback_mode"); strings.EqualFold(strings.TrimSpace(mode), "direct") {
		return http.StatusBadRequest, errors.New(`callback_mode "direct" is not served (GHSA-7q7g-x6vg-xpc3): use "client" (the default) or "device"`)
	}
	return 0, nil
}

// parentSegment is the segment before the last one of p (no allocation).
func parentSegment(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return ""
	}
	return p[strings.LastIndexByte(p[:i], '/')+1 : i]
}
