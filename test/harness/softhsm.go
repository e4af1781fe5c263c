package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// SoftHSMLibrary is where Debian's softhsm2 package puts the module.
const SoftHSMLibrary = "/usr/lib/softhsm/libsofthsm2.so"

// SoftHSM is a throwaway SoftHSM2 token in a temp dir, made and used with
// the real tools an operator would use (softhsm2-util, pkcs11-tool).
// Processes that use it need SOFTHSM2_CONF=Conf in their environment (Env).
type SoftHSM struct {
	Conf, Dir, Library, TokenLabel, PIN string
}

// NewSoftHSM initializes a token labelled label with a fresh PIN in a
// test's temp dir.
func NewSoftHSM(t testing.TB, label string) *SoftHSM {
	t.Helper()
	s, err := CreateSoftHSM(t.TempDir(), label)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// CreateSoftHSM initializes a token labelled label under root (for
// programs such as the benchmark; tests use NewSoftHSM).
func CreateSoftHSM(root, label string) (*SoftHSM, error) {
	for _, tool := range []string{"softhsm2-util", "pkcs11-tool"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found: install SoftHSM2 and OpenSC (apt-get install softhsm2 opensc)", tool)
		}
	}
	if _, err := os.Stat(SoftHSMLibrary); err != nil {
		return nil, fmt.Errorf("%s not found: apt-get install softhsm2", SoftHSMLibrary)
	}
	s := &SoftHSM{
		Conf: filepath.Join(root, "softhsm2.conf"), Dir: filepath.Join(root, "tokens"),
		Library: SoftHSMLibrary, TokenLabel: label, PIN: "pin-" + filepath.Base(root),
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", s.Dir)
	if err := os.WriteFile(s.Conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return s, s.run("softhsm2-util", "--init-token", "--free", "--label", label, "--pin", s.PIN, "--so-pin", s.PIN+"-so")
}

// GenerateAESKey makes an AES-256 secret key labelled label on the token.
func (s *SoftHSM) GenerateAESKey(t testing.TB, label string) {
	t.Helper()
	if err := s.GenerateKey(label); err != nil {
		t.Fatal(err)
	}
}

// GenerateKey is GenerateAESKey for programs.
func (s *SoftHSM) GenerateKey(label string) error {
	return s.run("pkcs11-tool", "--module", s.Library, "--token-label", s.TokenLabel, "--login", "--pin", s.PIN,
		"--keygen", "--key-type", "AES:32", "--label", label)
}

// Env is the environment a process needs to see this token.
func (s *SoftHSM) Env() []string { return []string{"SOFTHSM2_CONF=" + s.Conf} }

// RemoveToken moves the token's files away, as if the HSM were gone.
func (s *SoftHSM) RemoveToken(t testing.TB) {
	t.Helper()
	if err := os.Rename(s.Dir, s.Dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(s.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
}

// RestoreToken brings the token's files back.
func (s *SoftHSM) RestoreToken(t testing.TB) {
	t.Helper()
	if err := os.RemoveAll(s.Dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(s.Dir+".away", s.Dir); err != nil {
		t.Fatal(err)
	}
}

// WritePINFile writes the PIN to a 0600 file and returns its path.
func (s *SoftHSM) WritePINFile(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "hsm-pin")
	if err := os.WriteFile(p, []byte(s.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (s *SoftHSM) run(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), s.Env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, args[0], err, strings.ReplaceAll(string(out), s.PIN, "<pin>"))
	}
	return nil
}

// DeleteKey removes the secret key labelled label from the token.
func (s *SoftHSM) DeleteKey(t testing.TB, label string) {
	t.Helper()
	if err := s.run("pkcs11-tool", "--module", s.Library, "--token-label", s.TokenLabel, "--login", "--pin", s.PIN,
		"--delete-object", "--type", "secrkey", "--label", label); err != nil {
		t.Fatal(err)
	}
}

// PKCS11Tool runs pkcs11-tool logged in to the token, with args after the
// module, token and PIN (e.g. "--keygen", "--key-type", "AES:16", "--label",
// "k" for a key GenerateAESKey would not make), and returns its output.
func (s *SoftHSM) PKCS11Tool(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command("pkcs11-tool", append([]string{"--module", s.Library, "--token-label", s.TokenLabel, "--login", "--pin", s.PIN}, args...)...)
	cmd.Env = append(os.Environ(), s.Env()...)
	out, err := cmd.CombinedOutput()
	text := strings.ReplaceAll(string(out), s.PIN, "<pin>")
	if err != nil {
		t.Fatalf("pkcs11-tool %s: %v\n%s", strings.Join(args, " "), err, text)
	}
	return text
}
