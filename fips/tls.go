package fips

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
)

// MinTLSVersion is the oldest TLS version FIPS 140-3 mode allows (NIST SP
// 800-52r2; Go's crypto/tls offers only TLS 1.2 and 1.3 in FIPS mode).
const MinTLSVersion = tls.VersionTLS12

// CheckTLSVersion refuses a minimum TLS version below 1.2.
func CheckTLSVersion(v uint16) error {
	if v >= MinTLSVersion {
		return nil
	}
	return fmt.Errorf("%s is not allowed in FIPS 140-3 mode: TLS 1.2 and 1.3 only (NIST SP 800-52r2; Go's crypto/tls refuses older versions in FIPS mode)", tls.VersionName(v))
}

// CheckCertificate refuses a certificate whose public key Go's crypto/tls
// does not accept in FIPS 140-3 mode (it would fail every handshake with
// "tls: no FIPS compatible certificate chains found"): RSA below 2048 bits,
// ECDSA on a curve other than P-256, P-384 or P-521, anything but RSA,
// ECDSA and Ed25519.
func CheckCertificate(c *x509.Certificate) error {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 {
			return fmt.Errorf("%s has a %d-bit RSA key; FIPS 140-3 mode needs RSA of 2048 bits or more, ECDSA P-256/P-384/P-521 or Ed25519", describe(c), n)
		}
		return nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("%s has an ECDSA key on %s; FIPS 140-3 mode needs P-256, P-384 or P-521", describe(c), k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	}
	return fmt.Errorf("%s has a %s key; FIPS 140-3 mode needs RSA (2048 bits or more), ECDSA P-256/P-384/P-521 or Ed25519", describe(c), c.PublicKeyAlgorithm)
}

func describe(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return "certificate " + s
	}
	return "a certificate"
}
