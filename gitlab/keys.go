package gitlab

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/go-jose/go-jose/v4"
)

// KeysPath is where the appliance serves a PEM keys file as a JWKS: the
// path of GitLab's own key set.
const KeysPath = "/oauth/discovery/keys"

// ParsePublicKeys reads the PEM public keys (or certificates, whose public
// key counts) in pemBytes. A private key is refused: it never belongs in
// the appliance's config.
func ParsePublicKeys(pemBytes []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for rest := pemBytes; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var (
			k   any
			err error
		)
		switch block.Type {
		case "PUBLIC KEY":
			k, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			k, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(block.Bytes); err == nil {
				k = c.PublicKey
			}
		default:
			return nil, fmt.Errorf("a %q block: only public keys belong here, never a private key", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("a %q block: %w", block.Type, err)
		}
		if _, err := algorithm(k); err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM public key in it")
	}
	return keys, nil
}

// KeySet is the JWKS of keys, each with GitLab's key ID: the RFC 7638
// SHA-256 thumbprint, base64url without padding (GitLab signs with
// kid = public_key.to_jwk[:kid], which the json-jwt gem computes so).
func KeySet(keys []crypto.PublicKey) (jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	for _, k := range keys {
		alg, err := algorithm(k)
		if err != nil {
			return set, err
		}
		jwk := jose.JSONWebKey{Key: k, Algorithm: alg, Use: "sig"}
		tp, err := jwk.Thumbprint(crypto.SHA256)
		if err != nil {
			return set, fmt.Errorf("key thumbprint: %w", err)
		}
		jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
		set.Keys = append(set.Keys, jwk)
	}
	return set, nil
}

func algorithm(k any) (string, error) {
	switch k := k.(type) {
	case *rsa.PublicKey:
		return "RS256", nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "ES256", nil
		case elliptic.P384():
			return "ES384", nil
		case elliptic.P521():
			return "ES512", nil
		}
	case ed25519.PublicKey:
		return "EdDSA", nil
	}
	return "", fmt.Errorf("a %T key: only RSA, ECDSA (P-256, P-384, P-521) and Ed25519 keys sign GitLab tokens", k)
}

// KeysHandler serves the PEM file as a JWKS, reading it at every request:
// replace the file and the next fetch has the new keys. OpenBao's JWT auth
// fetches the set again whenever a token names a key it has not seen, so
// a rotated GitLab key works without a restart or an API call. A file
// that does not parse answers 503 and logs why (keys are public: nothing
// secret is in the answer or the log).
func KeysHandler(file string, logf func(msg string, args ...any)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != KeysPath || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			http.NotFound(w, r)
			return
		}
		set, err := readKeySet(file)
		if err != nil {
			logf("cannot serve GitLab's public keys", "file", file, "error", err)
			http.Error(w, "GitLab's public keys file cannot be read", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(set)
	})
}

func readKeySet(file string) (jose.JSONWebKeySet, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return jose.JSONWebKeySet{}, err
	}
	keys, err := ParsePublicKeys(b)
	if err != nil {
		return jose.JSONWebKeySet{}, err
	}
	return KeySet(keys)
}
