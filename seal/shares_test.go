package seal

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"testing"

	wrapping "github.com/openbao/go-kms-wrapping/v2"
)

func newKEK(t *testing.T) ([]byte, [clusterIDSize]byte) {
	t.Helper()
	kek := make([]byte, kekSize)
	var c [clusterIDSize]byte
	rand.Read(kek)
	rand.Read(c[:])
	return kek, c
}

func TestShareRoundTripAndRecovery(t *testing.T) {
	kek, cluster := newKEK(t)
	shares, err := splitKEK(kek, cluster, 7, 5, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &header{Version: 1, Cluster: hex.EncodeToString(cluster[:]), Gen: 7, Shamir: &shamirEnrollment{Shares: 5, Threshold: 3, Gen: 7}}
	// Any 3 of 5 recover the key; fewer do not.
	for _, pick := range [][]int{{0, 1, 2}, {4, 2, 0}, {1, 3, 4}} {
		var c collector
		var got []byte
		for i, idx := range pick {
			s, err := decodeShare(shares[idx])
			if err != nil {
				t.Fatal(err)
			}
			got, err = c.add(s, h)
			if err != nil {
				t.Fatalf("share %d: %v", idx, err)
			}
			if (got != nil) != (i == 2) {
				t.Fatalf("after %d shares recovered=%v", i+1, got != nil)
			}
		}
		if !bytes.Equal(got, kek) {
			t.Fatalf("shares %v recovered another key", pick)
		}
		if n, _ := c.progress(); n != 0 {
			t.Fatalf("progress not reset after recovery: %d", n)
		}
	}
}

func TestShareRefusals(t *testing.T) {
	kek, cluster := newKEK(t)
	shares, _ := splitKEK(kek, cluster, 2, 3, 2, nil)
	otherKEK, otherCluster := newKEK(t)
	foreign, _ := splitKEK(otherKEK, otherCluster, 2, 3, 2, nil)
	oldGen, _ := splitKEK(otherKEK, cluster, 1, 3, 2, nil)
	sameClusterOtherKey, _ := splitKEK(otherKEK, cluster, 2, 3, 2, nil)
	h := &header{Version: 1, Cluster: hex.EncodeToString(cluster[:]), Gen: 2, Shamir: &shamirEnrollment{Shares: 3, Threshold: 2, Gen: 2}}

	raw, _ := base64.StdEncoding.DecodeString(shares[1])
	raw[30] ^= 0x10
	corrupt := base64.StdEncoding.EncodeToString(raw)

	cases := []struct {
		name   string
		second string
		want   error
	}{
		{"duplicate", shares[0], ErrDuplicateShare},
		{"corrupted", corrupt, ErrCorruptShare},
		{"another cluster", foreign[1], ErrForeignShare},
		{"voided generation", oldGen[1], ErrVoidShare},
		{"malformed", "bm90IGEgc2hhcmU=", ErrMalformedShare},
		{"not base64", "%%%", ErrMalformedShare},
		{"same cluster, key of another split", sameClusterOtherKey[1], ErrCorruptShare},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c collector
			first, _ := decodeShare(shares[0])
			if _, err := c.add(first, h); err != nil {
				t.Fatal(err)
			}
			s, err := decodeShare(tc.second)
			if err == nil {
				_, err = c.add(s, h)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("want %v, got %v", tc.want, err)
			}
			if n, _ := c.progress(); n != 1 {
				t.Fatalf("a refused share changed the progress to %d", n)
			}
		})
	}
}

// Without a cluster header (a node still joining), shares are checked
// against each other and the key against the check value they carry.
func TestSharesWithoutHeader(t *testing.T) {
	kek, cluster := newKEK(t)
	shares, _ := splitKEK(kek, cluster, 1, 3, 2, nil)
	var c collector
	for i, text := range shares[:2] {
		s, _ := decodeShare(text)
		got, err := c.add(s, nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 && !bytes.Equal(got, kek) {
			t.Fatal("did not recover the key")
		}
	}
}

func TestOneOfOneShare(t *testing.T) {
	kek, cluster := newKEK(t)
	shares, err := splitKEK(kek, cluster, 1, 1, 1, nil)
	if err != nil || len(shares) != 1 {
		t.Fatal(err)
	}
	var c collector
	s, _ := decodeShare(shares[0])
	if got, err := c.add(s, nil); err != nil || !bytes.Equal(got, kek) {
		t.Fatalf("1-of-1: %v", err)
	}
	if _, err := splitKEK(kek, cluster, 1, 3, 1, nil); err == nil {
		t.Fatal("1 of 3 accepted")
	}
}

// The seal as OpenBao uses it: encrypt, decrypt, header bound to the blob,
// and a fresh Seal recovering the key from shares.
func TestSealEncryptDecryptAndShares(t *testing.T) {
	ctx := context.Background()
	s := New(Options{})
	if _, err := s.Encrypt(ctx, []byte("x")); !errors.Is(err, ErrLocked) {
		t.Fatalf("encrypt before init: %v", err)
	}
	shares, err := s.Initialize(ctx, InitSpec{Shamir: true, Shares: 3, Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	blob, err := s.Encrypt(ctx, []byte("root key"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob.Ciphertext, []byte("root key")) {
		t.Fatal("plaintext in the blob")
	}

	fresh := New(Options{StoredHeader: func(context.Context) ([]byte, error) { return blob.KeyInfo.WrappedKey, nil }})
	if _, err := fresh.Decrypt(ctx, blob); !errors.Is(err, ErrLocked) {
		t.Fatalf("decrypt without the key: %v", err)
	}
	for _, sh := range shares[1:] {
		if _, err := fresh.SubmitShare(ctx, sh); err != nil {
			t.Fatal(err)
		}
	}
	pt, err := fresh.Decrypt(ctx, blob)
	if err != nil || string(pt) != "root key" || fresh.LastUsed() != MechanismShamir {
		t.Fatalf("decrypt after shares: %q %v", pt, err)
	}

	blob.KeyInfo = &wrapping.KeyInfo{
		KeyId:      blob.KeyInfo.KeyId,
		WrappedKey: bytes.Replace(blob.KeyInfo.WrappedKey, []byte(`"gen":1`), []byte(`"gen":9`), 1),
	}
	if _, err := fresh.Decrypt(ctx, blob); err == nil {
		t.Fatal("a blob with an altered header decrypted")
	}
}
