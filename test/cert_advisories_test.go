package test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// clientCA is a CA of client certificates as a real one issues them: the
// CA and every leaf carry a subject key id, leaves the CA's as their
// authority key id.
type clientCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newClientCA(t *testing.T) *clientCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "client CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		SubjectKeyId: keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &clientCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf issues a client certificate for cn with serial.
func (ca *clientCA) leaf(t *testing.T, cn string, serial int64) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		SubjectKeyId: keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	if len(leaf.AuthorityKeyId) == 0 || string(leaf.AuthorityKeyId) != string(ca.cert.SubjectKeyId) {
		t.Fatalf("%s: authority key id %x, want the CA's %x", cn, leaf.AuthorityKeyId, ca.cert.SubjectKeyId)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// keyID is RFC 5280's method 1: the SHA-1 of the public key.
func keyID(pub *ecdsa.PublicKey) []byte {
	b, _ := pub.ECDH()
	sum := sha1.Sum(b.Bytes())
	return sum[:]
}

// CVE-2026-39388 (GHSA-7ccv-rp6m-rffr): a cert auth mount trusts a CA;
// alice logs in with her certificate. Mallory, who has alice's token (or
// may renew tokens by accessor) and a certificate of her own from the
// same CA, renews alice's token with it: OpenBao 2.4.0 accepts (200), the
// filter refuses (403) on renew-self, renew and renew-accessor. With
// alice's own certificate the renewals work, a userpass token is renewed
// whatever certificate comes with it, and sys/leases/renew does not renew
// tokens at all in 2.4.0. A token that may renew by accessor but not look
// up is refused while it presents a certificate (the stated limit).
func TestCertRenewalAdvisoryClosed(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	serverCA := harness.NewCA(t)
	t.Setenv("GITLAB_SECRETS_APPLIANCE_CACERT", serverCA.File)
	clients := newClientCA(t)
	clientCAFile := filepath.Join(dir, "client-ca.pem")
	if err := os.WriteFile(clientCAFile, clients.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	cert, key := serverCA.Issue(t, "127.0.0.1", "127.0.0.1")
	listen := harness.FreeAddr(t, "127.0.0.1")
	cfg := filepath.Join(dir, "appliance.hcl")
	src := fmt.Sprintf(`node_id  = "node-1"
data_dir = %q
listener {
  address            = %q
  tls_cert_file      = %q
  tls_key_file       = %q
  tls_client_ca_file = %q
}
`, filepath.Join(dir, "data"), listen, cert, key, clientCAFile)
	if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := "https://" + listen
	harness.StartNode(t, tr, bin, cfg, addr).WaitServing(t, tr)
	res := initCluster(t, bin, addr, "--shares", "3", "--threshold", "2")
	waitState(t, tr, bin, addr, "active")
	root := res.RootToken
	v1 := addr + "/v1/"

	// One client per certificate it presents (none: nil).
	alice, mallory := clients.leaf(t, "alice", 1001), clients.leaf(t, "mallory", 1002)
	as := func(c *tls.Certificate) *http.Client {
		tc := serverCA.ClientTLS()
		if c != nil {
			tc.Certificates = []tls.Certificate{*c}
		}
		return &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: tc}}
	}
	asAlice, asMallory, noCert := as(&alice), as(&mallory), as(nil)
	must := func(hc *http.Client, method, path, token string, body any) string {
		t.Helper()
		code, out := call(t, hc, method, v1+path, token, body)
		if code/100 != 2 {
			t.Fatalf("%s %s: %d %s", method, path, code, out)
		}
		return out
	}
	must(noCert, "POST", "sys/auth/cert", root, map[string]any{"type": "cert"})
	must(noCert, "POST", "auth/cert/certs/staff", root, map[string]any{
		"certificate": string(clients.pem), "token_policies": "default", "token_ttl": "10m", "token_max_ttl": "1h",
	})
	login := func(hc *http.Client) (string, string) {
		t.Helper()
		var out struct {
			Auth struct {
				ClientToken string `json:"client_token"`
				Accessor    string `json:"accessor"`
			} `json:"auth"`
		}
		raw := must(hc, "POST", "auth/cert/login", "", map[string]any{"name": "staff"})
		if json.Unmarshal([]byte(raw), &out) != nil || out.Auth.ClientToken == "" {
			t.Fatalf("cert login: %s", raw)
		}
		return out.Auth.ClientToken, out.Auth.Accessor
	}
	aliceTok, aliceAcc := login(asAlice)
	login(asMallory) // mallory's certificate is one the mount accepts

	refused := func(what string, hc *http.Client, path, token string, body any) {
		t.Helper()
		if code, out := call(t, hc, "PUT", v1+path, token, body); code != http.StatusForbidden || !strings.Contains(out, "CVE-2026-39388") {
			t.Errorf("%s: %d %.300s, want 403 naming CVE-2026-39388", what, code, strings.TrimSpace(out))
		}
	}
	renewed := func(what string, hc *http.Client, path, token string, body any) {
		t.Helper()
		if code, out := call(t, hc, "PUT", v1+path, token, body); code != http.StatusOK {
			t.Errorf("%s: %d %.300s, want 200", what, code, strings.TrimSpace(out))
		}
	}
	refused("alice's token renewed by itself with mallory's certificate", asMallory, "auth/token/renew-self", aliceTok, nil)
	refused("alice's token renewed by root with mallory's certificate", asMallory, "auth/token/renew", root, map[string]any{"token": aliceTok})
	refused("alice's token renewed by accessor with mallory's certificate", asMallory, "auth/token/renew-accessor", root, map[string]any{"accessor": aliceAcc})
	// A form body is read as OpenBao reads it.
	if code, out := callForm(t, asMallory, v1+"auth/token/renew", root, "token="+aliceTok); code != http.StatusForbidden || !strings.Contains(out, "CVE-2026-39388") {
		t.Errorf("renew with a form body and mallory's certificate: %d %.300s, want 403", code, strings.TrimSpace(out))
	}

	renewed("alice's token renewed by itself with her certificate", asAlice, "auth/token/renew-self", aliceTok, nil)
	renewed("alice's token renewed by root with her certificate", asAlice, "auth/token/renew", root, map[string]any{"token": aliceTok})
	renewed("alice's token renewed by accessor with her certificate", asAlice, "auth/token/renew-accessor", root, map[string]any{"accessor": aliceAcc})

	// sys/leases/renew: 2.4.0 renews no token there.
	var leases struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	if out := must(noCert, "LIST", "sys/leases/lookup/auth/cert/login/", root, nil); json.Unmarshal([]byte(out), &leases) != nil || len(leases.Data.Keys) == 0 {
		t.Fatalf("the cert logins' leases: %s", out)
	}
	for _, k := range leases.Data.Keys {
		code, out := call(t, asMallory, "PUT", v1+"sys/leases/renew", root, map[string]any{"lease_id": "auth/cert/login/" + k})
		if code == http.StatusOK || !strings.Contains(out, "tokens cannot be renewed through this endpoint") {
			t.Errorf("sys/leases/renew of a cert login's lease with mallory's certificate: %d %.300s, want 2.4.0's refusal", code, strings.TrimSpace(out))
		}
	}

	// Other tokens: any certificate, or none.
	must(noCert, "POST", "sys/auth/userpass", root, map[string]any{"type": "userpass"})
	must(noCert, "POST", "auth/userpass/users/bob", root, map[string]any{"password": "bob-pw"})
	var bob struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	if out := must(noCert, "POST", "auth/userpass/login/bob", "", map[string]any{"password": "bob-pw"}); json.Unmarshal([]byte(out), &bob) != nil {
		t.Fatal(out)
	}
	renewed("a userpass token renewed with mallory's certificate", asMallory, "auth/token/renew-self", bob.Auth.ClientToken, nil)
	renewed("a userpass token renewed with no certificate", noCert, "auth/token/renew-self", bob.Auth.ClientToken, nil)

	// The stated limit: renew-accessor with a certificate needs
	// lookup-accessor; without a certificate the filter does not look.
	renewer := makeToken(t, noCert, addr, root, "renewer", `path "auth/token/renew-accessor" { capabilities = ["update"] }`)
	if code, out := call(t, asAlice, "PUT", v1+"auth/token/renew-accessor", renewer, map[string]any{"accessor": aliceAcc}); code != http.StatusForbidden || !strings.Contains(out, "lookup-accessor") {
		t.Errorf("renew-accessor by a token that may not look up, with a certificate: %d %.300s, want 403 naming lookup-accessor", code, strings.TrimSpace(out))
	}
	if code, out := call(t, noCert, "PUT", v1+"auth/token/renew-accessor", renewer, map[string]any{"accessor": aliceAcc}); strings.Contains(out, "CVE-2026-39388") {
		t.Errorf("renew-accessor without a certificate: %d %.300s, the filter is not to look", code, strings.TrimSpace(out))
	}
}

// callForm PUTs a form-encoded body.
func callForm(t *testing.T, hc *http.Client, url, token, form string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("PUT", url, strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Vault-Token", token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}
