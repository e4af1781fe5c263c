package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/fips"
)

// FIPS 140-3 mode (crypto/fips140 on: a `make build-fips` binary) refuses
// what such a node cannot honour, each by its key: a TLS minimum below
// 1.2, certificates with keys Go's crypto/tls refuses in FIPS mode, and
// PGP encryption of shares and keys (see fips.CheckPGP). The PKCS#11 seal
// needs no rule: it uses CKM_AES_GCM, an approved mechanism, on the HSM.

// fipsTLSVersions are the tls_min_version values the normal build refuses
// as unsupported and a FIPS build refuses by name.
var fipsTLSVersions = map[string]uint16{"tls10": tls.VersionTLS10, "tls11": tls.VersionTLS11}

// fipsRefusesTLS tells Listener.validate to leave a TLS version below 1.2
// to validateFIPS, which says why a FIPS build refuses it.
func (v *validator) fipsRefusesTLS(version string) bool {
	_, old := fipsTLSVersions[version]
	return v.fips && old
}

// validateFIPS adds the FIPS 140-3 rules when v.fips is set.
func (c *Config) validateFIPS(v *validator) {
	if !v.fips {
		return
	}
	for i, l := range c.Listeners {
		key := fmt.Sprintf("listener[%d]", i)
		if tv, old := fipsTLSVersions[l.TLSMinVersion]; old {
			v.add(key+".tls_min_version", "%q: %v; this is a FIPS 140-3 build: use \"tls12\" or \"tls13\"", l.TLSMinVersion, fips.CheckTLSVersion(tv))
		}
		if !l.TLSDisable {
			v.fipsCertificates(key+".tls_cert_file", l.TLSCertFile)
			v.fipsCertificates(key+".tls_client_ca_file", l.TLSClientCAFile)
		}
	}
	if c.Raft != nil {
		for i, j := range c.Raft.RetryJoin {
			key := fmt.Sprintf("raft.retry_join[%d]", i)
			v.fipsCertificates(key+".leader_ca_cert_file", j.LeaderCACertFile)
			v.fipsCertificates(key+".leader_client_cert_file", j.LeaderClientCertFile)
		}
	}
	if c.GitLab != nil {
		v.fipsCertificates("gitlab.jwks_ca_file", c.GitLab.JWKSCAFile)
	}
}

// fipsCertificates refuses the first certificate in a PEM file whose key
// FIPS mode's TLS would refuse. A file that cannot be read or parsed is
// left to the other rules, which name that problem.
func (v *validator) fipsCertificates(key, path string) {
	if path == "" {
		return
	}
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() || st.Size() > MaxConfigSize {
		return
	}
	rest, err := os.ReadFile(path)
	if err != nil {
		return
	}
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			continue
		}
		if err := fips.CheckCertificate(c); err != nil {
			v.add(key, "%s: %v (Go's crypto/tls refuses it in FIPS 140-3 mode)", path, err)
			return
		}
	}
}
