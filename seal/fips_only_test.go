package seal

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"os"
	"os/exec"
	"strings"
	"testing"

	wrapping "github.com/openbao/go-kms-wrapping/v2"
)

// The seal's own cryptography is what FIPS 140-3's Go module approves:
// under GODEBUG=fips140=only, which refuses AES-GCM with a nonce the
// caller supplies, the seal initializes, seals, opens with shares, and
// wraps and unwraps a previous KEK. Run in a child process: fips140 is
// read once, at start.
func TestSealCryptoUnderFIPSOnly(t *testing.T) {
	if os.Getenv("GSA_SEAL_FIPS_ONLY_CHILD") == "1" {
		TestSealEncryptDecryptAndShares(t)
		kek := make([]byte, 32)
		rand.Read(kek)
		w, err := sealWrapped(kek, []byte("previous kek"))
		if err != nil {
			t.Fatalf("sealWrapped: %v", err)
		}
		if pt, err := openWrapped(kek, w); err != nil || string(pt) != "previous kek" {
			t.Fatalf("openWrapped: %q %v", pt, err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSealCryptoUnderFIPSOnly$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "GSA_SEAL_FIPS_ONLY_CHILD=1", "GODEBUG=fips140=only")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestSealCryptoUnderFIPSOnly") {
		t.Fatalf("under fips140=only: %v\n%s", err, out)
	}
}

// Blobs sealed before the seal drew its nonces through the module (a
// caller-supplied nonce, kept in the blob's Iv) still open.
func TestBlobsWithCallerNoncesStillOpen(t *testing.T) {
	ctx := context.Background()
	s := New(Options{})
	if _, err := s.Initialize(ctx, InitSpec{Shamir: true, Shares: 1, Threshold: 1}); err != nil {
		t.Fatal(err)
	}
	blob, err := s.Encrypt(ctx, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	kek := s.keks[s.cur.kekID()].key
	s.mu.Unlock()
	block, _ := aes.NewCipher(kek)
	gcm, _ := cipher.NewGCM(block)
	iv := make([]byte, gcm.NonceSize())
	rand.Read(iv)
	old := &wrapping.BlobInfo{Iv: iv, KeyInfo: blob.KeyInfo,
		Ciphertext: gcm.Seal(nil, iv, []byte("sealed the old way"), aad(blob.KeyInfo.WrappedKey, nil))}
	if pt, err := s.Decrypt(ctx, old); err != nil || string(pt) != "sealed the old way" {
		t.Fatalf("an old blob: %q %v", pt, err)
	}
	w := gcm.Seal(iv, iv, []byte("old previous kek"), []byte("gitlab-secrets-appliance previous kek"))
	if pt, err := openWrapped(kek, w); err != nil || string(pt) != "old previous kek" {
		t.Fatalf("an old wrapped KEK: %q %v", pt, err)
	}
}
