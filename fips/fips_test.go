package fips

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"testing"
)

func TestSelfCheckRules(t *testing.T) {
	built := "v1.0.0-c2097c7c"
	cases := []struct {
		name    string
		info    Info
		godebug string
		want    error
		say     []string
	}{
		{"normal build, FIPS off", Info{Mode: ModeOff, Module: "latest"}, "", nil, nil},
		{"normal build, fips140=on", Info{Enabled: true, Mode: ModeOn, Module: "latest"}, "fips140=on", nil, nil},
		{"FIPS build, default on", Info{Enabled: true, Mode: ModeOn, Module: "v1.0.0", Build: built}, "", nil, nil},
		{"FIPS build, fips140=off", Info{Mode: ModeOff, Module: "v1.0.0", Build: built}, "fips140=off", ErrModeOff,
			[]string{"GOFIPS140=" + built, `GODEBUG="fips140=off"`, "remove fips140=off from GODEBUG"}},
		{"FIPS build, only", Info{Enabled: true, Mode: ModeOnly, Module: "v1.0.0", Build: built}, "fips140=only", ErrModeOnly,
			[]string{"GODEBUG=fips140=only", "crypto/cipher.NewGCM", "use fips140=on"}},
		{"normal build, only", Info{Enabled: true, Mode: ModeOnly, Module: "latest"}, "x=1,fips140=only", ErrModeOnly, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.info.check(tc.godebug)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("check = %v, want %v", err, tc.want)
			}
			for _, s := range tc.say {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message %q does not say %q", err, s)
				}
			}
		})
	}
}

func TestCheckPGP(t *testing.T) {
	if err := checkPGP(false, "pgp_keys", []string{"k"}); err != nil {
		t.Fatalf("FIPS off: %v", err)
	}
	if err := checkPGP(true, "pgp_keys", nil); err != nil {
		t.Fatalf("FIPS on, no keys: %v", err)
	}
	err := checkPGP(true, "recovery_pgp_keys", []string{"k"})
	if !errors.Is(err, ErrPGP) || !strings.HasPrefix(err.Error(), "recovery_pgp_keys: ") || !strings.Contains(err.Error(), "PKCS#1 v1.5") {
		t.Fatalf("FIPS on, keys: %v", err)
	}
}

func TestBuildSetting(t *testing.T) {
	for _, tc := range []struct {
		settings []debug.BuildSetting
		want     string
	}{
		{nil, ""},
		{[]debug.BuildSetting{{Key: "GOOS", Value: "linux"}}, ""},
		{[]debug.BuildSetting{{Key: "GOFIPS140", Value: "off"}}, ""},
		{[]debug.BuildSetting{{Key: "CGO_ENABLED", Value: "1"}, {Key: "GOFIPS140", Value: "v1.0.0-c2097c7c"}}, "v1.0.0-c2097c7c"},
	} {
		if got := buildSetting(&debug.BuildInfo{Settings: tc.settings}); got != tc.want {
			t.Errorf("buildSetting(%v) = %q, want %q", tc.settings, got, tc.want)
		}
	}
}

func TestInfoString(t *testing.T) {
	for _, tc := range []struct {
		info Info
		want string
	}{
		{Info{Mode: ModeOff, Module: "latest"}, "FIPS 140-3: off"},
		{Info{Enabled: true, Mode: ModeOn, Module: "v1.0.0", Build: "v1.0.0-c2097c7c"}, "FIPS 140-3: on, Go Cryptographic Module v1.0.0"},
		{Info{Enabled: true, Mode: ModeOn, Module: "latest"}, "FIPS 140-3: on, Go Cryptographic Module latest (not a validated snapshot: build with make build-fips)"},
	} {
		if got := tc.info.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.info, got, tc.want)
		}
	}
}

func TestCheckTLSVersion(t *testing.T) {
	for v, ok := range map[uint16]bool{tls.VersionTLS10: false, tls.VersionTLS11: false, tls.VersionTLS12: true, tls.VersionTLS13: true} {
		err := CheckTLSVersion(v)
		if (err == nil) != ok {
			t.Errorf("%s: %v, want allowed %v", tls.VersionName(v), err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), "TLS 1.2 and 1.3 only") {
			t.Errorf("%s: %v does not say what is allowed", tls.VersionName(v), err)
		}
	}
}

func TestCheckCertificate(t *testing.T) {
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// RSA moduli of the sizes that matter; only the bit length is looked at.
	rsaKey := func(bits int) *rsa.PublicKey {
		return &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), uint(bits-1)), E: 65537}
	}
	cert := func(pub any, alg x509.PublicKeyAlgorithm) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: "gitlab-1"}, PublicKey: pub, PublicKeyAlgorithm: alg}
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want string // "" allowed
	}{
		{"RSA 1024", cert(rsaKey(1024), x509.RSA), "CN=gitlab-1 has a 1024-bit RSA key"},
		{"RSA 2048", cert(rsaKey(2048), x509.RSA), ""},
		{"RSA 4096", cert(rsaKey(4096), x509.RSA), ""},
		{"ECDSA P-224", cert(&p224.PublicKey, x509.ECDSA), "ECDSA key on P-224"},
		{"ECDSA P-256", cert(&p256.PublicKey, x509.ECDSA), ""},
		{"Ed25519", cert(edPub, x509.Ed25519), ""},
		{"DSA", cert(nil, x509.DSA), "has a DSA key"},
	} {
		err := CheckCertificate(tc.cert)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// helperEnv makes the test binary print Current() and exit (see
// TestModeFollowsGODEBUG).
const helperEnv = "GSA_FIPS_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		json.NewEncoder(os.Stdout).Encode(struct {
			Info
			SelfCheck string
		}{Current(), errString(SelfCheck())})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Enabled, Mode, Build and SelfCheck read the real crypto/fips140 state:
// the test binary runs again under each GODEBUG setting. Built normally,
// fips140=off passes the self-check; built with GOFIPS140 (make
// test-fips), it is refused.
func TestModeFollowsGODEBUG(t *testing.T) {
	built := Build()
	offRefused := ""
	if built != "" {
		offRefused = "FIPS 140-3 mode is off: this binary is built for FIPS 140-3 (GOFIPS140=" + built + ")"
	}
	for _, tc := range []struct {
		godebug   string
		enabled   bool
		mode      string
		selfCheck string
	}{
		{"fips140=off", false, ModeOff, offRefused},
		{"fips140=on", true, ModeOn, ""},
		{"fips140=only", true, ModeOnly, "GODEBUG=fips140=only cannot be used"},
	} {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"=1", "GODEBUG="+tc.godebug)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", tc.godebug, err)
		}
		var got struct {
			Info
			SelfCheck string
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%s: %q: %v", tc.godebug, out, err)
		}
		if got.Enabled != tc.enabled || got.Mode != tc.mode || got.Build != built ||
			!strings.HasPrefix(got.SelfCheck, tc.selfCheck) || (tc.selfCheck == "") != (got.SelfCheck == "") {
			t.Errorf("GODEBUG=%s: %s, want enabled %v, mode %s, build %q, self-check %q", tc.godebug, out, tc.enabled, tc.mode, built, tc.selfCheck)
		}
	}
}
