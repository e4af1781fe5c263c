package main

import (
	"embed"
	"errors"
	"fmt"
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
	UnitPath   = "/lib/systemd/system/gitlab-secrets-appliance.service"
	ConfigDir  = "/etc/gitlab-secrets-appliance"
	ConfigPath = ConfigDir + "/appliance.hcl"
	DataDir    = "/var/lib/gitlab-secrets-appliance"
	LogDir     = "/var/log/gitlab-secrets-appliance"
)

// Formats are the package formats built by default.
var Formats = []string{"deb", "rpm"}

//go:embed appliance.hcl scripts
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
		info := spec(o, format, tmp)
		p, err := nfpm.Get(format)
		if err != nil {
			return out, err
		}
		if err := nfpm.PrepareForPackager(nfpm.WithDefaults(info), format); err != nil {
			return out, fmt.Errorf("%s: %w", format, err)
		}
		path := filepath.Join(o.OutDir, p.ConventionalFileName(info))
		if err := write(path, func(f *os.File) error { return p.Package(info, f) }); err != nil {
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
func spec(o Options, format, dir string) *nfpm.Info {
	owned := func(mode os.FileMode, owner, group string) *files.ContentFileInfo {
		return &files.ContentFileInfo{Mode: mode, Owner: owner, Group: group, MTime: o.MTime}
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
		MTime:      o.MTime,
		Description: "GitLab's secrets manager: an embedded OpenBao server on Raft storage\n" +
			"One node per GitLab front-end host; multi-unseal (an HSM over PKCS#11 or\n" +
			"operators' Shamir shares), run by systemd.",
		Overridables: nfpm.Overridables{
			Umask: 0o022,
			Contents: files.Contents{
				{Source: o.Binary, Destination: BinaryPath, FileInfo: owned(0o755, "root", "root")},
				{Source: o.Unit, Destination: UnitPath, FileInfo: owned(0o644, "root", "root")},
				{Destination: ConfigDir, Type: files.TypeDir, FileInfo: owned(0o750, "root", User)},
				{Source: filepath.Join(dir, "appliance.hcl"), Destination: ConfigPath, Type: files.TypeConfigNoReplace, FileInfo: owned(0o640, "root", User)},
				{Destination: DataDir, Type: files.TypeDir, FileInfo: owned(0o700, User, User)},
				{Destination: LogDir, Type: files.TypeDir, FileInfo: owned(0o750, User, User)},
			},
		},
	}
	s := filepath.Join(dir, "scripts", format)
	switch format {
	case "deb":
		// The user is made in postinst (Debian's way: adduser is a
		// Depends, not a Pre-Depends); postinst then sets the owners.
		info.Depends = []string{"adduser", "libc6"}
		info.Suggests = []string{"softhsm2", "opensc"}
		info.Scripts = nfpm.Scripts{PostInstall: filepath.Join(s, "postinst"), PreRemove: filepath.Join(s, "prerm"), PostRemove: filepath.Join(s, "postrm")}
	case "rpm":
		// rpm resolves owners by name at install: %pre makes the user.
		info.Depends = []string{"shadow-utils", "glibc"}
		info.Suggests = []string{"softhsm", "opensc"}
		info.RPM.Group = "System Environment/Daemons"
		info.RPM.Summary = "GitLab's secrets manager: an embedded OpenBao server on Raft storage"
		info.Scripts = nfpm.Scripts{PreInstall: filepath.Join(s, "pre"), PostInstall: filepath.Join(s, "post"), PreRemove: filepath.Join(s, "preun"), PostRemove: filepath.Join(s, "postun")}
	}
	return info
}
