package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	rpmutils "github.com/sassoftware/go-rpmutils"
)

const unitSource = "../../systemd/gitlab-secrets-appliance.service"

// entry is one file of a package as the package states it.
type entry struct {
	mode         fs.FileMode // permission bits
	dir          bool
	owner, group string
}

func (e entry) String() string {
	kind := "file"
	if e.dir {
		kind = "dir"
	}
	return fmt.Sprintf("%s %04o %s:%s", kind, e.mode, e.owner, e.group)
}

// wantFiles is every path the packages hold, with its mode and owners.
var wantFiles = map[string]entry{
	BinaryPath: {0o755, false, "root", "root"},
	UnitPath:   {0o644, false, "root", "root"},
	ConfigDir:  {0o750, true, "root", User},
	ConfigPath: {0o640, false, "root", User},
	DataDir:    {0o700, true, User, User},
	LogDir:     {0o750, true, User, User},
}

// stubBinary stands for the appliance in packages built by the tests.
func stubBinary(t *testing.T) (string, []byte) {
	t.Helper()
	content := []byte("#!/bin/sh\necho gitlab-secrets-appliance stub\n")
	path := filepath.Join(t.TempDir(), "gitlab-secrets-appliance")
	if err := os.WriteFile(path, content, 0o755); err != nil {
		t.Fatal(err)
	}
	return path, content
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The packages built from the unit, the sample config and a binary hold
// exactly the expected files, modes and owners, the scripts that make the
// service user, and the unit and binary unchanged.
func TestPackages(t *testing.T) {
	bin, binContent := stubBinary(t)
	out := t.TempDir()
	mtime := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	paths, err := Build(Options{Binary: bin, Unit: unitSource, Version: "1.2.3-dev.20261201.gabc1234", Arch: "amd64", OutDir: out, MTime: mtime}, Formats...)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 2 || filepath.Base(paths[0]) != "gitlab-secrets-appliance_1.2.3~dev.20261201.gabc1234_amd64.deb" ||
		filepath.Base(paths[1]) != "gitlab-secrets-appliance-1.2.3~dev.20261201.gabc1234-1.x86_64.rpm" {
		t.Fatalf("built %v", paths)
	}
	t.Run("deb", func(t *testing.T) { checkDeb(t, paths[0], binContent) })
	t.Run("rpm", func(t *testing.T) { checkRPM(t, paths[1], binContent) })
}

// The packages `make package` built (in dist/), if any: the same checks,
// and the binary dpkg installs runs and names itself.
func TestMakePackageArtifacts(t *testing.T) {
	debs, _ := filepath.Glob("../../dist/*.deb")
	rpms, _ := filepath.Glob("../../dist/*.rpm")
	if len(debs)+len(rpms) == 0 {
		t.Skip("no packages in dist/: run make package")
	}
	for _, p := range debs {
		t.Run(filepath.Base(p), func(t *testing.T) {
			root := checkDeb(t, p, nil)
			out := run(t, filepath.Join(root, BinaryPath), "version")
			if !strings.HasPrefix(string(out), "gitlab-secrets-appliance ") {
				t.Errorf("the packaged binary's version: %q", out)
			}
		})
	}
	for _, p := range rpms {
		t.Run(filepath.Base(p), func(t *testing.T) { checkRPM(t, p, nil) })
	}
}

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed", name)
	}
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s %v: %v\n%s", name, args, err, stderr)
	}
	return out
}

// checkDeb checks a .deb (its binary against binContent unless nil) and
// returns the root dpkg unpacked it into.
func checkDeb(t *testing.T, deb string, binContent []byte) string {
	t.Helper()
	needTool(t, "dpkg-deb")
	fields := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(run(t, "dpkg-deb", "-f", deb, "Package", "Architecture", "Depends"))), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		fields[k] = v
	}
	if fields["Package"] != Name || fields["Architecture"] != "amd64" || !strings.Contains(fields["Depends"], "adduser") {
		t.Errorf("control fields %v", fields)
	}
	if got := strings.TrimSpace(string(run(t, "dpkg-deb", "-I", deb, "conffiles"))); got != ConfigPath {
		t.Errorf("conffiles %q, want %s", got, ConfigPath)
	}

	// The data archive, as dpkg reads it.
	tr := tar.NewReader(bytes.NewReader(run(t, "dpkg-deb", "--fsys-tarfile", deb)))
	got := map[string]entry{}
	contents := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := "/" + strings.Trim(strings.TrimPrefix(h.Name, "./"), "/")
		got[name] = entry{fs.FileMode(h.Mode) & fs.ModePerm, h.Typeflag == tar.TypeDir, h.Uname, h.Gname}
		if h.Typeflag == tar.TypeReg {
			contents[name], _ = io.ReadAll(tr)
		}
	}
	checkEntries(t, got)
	checkContents(t, contents, binContent)

	// dpkg itself installs the files into a clean root (unpack: the
	// maintainer scripts, tested below, need the real system).
	root := t.TempDir()
	for _, d := range []string{"info", "updates", "triggers"} {
		os.MkdirAll(filepath.Join(root, "var/lib/dpkg", d), 0o755)
	}
	for _, f := range []string{"status", "available"} {
		os.WriteFile(filepath.Join(root, "var/lib/dpkg", f), nil, 0o644)
	}
	needTool(t, "dpkg")
	run(t, "dpkg", "--root="+root, "--force-not-root", "--force-bad-path", "--log=/dev/null", "--no-triggers", "--unpack", deb)
	for path, want := range wantFiles {
		p := filepath.Join(root, path)
		if path == ConfigPath {
			p += ".dpkg-new" // a conffile waits for configure
		}
		st, err := os.Lstat(p)
		if err != nil {
			t.Errorf("dpkg --unpack: %v", err)
			continue
		}
		if st.Mode().Perm() != want.mode || st.IsDir() != want.dir {
			t.Errorf("dpkg --unpack: %s is %v, want %v", path, st.Mode(), want.mode)
		}
	}
	listed := strings.Fields(string(run(t, "dpkg", "--root="+root, "-L", Name)))
	for path := range wantFiles {
		if !slices.Contains(listed, path) {
			t.Errorf("dpkg -L does not list %s: %v", path, listed)
		}
	}

	control := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, control)
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if st, err := os.Stat(filepath.Join(control, s)); err != nil || st.Mode().Perm()&0o111 == 0 {
			t.Errorf("maintainer script %s: %v", s, err)
		}
	}
	checkPostinst(t, filepath.Join(control, "postinst"))
	return root
}

func checkEntries(t *testing.T, got map[string]entry) {
	t.Helper()
	for path, want := range wantFiles {
		if g, ok := got[path]; !ok {
			t.Errorf("%s is not in the package", path)
		} else if g != want {
			t.Errorf("%s: %v, want %v", path, g, want)
		}
	}
	// Nothing else but the parent directories, owned by root.
	for path, g := range got {
		if _, ok := wantFiles[path]; !ok && !(g.dir && g.owner == "root" && g.group == "root" && g.mode == 0o755 && isParent(path)) {
			t.Errorf("unexpected %s: %v", path, g)
		}
	}
}

func isParent(path string) bool {
	for p := range wantFiles {
		if strings.HasPrefix(p, path+"/") {
			return true
		}
	}
	return false
}

func checkContents(t *testing.T, contents map[string][]byte, binContent []byte) {
	t.Helper()
	if binContent != nil && !bytes.Equal(contents[BinaryPath], binContent) {
		t.Errorf("%s is not the binary given (%d bytes, want %d)", BinaryPath, len(contents[BinaryPath]), len(binContent))
	}
	if !bytes.Equal(contents[UnitPath], readFile(t, unitSource)) {
		t.Errorf("%s differs from systemd/gitlab-secrets-appliance.service", UnitPath)
	}
	if !bytes.Equal(contents[ConfigPath], readFile(t, "appliance.hcl")) {
		t.Errorf("%s differs from packaging/nfpm/appliance.hcl", ConfigPath)
	}
}

// checkPostinst runs the Debian postinst with every command it may call
// replaced by a stub that only records its arguments (PATH), for a first
// install and an upgrade: nothing on this machine changes.
func checkPostinst(t *testing.T, script string) {
	t.Helper()
	stubs := t.TempDir()
	log := filepath.Join(stubs, "calls")
	for _, cmd := range []string{"adduser", "getent", "chown", "chmod", "systemctl"} {
		src := fmt.Sprintf("#!/bin/sh\necho %s \"$@\" >> %s\n", cmd, log)
		if cmd == "getent" {
			src += "exit 2\n" // no such user yet
		}
		if err := os.WriteFile(filepath.Join(stubs, cmd), []byte(src), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		args []string
		want []string
		not  []string
	}{
		{[]string{"configure", ""}, []string{
			"adduser --system --group --home /var/lib/gitlab-secrets-appliance --no-create-home --gecos GitLab secrets appliance gitlab-secrets-appliance",
			"chown gitlab-secrets-appliance:gitlab-secrets-appliance /var/lib/gitlab-secrets-appliance /var/log/gitlab-secrets-appliance",
			"chmod 0700 /var/lib/gitlab-secrets-appliance",
			"chown root:gitlab-secrets-appliance /etc/gitlab-secrets-appliance/appliance.hcl",
			"chmod 0640 /etc/gitlab-secrets-appliance/appliance.hcl",
		}, nil},
		{[]string{"configure", "0.9.0"}, []string{"chmod 0700 /var/lib/gitlab-secrets-appliance"},
			[]string{"chown root:gitlab-secrets-appliance /etc/gitlab-secrets-appliance/appliance.hcl"}},
	} {
		os.Remove(log)
		cmd := exec.Command("/bin/sh", append([]string{script}, tc.args...)...)
		cmd.Env = []string{"PATH=" + stubs}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("postinst %v: %v\n%s", tc.args, err, out)
		}
		calls, _ := os.ReadFile(log)
		lines := strings.Split(strings.TrimSpace(string(calls)), "\n")
		for _, w := range tc.want {
			if !slices.Contains(lines, w) {
				t.Errorf("postinst %v did not run %q; it ran:\n%s", tc.args, w, calls)
			}
		}
		for _, n := range tc.not {
			if slices.Contains(lines, n) {
				t.Errorf("postinst %v ran %q", tc.args, n)
			}
		}
	}
}

func checkRPM(t *testing.T, path string, binContent []byte) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rpm, err := rpmutils.ReadRpm(f)
	if err != nil {
		t.Fatal(err)
	}
	h := rpm.Header
	name, _ := h.GetString(rpmutils.NAME)
	arch, _ := h.GetString(rpmutils.ARCH)
	requires, _ := h.GetStrings(rpmutils.REQUIRENAME)
	if name != Name || arch != "x86_64" || !slices.Contains(requires, "shadow-utils") {
		t.Errorf("rpm %s %s requires %v", name, arch, requires)
	}
	pre, _ := h.GetString(rpmutils.PREIN)
	if !strings.Contains(pre, "useradd -r -g \"$user\" -d /var/lib/gitlab-secrets-appliance") {
		t.Errorf("%%pre does not make the service user:\n%s", pre)
	}
	for _, tag := range []int{rpmutils.POSTIN, rpmutils.PREUN, rpmutils.POSTUN} {
		if s, _ := h.GetString(tag); s == "" {
			t.Errorf("rpm script tag %d is empty", tag)
		}
	}
	fis, err := h.GetFiles()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]entry{}
	for _, fi := range fis {
		m := fs.FileMode(fi.Mode())
		got[fi.Name()] = entry{m & fs.ModePerm, fi.Mode()&0o170000 == 0o040000, fi.UserName(), fi.GroupName()}
		if fi.Name() == ConfigPath && fi.Flags()&(rpmutils.RPMFILE_CONFIG|rpmutils.RPMFILE_NOREPLACE) != rpmutils.RPMFILE_CONFIG|rpmutils.RPMFILE_NOREPLACE {
			t.Errorf("%s is not %%config(noreplace): flags %#x", ConfigPath, fi.Flags())
		}
	}
	checkEntries(t, got)
	pr, err := rpm.PayloadReaderExtended()
	if err != nil {
		t.Fatal(err)
	}
	contents := map[string][]byte{}
	for {
		fi, err := pr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&0o170000 == 0o100000 {
			contents[fi.Name()], _ = io.ReadAll(pr)
		}
	}
	checkContents(t, contents, binContent)
}
