package test

import (
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openbao/openbao/helper/pgpkeys"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// EnvFIPSBinary names a FIPS build (`make build-fips`) for the tests that
// need one; `make test-fips` sets it. Without it they run only when the
// binary under test ($GSA_TEST_BINARY) is a FIPS build, and skip otherwise.
const EnvFIPSBinary = "GSA_TEST_FIPS_BINARY"

// goFIPS140 is the GOFIPS140 setting bin was built with, "" for a normal
// build, read from the binary's build information.
func goFIPS140(t *testing.T, bin string) string {
	t.Helper()
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatalf("reading the build information of %s: %v", bin, err)
	}
	for _, s := range bi.Settings {
		if s.Key == "GOFIPS140" && s.Value != "off" {
			return s.Value
		}
	}
	return ""
}

// fipsBinary is the FIPS build to test, or skips the test.
func fipsBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv(EnvFIPSBinary)
	if bin == "" {
		if b := harness.Binary(t); goFIPS140(t, b) != "" {
			return b
		}
		t.Skip("needs a FIPS build: set " + EnvFIPSBinary + " (make test-fips does)")
	}
	if goFIPS140(t, bin) == "" {
		t.Fatalf("%s=%s is not a FIPS build (no GOFIPS140 in its build information): build it with make build-fips", EnvFIPSBinary, bin)
	}
	return bin
}

type versionOutput struct {
	Version string `json:"version"`
	FIPS    struct {
		Enabled bool   `json:"enabled"`
		Mode    string `json:"mode"`
		Module  string `json:"module"`
		Build   string `json:"build"`
	} `json:"fips"`
}

func version(t *testing.T, tr *harness.Transcript, bin string, env ...string) versionOutput {
	t.Helper()
	out, errOut, code := runEnv(t, tr, env, bin, "version", "--format", "json")
	var v versionOutput
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil {
		t.Fatalf("version: exit %d: %s %s", code, out, errOut)
	}
	return v
}

// runEnv is harness.Run with extra environment variables.
func runEnv(t *testing.T, tr *harness.Transcript, env []string, bin string, args ...string) (string, string, int) {
	t.Helper()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return harness.Run(t, tr, nil, bin, args...)
}

// `version` and `status` say whether FIPS 140-3 mode is on: on for a FIPS
// build (built with GOFIPS140), off for a normal one. Whichever the binary
// under test is, its build information says what to expect.
func TestVersionAndStatusReportFIPS(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	built := goFIPS140(t, bin)
	want := built != ""
	v := version(t, tr, bin)
	if v.FIPS.Enabled != want || v.FIPS.Build != built {
		t.Fatalf("version: fips %+v, want enabled %v, build %q", v.FIPS, want, built)
	}
	text, _, _ := harness.Run(t, tr, nil, bin, "version")
	wantLine := "FIPS 140-3: off"
	if want {
		wantLine = "FIPS 140-3: on, Go Cryptographic Module " + v.FIPS.Module
		if !strings.HasPrefix(built, v.FIPS.Module) || v.FIPS.Mode != "on" {
			t.Fatalf("version: module %q, mode %q for a GOFIPS140=%s build", v.FIPS.Module, v.FIPS.Mode, built)
		}
	}
	if !strings.Contains(text, wantLine+"\n") {
		t.Fatalf("version says %q, want the line %q", text, wantLine)
	}

	cfg, addr, _ := singleNode(t)
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	out, _, _ := harness.Run(t, tr, nil, bin, "status", "--format", "json", "--address", addr)
	var st struct {
		FIPS *bool `json:"fips"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.FIPS == nil || *st.FIPS != want {
		t.Fatalf("status --format json: fips %v, want %v: %s", st.FIPS, want, out)
	}
	table, _, _ := harness.Run(t, tr, nil, bin, "status", "--address", addr)
	row := map[bool]string{true: "on", false: "off"}[want]
	found := false
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0]+" "+f[1] == "FIPS 140-3" {
			found = f[2] == row
		}
	}
	if !found {
		t.Fatalf("status does not say FIPS 140-3 %s:\n%s", row, table)
	}
}

// A FIPS build refuses what it cannot honour: a listener's tls_min_version
// below TLS 1.2 (exit 3, the key named, nothing started), running with FIPS
// mode switched off or with GODEBUG=fips140=only (exit 3), and PGP
// encryption of shares and keys (init, seal rotate-shares, OpenBao's
// generate-root), each refused with nothing changed.
func TestFIPSBuildRefuses(t *testing.T) {
	bin := fipsBinary(t)
	tr := &harness.Transcript{}

	t.Run("tls10", func(t *testing.T) {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "appliance.hcl")
		src := "node_id = \"n\"\ndata_dir = \"" + filepath.Join(dir, "data") + "\"\n" +
			"listener {\n  address = \"" + harness.FreeAddr(t, "127.0.0.1") + "\"\n  tls_disable = true\n  tls_min_version = \"tls10\"\n}\n"
		if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		want := `listener[0].tls_min_version: "tls10": TLS 1.0 is not allowed in FIPS 140-3 mode`
		for _, args := range [][]string{{"config", "validate", cfg}, {"server", "--config", cfg}} {
			_, errOut, code := harness.Run(t, tr, nil, bin, args...)
			if code != 3 || !strings.Contains(errOut, want) || !strings.Contains(errOut, "has 1 problem(s)") {
				t.Fatalf("%v: exit %d, want 3 with %q:\n%s", args, code, want, errOut)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
			t.Fatalf("the refused config created the data dir: %v", err)
		}
	})

	cfg, addr, dir := singleNode(t)
	t.Run("FIPS mode off", func(t *testing.T) {
		env := []string{"GODEBUG=fips140=off"}
		if v := version(t, tr, bin, env...); v.FIPS.Enabled {
			t.Fatalf("version under GODEBUG=fips140=off: %+v", v.FIPS)
		}
		for _, args := range [][]string{{"server", "--config", cfg}, {"config", "validate", cfg}, {"status", "--address", addr}} {
			_, errOut, code := runEnv(t, tr, env, bin, args...)
			if code != 3 || !strings.Contains(errOut, "FIPS 140-3 mode is off: this binary is built for FIPS 140-3 (GOFIPS140=") ||
				!strings.Contains(errOut, "remove fips140=off from GODEBUG") {
				t.Fatalf("%v under GODEBUG=fips140=off: exit %d, want 3 and why:\n%s", args, code, errOut)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
			t.Fatalf("the refused start created the data dir: %v", err)
		}
	})
	t.Run("fips140=only", func(t *testing.T) {
		_, errOut, code := runEnv(t, tr, []string{"GODEBUG=fips140=only"}, bin, "server", "--config", cfg)
		if code != 3 || !strings.Contains(errOut, "GODEBUG=fips140=only cannot be used with OpenBao 2.4") {
			t.Fatalf("server under GODEBUG=fips140=only: exit %d, want 3 and why:\n%s", code, errOut)
		}
	})

	t.Run("PGP", func(t *testing.T) {
		n := harness.StartNode(t, tr, bin, cfg, addr)
		n.WaitServing(t, tr)
		keyDir := t.TempDir()
		var keyFiles []string
		for i, k := range []string{pgpkeys.TestPubKey1, pgpkeys.TestPubKey2} {
			f := filepath.Join(keyDir, []string{"op1.asc", "op2.asc"}[i])
			if err := os.WriteFile(f, []byte(k), 0o600); err != nil {
				t.Fatal(err)
			}
			keyFiles = append(keyFiles, f)
		}
		pgpRefused := "PGP encryption is not available in FIPS 140-3 mode"
		for _, args := range [][]string{
			{"--pgp-keys", strings.Join(keyFiles, ",")},
			{"--recovery-shares", "2", "--recovery-threshold", "2", "--recovery-pgp-keys", strings.Join(keyFiles, ",")},
		} {
			_, errOut, code := harness.Run(t, tr, nil, bin, append([]string{"init", "--shares", "2", "--threshold", "2", "--address", addr}, args...)...)
			if code != 1 || !strings.Contains(errOut, pgpRefused) {
				t.Fatalf("init %v: exit %d, want 1 and %q:\n%s", args, code, pgpRefused, errOut)
			}
		}
		if st, _ := status(t, tr, bin, addr); st.Initialized {
			t.Fatal("a refused init initialized the node")
		}

		res := initCluster(t, bin, addr, "--shares", "2", "--threshold", "2")
		waitState(t, tr, bin, addr, "active")
		tokenFile := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokenFile, []byte(res.RootToken), 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := harness.Run(t, tr, nil, bin, "seal", "rotate-shares", "--shares", "2", "--threshold", "2",
			"--pgp-keys", strings.Join(keyFiles, ","), "--token-file", tokenFile, "--address", addr)
		if code != 1 || !strings.Contains(errOut, "pgp_keys: "+pgpRefused) {
			t.Fatalf("seal rotate-shares --pgp-keys: exit %d, want 1 and %q:\n%s", code, pgpRefused, errOut)
		}

		// OpenBao's own endpoints that encrypt to PGP keys.
		for path, body := range map[string]any{
			"/v1/sys/generate-root/attempt":   map[string]string{"pgp_key": pgpkeys.TestPubKey1},
			"/v1/sys/rekey-recovery-key/init": map[string]any{"secret_shares": 2, "secret_threshold": 2, "pgp_keys": []string{pgpkeys.TestPubKey1, pgpkeys.TestPubKey2}},
		} {
			b, _ := json.Marshal(body)
			req, _ := http.NewRequest("PUT", addr+path, bytes.NewReader(b))
			req.Header.Set("X-Vault-Token", res.RootToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var e struct{ Errors []string }
			json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || len(e.Errors) != 1 || !strings.Contains(e.Errors[0], pgpRefused) {
				t.Fatalf("PUT %s with PGP keys: %d %v, want 400 and %q", path, resp.StatusCode, e.Errors, pgpRefused)
			}
		}
		// The same endpoint without PGP still reaches OpenBao (with a sudo
		// token, as every key ceremony).
		req, _ := http.NewRequest("GET", addr+"/v1/sys/generate-root/attempt", nil)
		req.Header.Set("X-Vault-Token", res.RootToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET sys/generate-root/attempt: %d", resp.StatusCode)
		}
	})
}
