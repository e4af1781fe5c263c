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

// split makes n shares of kek (threshold t, generation gen) and the header
// that issued them.
func split(t *testing.T, kek []byte, cluster [clusterIDSize]byte, gen uint32, n, thr int) ([]string, *header) {
	t.Helper()
	shares, digests, err := splitKEK(kek, cluster, gen, n, thr, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := kekCheck(kek)
	return shares, &header{Version: 1, Cluster: hex.EncodeToString(cluster[:]), Gen: gen, Check: c[:],
		Shamir: &shamirEnrollment{Shares: n, Threshold: thr, Gen: gen, Digests: digests}}
}

func TestShareRoundTripAndRecovery(t *testing.T) {
	kek, cluster := newKEK(t)
	shares, h := split(t, kek, cluster, 7, 5, 3)
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
		if n, _ := c.progress(h); n != 0 {
			t.Fatalf("progress not reset after recovery: %d", n)
		}
	}
}

func TestShareRefusals(t *testing.T) {
	kek, cluster := newKEK(t)
	shares, h := split(t, kek, cluster, 2, 3, 2)
	otherKEK, otherCluster := newKEK(t)
	foreign, _ := split(t, otherKEK, otherCluster, 2, 3, 2)
	oldGen, _ := split(t, otherKEK, cluster, 1, 3, 2)
	newerGen, _ := split(t, otherKEK, cluster, 3, 3, 2)
	sameClusterOtherKey, _ := split(t, otherKEK, cluster, 2, 3, 2)

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
		{"same cluster, key of another split", sameClusterOtherKey[1], ErrUnknownShare},
		{"a generation never committed", newerGen[1], ErrUnknownShare},
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
			if n, _ := c.progress(h); n != 1 {
				t.Fatalf("a refused share changed the progress to %d", n)
			}
		})
	}
}

// Without a cluster header (a node still joining), shares are checked
// against each other and the key against the check value they carry.
func TestSharesWithoutHeader(t *testing.T) {
	kek, cluster := newKEK(t)
	shares, _ := split(t, kek, cluster, 1, 3, 2)
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
	shares, _ := split(t, kek, cluster, 1, 1, 1)
	if len(shares) != 1 {
		t.Fatal(shares)
	}
	var c collector
	s, _ := decodeShare(shares[0])
	if got, err := c.add(s, nil); err != nil || !bytes.Equal(got, kek) {
		t.Fatalf("1-of-1: %v", err)
	}
	if _, _, err := splitKEK(kek, cluster, 1, 3, 1, nil); err == nil {
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
