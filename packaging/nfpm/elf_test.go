package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// glibcNeeds reads the newest GLIBC_x.y symbol version a binary imports,
// as objdump lists them; a binary that is not a position-independent
// executable is refused.
func TestGlibcNeeds(t *testing.T) {
	got, err := glibcNeeds("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("objdump"); err == nil {
		out, err := exec.Command("objdump", "-T", "/bin/true").Output()
		if err != nil {
			t.Fatal(err)
		}
		var versions [][]int
		for _, m := range regexp.MustCompile(`GLIBC_([0-9.]+)`).FindAllStringSubmatch(string(out), -1) {
			if v, ok := parseVersion(m[1]); ok {
				versions = append(versions, v)
			}
		}
		want := slices.MaxFunc(versions, compareVersions)
		if v, _ := parseVersion(got); compareVersions(v, want) != 0 {
			t.Fatalf("glibcNeeds(/bin/true) = %s, objdump says %v", got, want)
		}
	}
	if compareVersions([]int{2, 3, 2}, []int{2, 34}) >= 0 || compareVersions([]int{2, 34}, []int{2, 34, 0}) != 0 {
		t.Fatal("compareVersions")
	}

	// A static Go binary that is not PIE.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n\ngo 1.26\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644)
	cmd := exec.Command("go", "build", "-buildmode=exe", "-o", "x", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if _, err := glibcNeeds(filepath.Join(dir, "x")); err == nil || !strings.Contains(err.Error(), "-buildmode=pie") {
		t.Fatalf("a non-PIE binary: %v", err)
	}
	if _, err := glibcNeeds(filepath.Join(dir, "main.go")); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Fatalf("a source file: %v", err)
	}
}
