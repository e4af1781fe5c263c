package config

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/fips"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/testpki"
)

// writeRSACert writes a self-signed RSA certificate of bits and its key.
func writeRSACert(t *testing.T, dir string, bits int) (certFile, keyFile string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "rsa test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, fmt.Sprintf("rsa%d.pem", bits)), filepath.Join(dir, fmt.Sprintf("rsa%d.key", bits))
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	return certFile, keyFile
}

// fipsProblems parses src and validates it as a FIPS build (fipsMode) or a
// normal one would.
func fipsProblems(t *testing.T, src string, fipsMode bool) []Problem {
	t.Helper()
	c, problems := decode([]byte(src), "appliance.hcl")
	if c == nil || len(problems) > 0 {
		t.Fatalf("does not decode: %v", problems)
	}
	c.applyDefaults()
	v := &validator{fips: fipsMode}
	c.validate(v)
	return v.problems
}

func listenerConfig(dir, listener string) string {
	return fmt.Sprintf("node_id = \"n\"\ndata_dir = %q\nlistener {\n%s\n}\n", filepath.Join(dir, "data"), listener)
}

// A TLS minimum below 1.2 is refused by both builds, by a FIPS build with
// one message that says why it is refused there.
func TestFIPSRefusesTLSBelow12(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		version string
		normal  string // the normal build's message, "" for none
		fips    string // the FIPS build's
	}{
		{"tls10", `"tls10" is not supported; use one of [tls12 tls13]`, `"tls10": TLS 1.0 is not allowed in FIPS 140-3 mode: TLS 1.2 and 1.3 only`},
		{"tls11", `"tls11" is not supported`, `"tls11": TLS 1.1 is not allowed in FIPS 140-3 mode`},
		{"tls12", "", ""},
		{"tls13", "", ""},
	} {
		src := listenerConfig(dir, fmt.Sprintf("address = \"127.0.0.1:8200\"\ntls_disable = true\ntls_min_version = %q", tc.version))
		for _, mode := range []struct {
			fips bool
			want string
		}{{false, tc.normal}, {true, tc.fips}} {
			problems := fipsProblems(t, src, mode.fips)
			if mode.want == "" {
				if len(problems) > 0 {
					t.Errorf("%s, FIPS %v: %v", tc.version, mode.fips, problems)
				}
				continue
			}
			if len(problems) != 1 || problems[0].Key != "listener[0].tls_min_version" || !strings.Contains(problems[0].Message, mode.want) {
				t.Errorf("%s, FIPS %v: %v, want one problem listener[0].tls_min_version: %q", tc.version, mode.fips, problems, mode.want)
			}
			if mode.fips && !strings.Contains(problems[0].Message, `this is a FIPS 140-3 build: use "tls12" or "tls13"`) {
				t.Errorf("%s: %q does not say what to use", tc.version, problems[0].Message)
			}
		}
	}
}

// A certificate Go's TLS refuses in FIPS mode (RSA 1024) is refused by a
// FIPS build by its key, for the listener's certificate and for CA files;
// the normal build and approved keys (RSA 2048, ECDSA P-256) pass.
func TestFIPSRefusesWeakCertificates(t *testing.T) {
	dir := t.TempDir()
	weak, weakKey := writeRSACert(t, dir, 1024)
	good, goodKey := writeRSACert(t, dir, 2048)
	ec, ecKey := testpki.WriteCert(t, dir)
	listener := func(cert, key, ca string) string {
		return fmt.Sprintf("address = \"127.0.0.1:8200\"\ntls_cert_file = %q\ntls_key_file = %q\ntls_client_ca_file = %q", cert, key, ca)
	}
	for _, tc := range []struct {
		name, src string
		want      []string // keys refused in FIPS mode
	}{
		{"RSA 1024 certificate", listenerConfig(dir, listener(weak, weakKey, good)), []string{"listener[0].tls_cert_file"}},
		{"RSA 1024 client CA", listenerConfig(dir, listener(ec, ecKey, weak)), []string{"listener[0].tls_client_ca_file"}},
		{"RSA 1024 leader CA", listenerConfig(dir, listener(good, goodKey, ec)) +
			fmt.Sprintf("raft {\n retry_join {\n leader_api_addr = \"https://127.0.0.2:8200\"\n leader_ca_cert_file = %q\n}\n}\n", weak),
			[]string{"raft.retry_join[0].leader_ca_cert_file"}},
		{"approved keys", listenerConfig(dir, listener(good, goodKey, ec)), nil},
	} {
		if p := fipsProblems(t, tc.src, false); len(p) > 0 {
			t.Errorf("%s: the normal build refuses it: %v", tc.name, p)
		}
		problems := fipsProblems(t, tc.src, true)
		var keys []string
		for _, p := range problems {
			keys = append(keys, p.Key)
			if !strings.Contains(p.Message, "has a 1024-bit RSA key; FIPS 140-3 mode needs RSA of 2048 bits or more") {
				t.Errorf("%s: %s: %q does not say why", tc.name, p.Key, p.Message)
			}
		}
		if fmt.Sprint(keys) != fmt.Sprint(tc.want) {
			t.Errorf("%s: FIPS build refuses %v, want %v: %v", tc.name, keys, tc.want, problems)
		}
	}
}

// fipsChildEnv marks the run of this test binary, under
// GODEBUG=fips140=on, that TestFIPSModeRefuses starts.
const fipsChildEnv = "GSA_APPLIANCE_FIPS_CHILD"

// Under real FIPS 140-3 mode (this test binary run again with
// GODEBUG=fips140=on), Load refuses tls10 by its key. (Init and seal
// changes refusing PGP keys: appliance's TestFIPSModeRefusesPGP.)
func TestFIPSModeRefuses(t *testing.T) {
	if os.Getenv(fipsChildEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFIPSModeRefuses$", "-test.v")
		cmd.Env = append(os.Environ(), fipsChildEnv+"=1", "GODEBUG=fips140=on")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestFIPSModeRefuses") {
			t.Fatalf("under GODEBUG=fips140=on: %v\n%s", err, out)
		}
		return
	}
	if !fips.Enabled() {
		t.Fatal("GODEBUG=fips140=on did not enable FIPS 140-3 mode")
	}
	dir := t.TempDir()
	_, err := Parse([]byte(listenerConfig(dir, "address = \"127.0.0.1:8200\"\ntls_disable = true\ntls_min_version = \"tls10\"")), "appliance.hcl")
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0].Key != "listener[0].tls_min_version" || !strings.Contains(ce.Problems[0].Message, "not allowed in FIPS 140-3 mode") {
		t.Fatalf("tls10 in FIPS mode: %v", err)
	}

}
