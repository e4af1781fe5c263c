package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"maps"
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
	BinaryPath:    {0o755, false, "root", "root"},
	ConfigDir:     {0o750, true, "root", User},
	ConfigPath:    {0o640, false, "root", User},
	LogrotatePath: {0o644, false, "root", "root"},
	DataDir:       {0o700, true, User, User},
	LogDir:        {0o750, true, User, User},
}

// formatFiles are each format's own paths: the unit where the
// distribution keeps units, the copyright file where it keeps those.
var formatFiles = map[string]map[string]entry{
	"deb": {
		DebUnitPath:      {0o644, false, "root", "root"},
		DebCopyrightPath: {0o644, false, "root", "root"},
		DebChangelogPath: {0o644, false, "root", "root"},
	},
	"rpm": {
		RPMUnitPath:      {0o644, false, "root", "root"},
		RPMCopyrightPath: {0o644, false, "root", "root"},
	},
}

// filesOf is every path a package of format holds.
func filesOf(format string) map[string]entry {
	out := maps.Clone(wantFiles)
	maps.Copy(out, formatFiles[format])
	return out
}

// stubBinary stands for the appliance in packages built by the tests: a
// copy of /bin/true, a position-independent executable that needs the C
// library (GLIBC_2.34 on Debian 12), as the appliance does.
func stubBinary(t *testing.T) (string, []byte) {
	t.Helper()
	content, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Skip("no /bin/true to stand for the appliance binary")
	}
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
	glibc, err := glibcNeeds(bin)
	if err != nil || glibc == "" {
		t.Fatalf("the C library /bin/true needs: %q, %v", glibc, err)
	}
	t.Run("deb", func(t *testing.T) { checkDeb(t, paths[0], binContent, glibc) })
	t.Run("rpm", func(t *testing.T) { checkRPM(t, paths[1], binContent, glibc) })
}

// The packages `make package` built (in dist/), if any: the same checks,
// and the binary dpkg installs runs and names itself.
func TestMakePackageArtifacts(t *testing.T) {
	debs, _ := filepath.Glob("../../dist/*.deb")
	rpms, _ := filepath.Glob("../../dist/*.rpm")
	if len(debs)+len(rpms) == 0 {
		t.Skip("no packages in dist/: run make package")
	}
	glibc, err := glibcNeeds("../../bin/gitlab-secrets-appliance")
	if err != nil {
		t.Fatalf("bin/gitlab-secrets-appliance: %v", err)
	}
	for _, p := range debs {
		t.Run(filepath.Base(p), func(t *testing.T) {
			root := checkDeb(t, p, nil, glibc)
			bin := filepath.Join(root, BinaryPath)
			out := run(t, bin, "version")
			if !strings.HasPrefix(string(out), "gitlab-secrets-appliance ") {
				t.Errorf("the packaged binary's version: %q", out)
			}
			if _, err := glibcNeeds(bin); err != nil {
				t.Error(err) // not a PIE
			}
		})
	}
	for _, p := range rpms {
		t.Run(filepath.Base(p), func(t *testing.T) { checkRPM(t, p, nil, glibc) })
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
func checkDeb(t *testing.T, deb string, binContent []byte, glibc string) string {
	t.Helper()
	needTool(t, "dpkg-deb")
	fields := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(run(t, "dpkg-deb", "-f", deb, "Package", "Architecture", "Depends", "Recommends"))), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		fields[k] = v
	}
	depends := strings.Split(fields["Depends"], ", ")
	if fields["Package"] != Name || fields["Architecture"] != "amd64" || !slices.Contains(depends, "adduser") ||
		!slices.Contains(depends, "init-system-helpers (>= 1.52)") || fields["Recommends"] != "logrotate" {
		t.Errorf("control fields %v", fields)
	}
	// The C library the binary's symbols need, not any libc6.
	if want := "libc6 (>= " + glibc + ")"; !slices.Contains(depends, want) {
		t.Errorf("Depends %q lacks %q", fields["Depends"], want)
	}
	if got := strings.Fields(string(run(t, "dpkg-deb", "-I", deb, "conffiles"))); !slices.Equal(got, []string{ConfigPath, LogrotatePath}) {
		t.Errorf("conffiles %q, want %s and %s", got, ConfigPath, LogrotatePath)
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
	checkEntries(t, got, "deb")
	checkContents(t, contents, binContent, "deb")

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
	for path, want := range filesOf("deb") {
		p := filepath.Join(root, path)
		if path == ConfigPath || path == LogrotatePath {
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
	for path := range filesOf("deb") {
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
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		b, _ := os.ReadFile(filepath.Join(control, s))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "systemctl") && !strings.Contains(l, "daemon-reload") {
				t.Errorf("%s calls systemctl for more than daemon-reload (deb-systemd-helper and deb-systemd-invoke do the rest): %s", s, l)
			}
		}
	}
	lintian(t, deb)
	return root
}

// lintian checks a .deb as Debian does, if lintian is installed
// (scripts/test-deps.sh installs it): no error.
func lintian(t *testing.T, deb string) {
	t.Helper()
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Log("lintian is not installed: the .deb is not checked with it")
		return
	}
	out, _ := exec.Command("lintian", "--tag-display-limit", "0", deb).CombinedOutput()
	var errs []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "E: ") {
			errs = append(errs, l)
		}
	}
	if len(errs) > 0 {
		t.Errorf("lintian: %d error(s):\n%s", len(errs), strings.Join(errs, "\n"))
	}
}

func checkEntries(t *testing.T, got map[string]entry, format string) {
	t.Helper()
	want := filesOf(format)
	for path, want := range want {
		if g, ok := got[path]; !ok {
			t.Errorf("%s is not in the package", path)
		} else if g != want {
			t.Errorf("%s: %v, want %v", path, g, want)
		}
	}
	// Nothing else but the parent directories, owned by root.
	for path, g := range got {
		if _, ok := want[path]; !ok && !(g.dir && g.owner == "root" && g.group == "root" && g.mode == 0o755 && isParent(path, want)) {
			t.Errorf("unexpected %s: %v", path, g)
		}
	}
}

func isParent(path string, files map[string]entry) bool {
	for p := range files {
		if strings.HasPrefix(p, path+"/") {
			return true
		}
	}
	return false
}

func checkContents(t *testing.T, contents map[string][]byte, binContent []byte, format string) {
	t.Helper()
	if binContent != nil && !bytes.Equal(contents[BinaryPath], binContent) {
		t.Errorf("%s is not the binary given (%d bytes, want %d)", BinaryPath, len(contents[BinaryPath]), len(binContent))
	}
	unit, copyright := DebUnitPath, DebCopyrightPath
	if format == "rpm" {
		unit, copyright = RPMUnitPath, RPMCopyrightPath
	}
	for _, f := range []struct{ path, source string }{
		{unit, unitSource}, {ConfigPath, "appliance.hcl"}, {LogrotatePath, "logrotate"}, {copyright, "copyright"},
	} {
		if !bytes.Equal(contents[f.path], readFile(t, f.source)) {
			t.Errorf("%s differs from %s", f.path, f.source)
		}
	}
}

// checkPostinst runs the Debian postinst with every command it may call
// replaced by a stub that only records its arguments (PATH), for a first
// install and an upgrade: nothing on this machine changes.
func checkPostinst(t *testing.T, script string) {
	t.Helper()
	stubs := t.TempDir()
	log := filepath.Join(stubs, "calls")
	for _, cmd := range []string{"adduser", "getent", "chown", "chmod", "systemctl", "deb-systemd-helper"} {
		src := fmt.Sprintf("#!/bin/sh\necho %s \"$@\" >> %s\n", cmd, log)
		switch cmd {
		case "getent":
			src += "exit 2\n" // no such user yet
		case "deb-systemd-helper":
			src += "case $1 in debian-installed|--quiet) exit 1;; esac\n" // never enabled
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
			"deb-systemd-helper update-state gitlab-secrets-appliance.service",
		}, []string{"deb-systemd-helper enable gitlab-secrets-appliance.service"}},
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

func checkRPM(t *testing.T, path string, binContent []byte, glibc string) {
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
	versions, _ := h.GetStrings(rpmutils.REQUIREVERSION)
	flags, _ := h.GetUint32s(rpmutils.REQUIREFLAGS)
	license, _ := h.GetString(rpmutils.LICENSE)
	if name != Name || arch != "x86_64" || license != License {
		t.Errorf("rpm %s %s, License %q", name, arch, license)
	}
	// Requires(pre): shadow-utils (the user), Requires(post/preun/postun):
	// systemd; glibc of the version the binary's symbols need.
	var reqs []string
	for i := range requires {
		r := requires[i]
		if flags[i]&(1<<9) != 0 {
			r += "(pre)"
		}
		if flags[i]&(1<<10) != 0 {
			r += "(post)"
		}
		if flags[i]&(1<<11) != 0 {
			r += "(preun)"
		}
		if flags[i]&(1<<12) != 0 {
			r += "(postun)"
		}
		if flags[i]&(4|8) == 4|8 {
			r += " >= " + versions[i]
		}
		reqs = append(reqs, r)
	}
	for _, w := range []string{"shadow-utils(pre)", "systemd(post)", "systemd(preun)", "systemd(postun)", "glibc >= " + glibc} {
		if !slices.Contains(reqs, w) {
			t.Errorf("rpm requires %v, not %s", reqs, w)
		}
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
		if (fi.Name() == ConfigPath || fi.Name() == LogrotatePath) && fi.Flags()&(rpmutils.RPMFILE_CONFIG|rpmutils.RPMFILE_NOREPLACE) != rpmutils.RPMFILE_CONFIG|rpmutils.RPMFILE_NOREPLACE {
			t.Errorf("%s is not %%config(noreplace): flags %#x", fi.Name(), fi.Flags())
		}
		if fi.Name() == RPMCopyrightPath && fi.Flags()&rpmutils.RPMFILE_LICENSE == 0 {
			t.Errorf("%s is not %%license: flags %#x", fi.Name(), fi.Flags())
		}
	}
	checkEntries(t, got, "rpm")
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
	checkContents(t, contents, binContent, "rpm")
}
