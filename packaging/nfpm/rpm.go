package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/google/rpmpack"
	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/files"
)

// rpm's script dependency flags (rpmds.h, RPMSENSE_SCRIPT_*): what a
// scriptlet needs installed before it runs, as Requires(pre) and the like
// declare it. nFPM's rpm packager cannot declare them, so writeRPM builds
// the rpm with rpmpack (which nFPM uses) itself.
const (
	sensePre    = 1 << 9
	sensePost   = 1 << 10
	sensePreun  = 1 << 11
	sensePostun = 1 << 12
)

// scriptRequires are the rpm's Requires(pre), Requires(post) and so on:
// %pre makes the service user (getent, groupadd, useradd: shadow-utils),
// %post, %preun and %postun talk to systemd (systemctl).
var scriptRequires = []*rpmpack.Relation{
	{Name: "shadow-utils", Sense: rpmpack.SenseAny | sensePre},
	{Name: "systemd", Sense: rpmpack.SenseAny | sensePost},
	{Name: "systemd", Sense: rpmpack.SenseAny | sensePreun},
	{Name: "systemd", Sense: rpmpack.SenseAny | sensePostun},
}

// rpmArch is rpm's name for a GOARCH.
var rpmArch = map[string]string{"amd64": "x86_64", "arm64": "aarch64"}

// writeRPM writes info (prepared by nfpm.PrepareForPackager for "rpm") as
// an rpm, as nFPM's packager would, plus the scriptlets' own requirements
// (scriptRequires). glibc is the C library version the binary needs.
func writeRPM(info *nfpm.Info, glibc string, w io.Writer) error {
	arch, ok := rpmArch[info.Arch]
	if !ok && slices.Contains(slices.Collect(maps.Values(rpmArch)), info.Arch) {
		arch, ok = info.Arch, true // already rpm's name
	}
	if !ok {
		return fmt.Errorf("no rpm architecture for GOARCH %q", info.Arch)
	}
	meta := rpmpack.RPMMetaData{
		Name:        info.Name,
		Summary:     info.RPM.Summary,
		Description: info.Description,
		Version:     strings.ReplaceAll(debVersion(info), "-", "_"),
		Release:     "1",
		Arch:        arch,
		OS:          "linux",
		Vendor:      info.Vendor,
		URL:         info.Homepage,
		Packager:    info.Maintainer,
		Group:       info.RPM.Group,
		Licence:     info.License,
		// Not this machine's name: the same commit gives the same rpm.
		BuildHost:  "localhost",
		Compressor: "gzip",
		Epoch:      rpmpack.NoEpoch,
		BuildTime:  info.MTime,
	}
	for _, list := range []struct {
		rel  *rpmpack.Relations
		from []string
	}{{&meta.Requires, info.Depends}, {&meta.Recommends, info.Recommends}, {&meta.Suggests, info.Suggests}} {
		for _, d := range list.from {
			if err := list.rel.Set(d); err != nil {
				return fmt.Errorf("rpm dependency %q: %w", d, err)
			}
		}
	}
	meta.Requires = append(meta.Requires, scriptRequires...)
	r, err := rpmpack.NewRPM(meta)
	if err != nil {
		return err
	}
	mtime := uint32(info.MTime.Unix())
	for _, c := range info.Contents {
		f := rpmpack.RPMFile{Name: strings.TrimSuffix(c.Destination, "/"), Mode: uint(c.FileInfo.Mode.Perm()), Owner: c.FileInfo.Owner, Group: c.FileInfo.Group, MTime: mtime}
		switch c.Type {
		case files.TypeImplicitDir:
			continue // rpm needs no parent directories it does not own
		case files.TypeDir:
			f.Mode |= 0o40000
			r.AddFile(f)
			continue
		case files.TypeConfigNoReplace:
			f.Type = rpmpack.ConfigFile | rpmpack.NoReplaceFile
		case files.TypeConfig:
			f.Type = rpmpack.ConfigFile
		case files.TypeRPMLicense, files.TypeRPMLicence:
			f.Type = rpmpack.LicenceFile
		case files.TypeFile, "":
		default:
			return fmt.Errorf("%s: file type %q is not supported", c.Destination, c.Type)
		}
		if f.Body, err = os.ReadFile(c.Source); err != nil {
			return err
		}
		r.AddFile(f)
	}
	for _, s := range []struct {
		path string
		add  func(string)
	}{{info.Scripts.PreInstall, r.AddPrein}, {info.Scripts.PostInstall, r.AddPostin}, {info.Scripts.PreRemove, r.AddPreun}, {info.Scripts.PostRemove, r.AddPostun}} {
		if s.path == "" {
			continue
		}
		b, err := os.ReadFile(s.path)
		if err != nil {
			return err
		}
		s.add(string(b))
	}
	return r.Write(w)
}
