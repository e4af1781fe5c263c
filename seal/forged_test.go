package seal

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"
)

// forge makes a share with a valid checksum that claims the given cluster,
// generation and threshold (all public in status), with a made-up key
// check and part: what any network client can send a sealed node.
func forge(cluster [clusterIDSize]byte, gen uint32, threshold int, x byte) string {
	s := share{cluster: cluster, gen: gen, threshold: threshold, part: make([]byte, partSize)}
	rand.Read(s.check[:])
	rand.Read(s.part)
	s.part[partSize-1] = x
	return s.encode()
}

// A sealed node with its cluster's header refuses every forged share on
// its own, so forged shares sent before, between and after the operators'
// genuine ones change nothing: threshold 255 (which made every genuine
// share fail), threshold 1 (which set "recovered" and last_used), and the
// x coordinates of genuine shares (which made them "duplicates").
func TestForgedSharesChangeNothing(t *testing.T) {
	ctx := context.Background()
	kek, cluster := newKEK(t)
	shares, h := split(t, kek, cluster, 4, 5, 3)
	blob, err := encryptWith(h, kek, []byte("root key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	stored := func(context.Context) ([]byte, error) { return h.encode(), nil }
	x := func(text string) byte { s, _ := decodeShare(text); return s.x() }

	for _, tc := range []struct {
		name   string
		forged []string
	}{
		{"threshold 255 first", []string{forge(cluster, 4, 255, 1)}},
		{"threshold 1", []string{forge(cluster, 4, 1, 9)}},
		{"a genuine share's x coordinate", []string{forge(cluster, 4, 3, x(shares[0])), forge(cluster, 4, 3, x(shares[3]))}},
		{"the current generation, every x", func() (out []string) {
			for i := 1; i <= 255; i++ {
				out = append(out, forge(cluster, 4, 3, byte(i)))
			}
			return out
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{StoredHeader: stored})
			for _, f := range tc.forged {
				p, err := s.SubmitShare(ctx, f)
				if !errors.Is(err, ErrUnknownShare) || p.Submitted != 0 || p.Recovered {
					t.Fatalf("forged share: %+v %v", p, err)
				}
			}
			for i, g := range []string{shares[0], shares[3], shares[2]} {
				p, err := s.SubmitShare(ctx, g)
				if err != nil {
					t.Fatalf("genuine share %d refused after forged ones: %v", i, err)
				}
				if i < 2 {
					// Forged shares between genuine ones change nothing either.
					for _, f := range tc.forged {
						if _, err := s.SubmitShare(ctx, f); err == nil {
							t.Fatal("forged share accepted")
						}
					}
					if p.Submitted != i+1 || p.Recovered {
						t.Fatalf("after genuine share %d: %+v", i, p)
					}
				} else if !p.Recovered {
					t.Fatalf("3 genuine shares did not recover: %+v", p)
				}
			}
			if pt, err := s.Decrypt(ctx, blob); err != nil || string(pt) != "root key" || s.LastUsed() != MechanismShamir {
				t.Fatalf("decrypt: %q %v (last used %q)", pt, err, s.LastUsed())
			}
		})
	}
}

// A node joining its cluster has no header until the leader's challenge
// arrives; once it has seen it (Decrypt asked for the KEK), forged shares
// are refused there too. Before that, forged claims are kept apart from
// the genuine shares' and cannot spoil them.
func TestForgedSharesWhileJoining(t *testing.T) {
	ctx := context.Background()
	kek, cluster := newKEK(t)
	shares, h := split(t, kek, cluster, 2, 3, 2)
	challenge, _ := encryptWith(h, kek, []byte("challenge"), nil)

	early := New(Options{})
	for _, f := range []string{forge(cluster, 2, 255, 1), forge(cluster, 2, 1, 7), forge(cluster, 2, 2, 3)} {
		if p, err := early.SubmitShare(ctx, f); err != nil && !errors.Is(err, ErrWrongShares) || p.Recovered {
			t.Fatalf("loose forged share: %+v %v", p, err)
		}
	}
	for _, g := range shares[:2] {
		if _, err := early.SubmitShare(ctx, g); err != nil {
			t.Fatalf("genuine share after forged claims: %v", err)
		}
	}
	if pt, err := early.Decrypt(ctx, challenge); err != nil || string(pt) != "challenge" {
		t.Fatalf("joining node before the header: %q %v", pt, err)
	}

	late := New(Options{})
	if _, err := late.Decrypt(ctx, challenge); !errors.Is(err, ErrLocked) {
		t.Fatalf("challenge without the key: %v", err)
	}
	if _, err := late.SubmitShare(ctx, forge(cluster, 2, 2, 1)); !errors.Is(err, ErrUnknownShare) {
		t.Fatalf("forged share once the leader's header is known: %v", err)
	}
	for _, g := range shares[1:] {
		if _, err := late.SubmitShare(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := late.Decrypt(ctx, challenge); err != nil {
		t.Fatal(err)
	}
}

// Headers written before share digests existed: a share must still match
// the header's threshold and key check, whatever the first share said.
func TestLegacyHeaderChecksThresholdAndCheck(t *testing.T) {
	kek, cluster := newKEK(t)
	shares, h := split(t, kek, cluster, 1, 3, 2)
	h.Shamir.Digests = nil
	var c collector
	for _, f := range []string{forge(cluster, 1, 255, 1), forge(cluster, 1, 1, 2), forge(cluster, 1, 2, 3)} {
		s, _ := decodeShare(f)
		if _, err := c.add(s, h); !errors.Is(err, ErrUnknownShare) {
			t.Fatalf("forged share against a legacy header: %v", err)
		}
	}
	var got []byte
	for _, g := range shares[1:] {
		s, _ := decodeShare(g)
		var err error
		if got, err = c.add(s, h); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, kek) {
		t.Fatal("genuine shares did not recover the key")
	}
}

// A reset of the unseal attempt needs one of its shares: with the header,
// a forged share (valid checksum, public cluster id and generation) resets
// nothing and a genuine one discards the attempt without being counted;
// while joining (no header), a reset discards only the shares that claim
// the same split as the share it carries.
func TestResetNeedsAShareOfTheAttempt(t *testing.T) {
	ctx := context.Background()
	kek, cluster := newKEK(t)
	shares, h := split(t, kek, cluster, 4, 5, 3)
	stored := func(context.Context) ([]byte, error) { return h.encode(), nil }

	s := New(Options{StoredHeader: stored})
	for _, g := range shares[:2] {
		if _, err := s.SubmitShare(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []string{"", "not a share", forge(cluster, 4, 3, 1), forge(cluster, 4, 255, 2)} {
		if err := s.ResetShares(ctx, bad); err == nil {
			t.Fatalf("reset with %q accepted", bad)
		}
		if p := s.progress(); p.Submitted != 2 {
			t.Fatalf("a refused reset changed the progress: %+v", p)
		}
	}
	if err := s.ResetShares(ctx, shares[4]); err != nil {
		t.Fatalf("reset with a genuine share: %v", err)
	}
	if p := s.progress(); p.Submitted != 0 || p.Recovered {
		t.Fatalf("after a genuine reset: %+v", p)
	}
	for i, g := range shares[2:] {
		p, err := s.SubmitShare(ctx, g)
		if err != nil || p.Recovered != (i == 2) {
			t.Fatalf("share %d after the reset: %+v %v", i, p, err)
		}
	}

	joining := New(Options{})
	for _, g := range shares[:2] {
		if _, err := joining.SubmitShare(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	forged := forge(cluster, 4, 3, 9)
	if _, err := joining.SubmitShare(ctx, forged); err != nil {
		t.Fatal(err)
	}
	if err := joining.ResetShares(ctx, forge(cluster, 4, 3, 7)); err != nil {
		t.Fatal(err)
	}
	if p, err := joining.SubmitShare(ctx, shares[2]); err != nil || !p.Recovered {
		t.Fatalf("a forged claim's reset discarded the genuine shares: %+v %v", p, err)
	}
}
