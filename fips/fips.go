// Package fips is the appliance's FIPS 140-3 mode: whether the binary was
// built against a frozen Go Cryptographic Module (GOFIPS140, `make
// build-fips`), whether Go's cryptography runs in FIPS 140-3 mode, the
// start-up self-check, and what a node in FIPS mode cannot offer.
//
// A GOFIPS140 build defaults to GODEBUG=fips140=on: nothing else has to be
// set. The self-check refuses two ways of running it that would not be what
// an operator asked for: FIPS mode switched off (GODEBUG=fips140=off), and
// GODEBUG=fips140=only, under which OpenBao 2.4 cannot work (its barrier
// and this appliance's seal use AES-GCM with nonces they make themselves,
// which only-mode refuses).
package fips

import (
	"crypto/fips140"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
)

// Modes of Go's FIPS 140-3 support, as GODEBUG's fips140 names them.
const (
	ModeOff  = "off"
	ModeOn   = "on"
	ModeOnly = "only"
)

// Errors of the self-check.
var (
	// ErrModeOff: a binary built for FIPS 140-3 runs with FIPS mode off.
	ErrModeOff = errors.New("FIPS 140-3 mode is off")
	// ErrModeOnly: GODEBUG=fips140=only, which OpenBao 2.4 cannot run under.
	ErrModeOnly = errors.New("GODEBUG=fips140=only cannot be used with OpenBao 2.4")
	// ErrPGP refuses PGP encryption of shares and keys in FIPS mode.
	ErrPGP = errors.New("PGP encryption is not available in FIPS 140-3 mode")
)

// Info is what `version` and `status` say about FIPS 140-3.
type Info struct {
	// Enabled is crypto/fips140.Enabled(): Go's cryptography runs in FIPS
	// 140-3 mode (approved algorithms, self-tests, restricted TLS).
	Enabled bool `json:"enabled"`
	// Mode is the fips140 GODEBUG setting in effect: off, on or only.
	Mode string `json:"mode"`
	// Module is the Go Cryptographic Module's version: "v1.0.0" for a
	// GOFIPS140=v1.0.0 build, "latest" for the module in Go's own tree
	// (not a validated snapshot).
	Module string `json:"module"`
	// Build is the GOFIPS140 setting the binary was built with (for
	// example "v1.0.0-c2097c7c"), empty for a normal build.
	Build string `json:"build,omitempty"`
}

// Enabled reports whether Go's cryptography runs in FIPS 140-3 mode.
func Enabled() bool { return fips140.Enabled() }

// Mode is the fips140 GODEBUG setting in effect: off, on or only.
func Mode() string {
	switch {
	case !fips140.Enabled():
		return ModeOff
	case fips140.Enforced():
		return ModeOnly
	default:
		return ModeOn
	}
}

// Build is the GOFIPS140 setting the running binary was built with, from
// its build information ("" for a normal build, or when the binary carries
// no build information).
func Build() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	return buildSetting(bi)
}

func buildSetting(bi *debug.BuildInfo) string {
	for _, s := range bi.Settings {
		if s.Key == "GOFIPS140" && s.Value != "off" {
			return s.Value
		}
	}
	return ""
}

// Current describes the running process.
func Current() Info {
	return Info{Enabled: Enabled(), Mode: Mode(), Module: fips140.Version(), Build: Build()}
}

// String is the line `version` prints: "FIPS 140-3: on, Go Cryptographic
// Module v1.0.0" or "FIPS 140-3: off".
func (i Info) String() string {
	if !i.Enabled {
		return "FIPS 140-3: off"
	}
	s := "FIPS 140-3: " + i.Mode + ", Go Cryptographic Module " + i.Module
	if i.Build == "" {
		s += " (not a validated snapshot: build with make build-fips)"
	}
	return s
}

// SelfCheck is the start-up check: a binary built for FIPS 140-3 must run
// in FIPS mode, and no binary runs with GODEBUG=fips140=only. The error says
// what to change.
func SelfCheck() error { return Current().check(os.Getenv("GODEBUG")) }

func (i Info) check(godebug string) error {
	if i.Mode == ModeOnly {
		return fmt.Errorf("%w: its barrier and the appliance's seal encrypt with AES-GCM under nonces they generate themselves "+
			"(crypto/cipher.NewGCM), which fips140=only refuses, so no node could initialize or unseal; "+
			"use fips140=on (a FIPS build's default: remove fips140 from GODEBUG)", ErrModeOnly)
	}
	if i.Build != "" && !i.Enabled {
		return fmt.Errorf("%w: this binary is built for FIPS 140-3 (GOFIPS140=%s) and refuses to run without it, but GODEBUG=%q turns it off; "+
			"remove fips140=off from GODEBUG (check the environment and the systemd unit's Environment=), "+
			"or install the normal build if FIPS 140-3 is not required", ErrModeOff, i.Build, godebug)
	}
	return nil
}

// CheckPGP refuses PGP encryption of shares or keys (the request key
// named key, e.g. "pgp_keys") in FIPS mode. OpenBao encrypts to PGP keys
// with ProtonMail's go-crypto OpenPGP: the session key is wrapped with RSA
// PKCS#1 v1.5 (not approved for key transport) or ECDH/X25519 and RFC 3394
// key wrap in go-crypto's own code, and the data is encrypted in OpenPGP's
// CFB mode (go-crypto's own) with a SHA-1 modification code: none of it is
// an approved service of the Go Cryptographic Module.
func CheckPGP(key string, keys []string) error {
	return checkPGP(Enabled(), key, keys)
}

func checkPGP(enabled bool, key string, keys []string) error {
	if !enabled || len(keys) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w: OpenPGP as OpenBao implements it (ProtonMail go-crypto: RSA PKCS#1 v1.5 or X25519 key transport, "+
		"OpenPGP CFB, SHA-1) is not approved; leave out the PGP keys and hand each share to its operator "+
		"another way (for example --share-dir, one 0600 file per share)", key, ErrPGP)
}
