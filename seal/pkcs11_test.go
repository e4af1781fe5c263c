//go:build cgo

package seal

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// softHSM makes a SoftHSM2 token with one AES-256 key and points this
// process at it (SOFTHSM2_CONF is process-wide: these tests do not run in
// parallel).
func softHSM(t *testing.T) (*harness.SoftHSM, PKCS11Config) {
	t.Helper()
	s := harness.NewSoftHSM(t, "appliance")
	s.GenerateAESKey(t, "kek")
	t.Setenv("SOFTHSM2_CONF", s.Conf)
	return s, PKCS11Config{Library: s.Library, TokenLabel: s.TokenLabel, PIN: s.PIN, KeyLabel: "kek"}
}

func TestHSMWrapUnwrap(t *testing.T) {
	_, cfg := softHSM(t)
	ctx := context.Background()
	h, err := OpenHSM(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	secret := []byte("0123456789abcdef0123456789abcdef")
	w, err := h.Wrap(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(w, secret) {
		t.Fatal("wrapped form holds the plaintext")
	}
	back, err := h.Unwrap(ctx, w)
	if err != nil || !bytes.Equal(back, secret) {
		t.Fatalf("unwrap: %v", err)
	}
	w[len(w)-1] ^= 1
	if _, err := h.Unwrap(ctx, w); !errors.Is(err, ErrHSMUnwrap) {
		t.Fatalf("tampered blob: %v", err)
	}
	if err := h.Check(ctx); err != nil {
		t.Fatalf("check: %v", err)
	}

	// A second handle on the same library in the same process, and
	// concurrent use of both.
	h2, err := OpenHSM(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hh := []*HSM{h, h2}[i%2]
			for range 20 {
				w, err := hh.Wrap(ctx, secret)
				if err == nil {
					var back []byte
					back, err = []*HSM{h2, h}[i%2].Unwrap(ctx, w)
					if err == nil && !bytes.Equal(back, secret) {
						err = errors.New("wrong plaintext")
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent use: %v", err)
	}
}

func TestHSMOpenErrors(t *testing.T) {
	s, good := softHSM(t)
	ctx := context.Background()
	slot := uint(987654)
	cases := []struct {
		name   string
		mutate func(c *PKCS11Config)
		want   error
		text   string
	}{
		{"wrong PIN", func(c *PKCS11Config) { c.PIN = "wrong-pin-4711" }, ErrHSMPIN, "check the PIN"},
		{"wrong key label", func(c *PKCS11Config) { c.KeyLabel = "nokey" }, ErrHSMKey, `no secret key labelled "nokey"`},
		{"wrong token label", func(c *PKCS11Config) { c.TokenLabel = "other" }, ErrHSMToken, `tokens present: "appliance"`},
		{"no such slot", func(c *PKCS11Config) { c.TokenLabel = ""; c.Slot = &slot }, ErrHSMToken, "no token in slot 987654"},
		{"missing library", func(c *PKCS11Config) { c.Library = "/nonexistent/libpkcs11.so" }, ErrHSMLibrary, "no such file"},
		{"not a module", func(c *PKCS11Config) { c.Library = s.Conf }, ErrHSMLibrary, "not a loadable PKCS#11 module"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mutate(&cfg)
			h, err := OpenHSM(ctx, cfg)
			if err == nil {
				h.Close()
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("want %v with %q, got %v", tc.want, tc.text, err)
			}
			if strings.Contains(err.Error(), cfg.PIN) || strings.Contains(err.Error(), good.PIN) {
				t.Fatal("the error holds the PIN")
			}
		})
	}
	// After all those failures the right config still opens.
	h, err := OpenHSM(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
}

// A token that goes away: a new session cannot be opened; once it is
// back, one can.
func TestHSMTokenRemovedAndRestored(t *testing.T) {
	s, cfg := softHSM(t)
	ctx := context.Background()
	// Hold one handle so the library stays initialized across the change.
	keep, err := OpenHSM(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	s.RemoveToken(t)
	keep.Close() // SoftHSM rescans tokens only at C_Initialize
	if h, err := OpenHSM(ctx, cfg); err == nil {
		h.Close()
		t.Fatal("opened a removed token")
	} else if !errors.Is(err, ErrHSMToken) {
		t.Fatalf("removed token: %v", err)
	}
	s.RestoreToken(t)
	h, err := OpenHSM(ctx, cfg)
	if err != nil {
		t.Fatalf("restored token: %v", err)
	}
	defer h.Close()
	if err := h.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// Closing one handle must not log the others out: C_Logout ends the login
// of every session of the process on the token, and a private key (as
// real HSMs make them) is then out of reach.
func TestHSMCloseLeavesOthersUsable(t *testing.T) {
	s, cfg := softHSM(t)
	ctx := context.Background()
	s.PKCS11Tool(t, "--keygen", "--key-type", "AES:32", "--label", "kek-private", "--private", "--sensitive")
	cfg.KeyLabel = "kek-private"
	a, err := OpenHSM(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenHSM(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Check(ctx); err != nil {
		t.Fatalf("the other handle after a Close: %v", err)
	}
	// A failed open (the key is not there) must not log the others out
	// either.
	bad := cfg
	bad.KeyLabel = "absent"
	if _, err := OpenHSM(ctx, bad); !errors.Is(err, ErrHSMKey) {
		t.Fatal(err)
	}
	if err := b.Check(ctx); err != nil {
		t.Fatalf("the other handle after a failed open: %v", err)
	}
}
