package main

import (
	"bytes"
	"compress/gzip"
	"embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// What the packages install, and where.
const (
	Name       = "gitlab-secrets-appliance"
	User       = "gitlab-secrets-appliance" // the service user and group
	BinaryPath = "/usr/bin/gitlab-secrets-appliance"
	// The unit: Debian's packages keep theirs in /lib (usrmerge links it
	// to /usr/lib), Red Hat's in /usr/lib.
	DebUnitPath   = "/lib/systemd/system/gitlab-secrets-appliance.service"
	RPMUnitPath   = "/usr/lib/systemd/system/gitlab-secrets-appliance.service"
	ConfigDir     = "/etc/gitlab-secrets-appliance"
	ConfigPath    = ConfigDir + "/appliance.hcl"
	DataDir       = "/var/lib/gitlab-secrets-appliance"
	LogDir        = "/var/log/gitlab-secrets-appliance"
	LogrotatePath = "/etc/logrotate.d/gitlab-secrets-appliance"
	// The copyright file: Debian's place for it, and rpm's %license.
	DocDir           = "/usr/share/doc/gitlab-secrets-appliance"
	DebCopyrightPath = DocDir + "/copyright"
	DebChangelogPath = DocDir + "/changelog.gz" // a native package's changelog
	RPMCopyrightPath = "/usr/share/licenses/gitlab-secrets-appliance/copyright"
)

// License is the rpm License tag (SPDX): the appliance's own code (the
// repository has no LICENSE yet: see the copyright file) and the licenses
// of what the binary compiles in, OpenBao (MPL-2.0) and the Go modules
// `go version -m` lists.
const License = "LicenseRef-gitlab-secrets-appliance AND MPL-2.0 AND Apache-2.0 AND BSD-2-Clause AND BSD-3-Clause AND CC0-1.0 AND ISC AND MIT"

// Formats are the package formats built by default.
var Formats = []string{"deb", "rpm"}

//go:embed appliance.hcl copyright logrotate scripts
var assets embed.FS

// Options say what to package.
type Options struct {
	Binary  string    // the appliance binary (built by make build)
	Unit    string    // the systemd unit file
	Version string    // a semantic version, e.g. 0.1.0 or 0.1.0-dev.20261201.gabc1234
	Arch    string    // GOARCH: amd64, arm64
	OutDir  string    // where the packages go
	MTime   time.Time // the files' modification time (reproducible builds)
}

// Build writes one package per format to o.OutDir and returns their paths.
// The binary must be a position-independent ELF executable (make build
// links it with -buildmode=pie); the packages require the C library
// version its symbols need (glibcNeeds).
func Build(o Options, formats ...string) ([]string, error) {
	if o.Binary == "" || o.Unit == "" || o.Version == "" || o.OutDir == "" {
		return nil, errors.New("binary, unit, version and output directory are required")
	}
	for _, f := range []string{o.Binary, o.Unit} {
		if st, err := os.Stat(f); err != nil {
			return nil, err
		} else if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", f)
		}
	}
	glibc, err := glibcNeeds(o.Binary)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}
	// nfpm reads the sample config and the scripts from files.
	tmp, err := os.MkdirTemp("", "gsa-nfpm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := os.CopyFS(tmp, assets); err != nil {
		return nil, err
	}
	var out []string
	for _, format := range formats {
		info := spec(o, format, tmp, glibc)
		p, err := nfpm.Get(format)
		if err != nil {
			return out, err
		}
		info = nfpm.WithDefaults(info)
		if format == "deb" {
			// A native package's changelog (lintian: no-changelog).
			if err := writeDebChangelog(filepath.Join(tmp, "changelog.gz"), info); err != nil {
				return out, err
			}
		}
		if err := nfpm.PrepareForPackager(info, format); err != nil {
			return out, fmt.Errorf("%s: %w", format, err)
		}
		pack := p.Package
		if format == "rpm" {
			pack = func(info *nfpm.Info, w io.Writer) error { return writeRPM(info, glibc, w) }
		}
		path := filepath.Join(o.OutDir, p.ConventionalFileName(info))
		if err := write(path, func(f *os.File) error { return pack(info, f) }); err != nil {
			return out, fmt.Errorf("%s: %w", format, err)
		}
		out = append(out, path)
	}
	return out, nil
}

// write creates path through a temporary file, so that a failed build
// leaves no half-written package behind.
func write(path string, fill func(*os.File) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".pkg-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := fill(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// spec is the package for format, with its scripts from assets (in dir).
// glibc is the C library version the binary needs ("" for none).
func spec(o Options, format, dir, glibc string) *nfpm.Info {
	owned := func(mode os.FileMode, owner, group string) *files.ContentFileInfo {
		return &files.ContentFileInfo{Mode: mode, Owner: owner, Group: group, MTime: o.MTime}
	}
	contents := files.Contents{
		{Source: o.Binary, Destination: BinaryPath, FileInfo: owned(0o755, "root", "root")},
		{Destination: ConfigDir, Type: files.TypeDir, FileInfo: owned(0o750, "root", User)},
		{Source: filepath.Join(dir, "appliance.hcl"), Destination: ConfigPath, Type: files.TypeConfigNoReplace, FileInfo: owned(0o640, "root", User)},
		{Source: filepath.Join(dir, "logrotate"), Destination: LogrotatePath, Type: files.TypeConfigNoReplace, FileInfo: owned(0o644, "root", "root")},
		{Destination: DataDir, Type: files.TypeDir, FileInfo: owned(0o700, User, User)},
		{Destination: LogDir, Type: files.TypeDir, FileInfo: owned(0o750, User, User)},
	}
	info := &nfpm.Info{
		Name:       Name,
		Arch:       o.Arch,
		Platform:   "linux",
		Version:    o.Version,
		Section:    "admin",
		Priority:   "optional",
		Maintainer: "GitLab <support@gitlab.com>",
		Vendor:     "GitLab",
		Homepage:   "https://gitlab.com/gitlab-org/gitlab-secrets-appliance",
		License:    License,
		MTime:      o.MTime,
		Description: "GitLab's secrets manager: an embedded OpenBao server on Raft storage\n" +
			"One node per GitLab front-end host; multi-unseal (an HSM over PKCS#11 or\n" +
			"operators' Shamir shares), run by systemd.",
		Overridables: nfpm.Overridables{Umask: 0o022},
	}
	s := filepath.Join(dir, "scripts", format)
	switch format {
	case "deb":
		contents = append(contents,
			&files.Content{Source: o.Unit, Destination: DebUnitPath, FileInfo: owned(0o644, "root", "root")},
			&files.Content{Source: filepath.Join(dir, "copyright"), Destination: DebCopyrightPath, FileInfo: owned(0o644, "root", "root")},
			&files.Content{Source: filepath.Join(dir, "changelog.gz"), Destination: DebChangelogPath, FileInfo: owned(0o644, "root", "root")})
		// The user is made in postinst (Debian's way: adduser is a
		// Depends, not a Pre-Depends); postinst then sets the owners. The
		// scripts use deb-systemd-helper and deb-systemd-invoke, as
		// dh_installsystemd's do.
		info.Depends = []string{"adduser", "init-system-helpers (>= 1.52)"}
		if glibc != "" {
			info.Depends = append(info.Depends, "libc6 (>= "+glibc+")")
		}
		info.Recommends = []string{"logrotate"}
		info.Suggests = []string{"softhsm2", "opensc"}
		info.Scripts = nfpm.Scripts{PostInstall: filepath.Join(s, "postinst"), PreRemove: filepath.Join(s, "prerm"), PostRemove: filepath.Join(s, "postrm")}
	case "rpm":
		contents = append(contents,
			&files.Content{Source: o.Unit, Destination: RPMUnitPath, FileInfo: owned(0o644, "root", "root")},
			&files.Content{Source: filepath.Join(dir, "copyright"), Destination: RPMCopyrightPath, Type: files.TypeRPMLicense, FileInfo: owned(0o644, "root", "root")})
		// rpm resolves owners by name at install: %pre makes the user
		// (Requires(pre), see writeRPM).
		if glibc != "" {
			info.Depends = []string{"glibc >= " + glibc}
		}
		info.Recommends = []string{"logrotate"}
		info.Suggests = []string{"softhsm", "opensc"}
		info.RPM.Group = "System Environment/Daemons"
		info.RPM.Summary = "GitLab's secrets manager: an embedded OpenBao server on Raft storage"
		info.Scripts = nfpm.Scripts{PreInstall: filepath.Join(s, "pre"), PostInstall: filepath.Join(s, "post"), PreRemove: filepath.Join(s, "preun"), PostRemove: filepath.Join(s, "postun")}
	}
	info.Contents = contents
	return info
}

// debVersion is the version nfpm gives a deb (and an rpm): the semantic
// version's prerelease after a tilde, which sorts before the release.
func debVersion(info *nfpm.Info) string {
	v := info.Version
	if info.Prerelease != "" {
		v += "~" + info.Prerelease
	}
	return v
}

// writeDebChangelog writes the changelog of a native Debian package (its
// version has no Debian revision): one entry for this build, gzip'd with
// no name or time in the gzip header, so the same commit gives the same
// bytes.
func writeDebChangelog(path string, info *nfpm.Info) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	fmt.Fprintf(zw, "%s (%s) unstable; urgency=medium\n\n"+
		"  * Built from gitlab-secrets-appliance %s. The changes are in the\n"+
		"    project's history: %s\n\n"+
		" -- %s  %s\n", info.Name, debVersion(info), info.Version, info.Homepage, info.Maintainer,
		info.MTime.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
