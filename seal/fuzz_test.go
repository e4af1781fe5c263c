package seal

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"testing"

	wrapping "github.com/openbao/go-kms-wrapping/v2"
)

// Share decoding and the collector never panic, and a share that decodes
// encodes back to itself. The seed corpus is in testdata/fuzz.
func FuzzDecodeShare(f *testing.F) {
	kek := bytes.Repeat([]byte{7}, kekSize)
	var cluster [clusterIDSize]byte
	copy(cluster[:], "gsafuzz!")
	shares, digests, _ := splitKEK(kek, cluster, 3, 3, 2, nil)
	for _, s := range shares {
		f.Add(s)
	}
	raw, _ := base64.StdEncoding.DecodeString(shares[0])
	f.Add(hex.EncodeToString(raw))
	f.Add("")
	f.Add("%%%")
	f.Add(base64.StdEncoding.EncodeToString(make([]byte, shareSize)))
	c := kekCheck(kek)
	h := &header{Version: 1, Cluster: hex.EncodeToString(cluster[:]), Gen: 3, Check: c[:],
		Shamir: &shamirEnrollment{Shares: 3, Threshold: 2, Gen: 3, Digests: digests}}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := decodeShare(text)
		if err != nil {
			return
		}
		again, err := decodeShare(s.encode())
		if err != nil || !again.equal(s) {
			t.Fatalf("a decoded share does not encode back: %v", err)
		}
		var col collector
		col.add(s, h)
		col.add(s, nil)
		col.progress(h)
	})
}

// Header decoding never panics, and a blob with any header never opens
// under the wrong key or an altered header.
func FuzzDecodeHeader(f *testing.F) {
	s := New(Options{})
	ctx := context.Background()
	s.Initialize(ctx, InitSpec{Shamir: true, Shares: 3, Threshold: 2})
	blob, _ := s.Encrypt(ctx, []byte("stored keys"))
	f.Add(blob.KeyInfo.WrappedKey)
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"v":1,"cluster":"0011223344556677","check":"AAAAAAAAAAA=","previous":[{"check":"","wrapped":""}]}`))
	f.Add([]byte("null"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, err := decodeHeader(raw)
		if err != nil {
			return
		}
		h.keyID()
		h.mechanisms()
		h.next(h.changedTime())
		if !bytes.Equal(raw, blob.KeyInfo.WrappedKey) {
			b := &wrapping.BlobInfo{Ciphertext: blob.Ciphertext, Iv: blob.Iv,
				KeyInfo: &wrapping.KeyInfo{KeyId: blob.KeyInfo.KeyId, WrappedKey: raw}}
			if _, err := s.Decrypt(ctx, b); err == nil {
				t.Fatal("a blob with another header opened")
			}
		}
	})
}

// Whatever an unauthenticated client sends to a seal change in progress
// (authorize, verify), nothing panics and nothing commits.
func FuzzChangeInputs(f *testing.F) {
	f.Add("", "")
	f.Add("AAAA", "bm90IGEgc2hhcmU=")
	f.Add(base64.StdEncoding.EncodeToString(make([]byte, shareSize)), hex.EncodeToString(make([]byte, 33)))
	st := &store{}
	s := New(Options{StoredHeader: st.header, Persist: st.persist})
	ctx := context.Background()
	shares, _ := s.Initialize(ctx, InitSpec{Shamir: true, Shares: 3, Threshold: 2})
	st.keys, _ = s.Encrypt(ctx, []byte("stored keys"))
	f.Add(shares[0], shares[1])
	f.Fuzz(func(t *testing.T, key, share string) {
		for _, with := range []string{AuthorizeShares, AuthorizeRecoveryKeys} {
			ch, err := s.StartChange(ctx, ChangeRequest{Operation: RotateShares, Shares: 3, Threshold: 2, AuthorizeWith: with},
				&RecoveryKeys{Threshold: 1, Verify: func(context.Context, []byte) error { return ErrWrongRecoveryKeys }})
			if err != nil {
				t.Fatal(err)
			}
			s.AuthorizeChange(ctx, ch.Nonce, key)
			s.VerifyChange(ctx, ch.Nonce, share)
			s.AuthorizeChange(ctx, key, share)
			s.CancelChange("")
		}
		if st.commits != 0 {
			t.Fatal("fuzzed input committed a seal change")
		}
	})
}
