package gitlab

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func pemOf(t *testing.T, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// The kid is RFC 7638's thumbprint, computed here by hand from the
// required members in lexicographic order, as json-jwt does for GitLab.
func TestKeySetKIDIsTheRFC7638Thumbprint(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keys, err := ParsePublicKeys([]byte(pemOf(t, &rk.PublicKey) + pemOf(t, &ek.PublicKey)))
	if err != nil {
		t.Fatal(err)
	}
	set, err := KeySet(keys)
	if err != nil {
		t.Fatal(err)
	}
	e := big.NewInt(int64(rk.PublicKey.E)).Bytes()
	rsaJSON := fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`, b64(e), b64(rk.PublicKey.N.Bytes()))
	ecBytes, _ := ek.PublicKey.Bytes() // 0x04 || X || Y
	ecJSON := fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}`, b64(ecBytes[1:33]), b64(ecBytes[33:]))
	for i, want := range []struct{ canonical, alg string }{{rsaJSON, "RS256"}, {ecJSON, "ES256"}} {
		sum := sha256.Sum256([]byte(want.canonical))
		if k := set.Keys[i]; k.KeyID != b64(sum[:]) || k.Algorithm != want.alg || k.Use != "sig" {
			t.Errorf("key %d: kid %s alg %s use %s; want kid %s alg %s", i, k.KeyID, k.Algorithm, k.Use, b64(sum[:]), want.alg)
		}
	}
}

func TestParsePublicKeysRefuses(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	priv := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}))
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	for name, tc := range map[string]struct{ src, want string }{
		"private key":   {priv, "never a private key"},
		"nothing":       {"hello", "no PEM public key"},
		"bad der":       {string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("x")})), `a "PUBLIC KEY" block`},
		"private among": {pemOf(t, &rk.PublicKey) + priv, "never a private key"},
	} {
		if _, err := ParsePublicKeys([]byte(tc.src)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ...%s...", name, err, tc.want)
		}
	}
	if keys, err := ParsePublicKeys([]byte(pemOf(t, edPriv.Public()))); err != nil || len(keys) != 1 {
		t.Errorf("ed25519: %v", err)
	}
}

// The handler reads the file at every request: a replaced file is served
// at once; a broken one answers 503 without content.
func TestKeysHandlerServesTheFileAsItIsNow(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys.pem")
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	k2, _ := rsa.GenerateKey(rand.Reader, 2048)
	var logged []string
	srv := httptest.NewServer(KeysHandler(file, func(msg string, _ ...any) { logged = append(logged, msg) }))
	defer srv.Close()
	get := func(path string) (int, []string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var set struct {
			Keys []struct {
				KID string `json:"kid"`
			} `json:"keys"`
		}
		json.NewDecoder(resp.Body).Decode(&set)
		var kids []string
		for _, k := range set.Keys {
			kids = append(kids, k.KID)
		}
		return resp.StatusCode, kids
	}
	os.WriteFile(file, []byte(pemOf(t, &k1.PublicKey)), 0o644)
	code, first := get(KeysPath)
	if code != 200 || len(first) != 1 {
		t.Fatalf("first: %d %v", code, first)
	}
	os.WriteFile(file, []byte(pemOf(t, &k1.PublicKey)+pemOf(t, &k2.PublicKey)), 0o644)
	if code, kids := get(KeysPath); code != 200 || len(kids) != 2 || kids[0] != first[0] || kids[1] == first[0] {
		t.Fatalf("after adding a key: %d %v", code, kids)
	}
	os.WriteFile(file, []byte("garbage"), 0o644)
	if code, _ := get(KeysPath); code != http.StatusServiceUnavailable || len(logged) != 1 {
		t.Fatalf("broken file: %d, logged %v", code, logged)
	}
	if code, _ := get("/other"); code != http.StatusNotFound {
		t.Fatalf("other path: %d", code)
	}
}
