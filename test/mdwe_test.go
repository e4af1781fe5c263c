package test

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// The systemd unit sets MemoryDenyWriteExecute=yes. The kernel's own form
// of it, prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN) (Linux 6.3 and
// later; systemd 257 and later use it), refuses what systemd's seccomp
// form refuses, memory both writable and executable or made executable
// afterwards, and is kept across exec. This test binary, started with
// envMDWEExec set, turns it on, checks that it holds and execs the
// appliance with its own arguments.
const envMDWEExec = "GSA_TEST_MDWE_EXEC"

const (
	prSetMDWE            = 65
	prMDWERefuseExecGain = 1
	exitNoMDWE           = 125
)

func init() {
	bin := os.Getenv(envMDWEExec)
	if bin == "" {
		return
	}
	if _, _, errno := syscall.RawSyscall6(syscall.SYS_PRCTL, prSetMDWE, prMDWERefuseExecGain, 0, 0, 0, 0); errno != 0 {
		fmt.Fprintf(os.Stderr, "prctl(PR_SET_MDWE): %v\n", errno)
		os.Exit(exitNoMDWE)
	}
	if m, err := syscall.Mmap(-1, 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE|syscall.PROT_EXEC, syscall.MAP_PRIVATE|syscall.MAP_ANON); err == nil {
		syscall.Munmap(m)
		fmt.Fprintln(os.Stderr, "PR_SET_MDWE is not in effect: a writable and executable mapping was allowed")
		os.Exit(exitNoMDWE)
	}
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envMDWEExec+"=") {
			env = append(env, kv)
		}
	}
	err := syscall.Exec(bin, append([]string{bin}, os.Args[1:]...), env)
	fmt.Fprintf(os.Stderr, "exec %s: %v\n", bin, err)
	os.Exit(exitNoMDWE)
}

// Go and SoftHSM2 (the PKCS#11 module cgo loads with dlopen) run under
// MemoryDenyWriteExecute: the node serves, initializes with the HSM
// enrolled, and after a restart under it again the HSM unseals it.
func TestRunsWithMemoryDenyWriteExecute(t *testing.T) {
	bin := harness.Binary(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tr := &harness.Transcript{}
	// From here on, this test binary run with any arguments is the
	// appliance under MDWE (WaitServing runs Node.Bin for status, too).
	t.Setenv(envMDWEExec, bin)
	probe, errOut, code := harness.Run(t, tr, nil, self, "version")
	switch {
	case code == exitNoMDWE && strings.Contains(errOut, "prctl(PR_SET_MDWE): invalid argument"):
		t.Skip("this kernel has no PR_SET_MDWE (Linux 6.3 or later has)")
	case code != 0 || !strings.Contains(probe, "gitlab-secrets-appliance "):
		t.Fatalf("version under MDWE: exit %d: %s %s", code, probe, errOut)
	}

	dir := t.TempDir()
	hsm := harness.NewSoftHSM(t, "mdwe")
	hsm.GenerateAESKey(t, "kek")
	cfg, addr := nodeConfig(t, dir, "node-1", "127.0.0.1", "", hsmSeal(t, hsm, dir, "kek", true))
	start := func() *harness.Node {
		n := harness.StartNode(t, tr, self, cfg, addr, hsm.Env()...)
		n.WaitServing(t, tr)
		return n
	}
	n := start()
	initCluster(t, bin, addr)
	if p, _ := mechanism(waitState(t, tr, bin, addr, "active"), "pkcs11"); !p.Enrolled || p.Healthy == nil || !*p.Healthy {
		t.Fatalf("under MDWE after init: pkcs11 %+v", p)
	}
	if code := n.Signal(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("SIGTERM under MDWE: exit %d:\n%s", code, n.Output)
	}
	start()
	if p, _ := mechanism(waitState(t, tr, bin, addr, "active"), "pkcs11"); !p.LastUsed {
		t.Fatalf("restart under MDWE: not unsealed by the HSM: %+v", p)
	}
}
