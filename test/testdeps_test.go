package test

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// scripts/test-deps.sh, which `make test` runs first, with a PATH that
// has every tool it looks for but ruby (and no sudo): --check names ruby
// alone and the command that installs it; without --check, a user who is
// not root and has no sudo is told that command and nothing is installed.
// With the real PATH (after make test installed everything) it is content.
func TestTestDepsScriptDetectsMissingTools(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "gsa-testdeps-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	src, err := os.ReadFile(filepath.Join("..", "scripts", "test-deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "test-deps.sh")
	if err := os.WriteFile(script, src, 0o755); err != nil {
		t.Fatal(err)
	}
	fakebin := filepath.Join(dir, "bin")
	os.Mkdir(fakebin, 0o755)
	for _, tool := range []string{"gcc", "softhsm2-util", "pkcs11-tool", "erb", "chpst", "svlogd", "git", "lintian", "logrotate", "psql", "id"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s is not installed: run scripts/test-deps.sh (make test does)", tool)
		}
		if err := os.Symlink(p, filepath.Join(fakebin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	run := func(path string, asOther bool, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bash, append([]string{script}, args...)...)
		cmd.Env = []string{"PATH=" + path, "HOME=" + dir}
		if asOther && os.Getuid() == 0 {
			u, err := user.Lookup("nobody")
			if err != nil {
				t.Fatal(err)
			}
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		}
		out, err := cmd.CombinedOutput()
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			t.Fatal(err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}

	const install = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ruby\n"
	out, code := run(fakebin, false, "--check")
	if code != 1 || !strings.Contains(out, "which are missing: ruby\n") || !strings.Contains(out, "Install them as root with: "+install) {
		t.Errorf("--check without ruby: exit %d:\n%s", code, out)
	}
	// Not root (nobody, when the test runs as root), no sudo: the command,
	// and nothing run.
	out, code = run(fakebin, true)
	if code != 1 || !strings.Contains(out, "not root, no sudo") || !strings.Contains(out, "\n  "+install) || strings.Contains(out, "Installing") {
		t.Errorf("without ruby, root or sudo: exit %d:\n%s", code, out)
	}
	if out, code := run(fakebin, false, "--bogus"); code != 64 {
		t.Errorf("--bogus: exit %d:\n%s", code, out)
	}
	if out, code := run(os.Getenv("PATH"), false, "--check"); code != 0 || out != "" {
		t.Errorf("--check with this machine's PATH: exit %d:\n%s", code, out)
	}
}
