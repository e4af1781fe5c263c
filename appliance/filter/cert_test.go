package filter

import (
	"crypto/x509"
	"math/big"
	"testing"
)

// The presented certificate matches the login's only when serial, subject
// key id and authority key id all match the token's metadata (2.4.0 let
// either id do).
func TestCertMatches(t *testing.T) {
	login := &x509.Certificate{SerialNumber: big.NewInt(1001), SubjectKeyId: []byte{1, 2}, AuthorityKeyId: []byte{9, 9}}
	meta := map[string]string{"serial_number": "1001", "subject_key_id": "01:02", "authority_key_id": "09:09"}
	if !certMatches(login, meta) {
		t.Error("the login's own certificate does not match")
	}
	for name, c := range map[string]*x509.Certificate{
		"a sibling from the same CA":       {SerialNumber: big.NewInt(1002), SubjectKeyId: []byte{3, 4}, AuthorityKeyId: []byte{9, 9}},
		"a renewal (same key, new serial)": {SerialNumber: big.NewInt(1003), SubjectKeyId: []byte{1, 2}, AuthorityKeyId: []byte{9, 9}},
		"the same key under another CA":    {SerialNumber: big.NewInt(1001), SubjectKeyId: []byte{1, 2}, AuthorityKeyId: []byte{8, 8}},
		"no serial":                        {SubjectKeyId: []byte{1, 2}, AuthorityKeyId: []byte{9, 9}},
	} {
		if certMatches(c, meta) {
			t.Errorf("%s matches", name)
		}
	}
}
