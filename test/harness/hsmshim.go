package harness

import (
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// shimSource is a PKCS#11 module that forwards to SoftHSM2 and can be made
// to hang; see the comment at its top.
//
//go:embed hsmshim/shim.c
var shimSource []byte

var (
	shimOnce sync.Once
	shimPath string
	shimErr  error
)

// HangingHSM is a SoftHSM2 token behind a PKCS#11 module (hsmshim/shim.c)
// that hands every call to the real token but can be made to block in the
// calls a hung HSM never returns from (C_Encrypt, C_Decrypt, their Init,
// C_Login, C_OpenSession, C_CloseSession, C_GetSlotList, C_GetTokenInfo).
// Not a mock: the answers are the token's own; only their delivery can be
// held up, for as long as the test wants.
//
// Configure the appliance with Library (not SoftHSM.Library) and give the
// process Env (in-process tests: SetEnv before the module is loaded).
type HangingHSM struct {
	*SoftHSM
	Library   string // the shim, a copy of its own for this token
	HangFile  string // while it exists, wrapped calls block
	CountFile string // one line per event: "enter|block|unblock|leave C_Name"
}

// NewHangingHSM puts the shim in front of s. The hang is cleared when the
// test ends, so that no call stays blocked beyond it.
func NewHangingHSM(t testing.TB, s *SoftHSM) *HangingHSM {
	t.Helper()
	shimOnce.Do(buildShim)
	if shimErr != nil {
		t.Fatal(shimErr)
	}
	dir := t.TempDir()
	// A copy per token: the shim reads its environment once per load, and
	// a distinct file is a distinct library to dlopen.
	lib := filepath.Join(dir, "libhsmshim.so")
	b, err := os.ReadFile(shimPath)
	if err == nil {
		err = os.WriteFile(lib, b, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	h := &HangingHSM{SoftHSM: s, Library: lib, HangFile: filepath.Join(dir, "hang"), CountFile: filepath.Join(dir, "calls")}
	t.Cleanup(func() { os.Remove(h.HangFile) })
	return h
}

func buildShim() {
	root, err := moduleRoot()
	if err != nil {
		shimErr = err
		return
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/miekg/pkcs11")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		shimErr = fmt.Errorf("finding the PKCS#11 headers of github.com/miekg/pkcs11: %v", err)
		return
	}
	headers := strings.TrimSpace(string(out))
	dir, err := os.MkdirTemp("", "gsa-hsmshim-")
	if err != nil {
		shimErr = err
		return
	}
	src := filepath.Join(dir, "shim.c")
	if err := os.WriteFile(src, shimSource, 0o644); err != nil {
		shimErr = err
		return
	}
	shimPath = filepath.Join(dir, "libhsmshim.so")
	gcc := exec.Command("gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-I", headers, "-o", shimPath, src, "-ldl", "-lpthread")
	if out, err := gcc.CombinedOutput(); err != nil {
		shimErr = fmt.Errorf("building the PKCS#11 shim (gcc needed): %v\n%s", err, out)
	}
}

// Env is the environment a process needs: the token's and the shim's.
func (h *HangingHSM) Env() []string {
	return append(h.SoftHSM.Env(), "GSA_HSM_HANG_FILE="+h.HangFile, "GSA_HSM_COUNT_FILE="+h.CountFile)
}

// EnvReport is the variable that makes the shim record, when it is
// loaded, which of the named variables are set ("env NAME" lines: see
// Count("env", name)). Give it to the process with Env.
func (h *HangingHSM) EnvReport(names ...string) string {
	return "GSA_HSM_ENV_REPORT=" + strings.Join(names, " ")
}

// SetEnv sets Env in this test process (before the shim is first loaded).
func (h *HangingHSM) SetEnv(t testing.TB) {
	t.Helper()
	for _, kv := range h.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// Hang makes the named functions (every wrapped one if none are named)
// block from now on, until Release.
func (h *HangingHSM) Hang(t testing.TB, functions ...string) {
	t.Helper()
	if err := os.WriteFile(h.HangFile, []byte(strings.Join(functions, " ")), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Release lets blocked calls go on to the token, and new ones through.
func (h *HangingHSM) Release(t testing.TB) {
	t.Helper()
	if err := os.Remove(h.HangFile); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
}

// Count is how many times event ("enter", "block", "unblock", "leave" or
// "env") happened, in any wrapped function (variable, for "env") or, if
// functions are named, in those.
func (h *HangingHSM) Count(event string, functions ...string) int {
	b, _ := os.ReadFile(h.CountFile)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		ev, fn, ok := strings.Cut(line, " ")
		if !ok || ev != event {
			continue
		}
		if len(functions) == 0 || contains(functions, fn) {
			n++
		}
	}
	return n
}

// Blocked is how many calls are blocked in the shim now.
func (h *HangingHSM) Blocked() int { return h.Count("block") - h.Count("unblock") }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
