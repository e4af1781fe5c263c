//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// These tests use a real SoftHSM2 token (apt-get install softhsm2 opensc).
// SOFTHSM2_CONF is process-wide: they set it with t.Setenv and so do not
// run in parallel.

// softHSM makes a SoftHSM2 token with one AES-256 key, "kek", made the way
// an operator would, and points this process at it.
func softHSM(t *testing.T) (*harness.SoftHSM, Config) {
	t.Helper()
	s := harness.NewSoftHSM(t, "appliance")
	s.GenerateAESKey(t, "kek")
	t.Setenv("SOFTHSM2_CONF", s.Conf)
	return s, Config{Library: s.Library, TokenLabel: s.TokenLabel, PIN: s.PIN, KeyLabel: "kek"}
}

// privateKey adds an AES-256 key that can be seen and used only when
// logged in, as real HSMs make them, and returns cfg naming it.
func privateKey(t *testing.T, s *harness.SoftHSM, cfg Config, label string) Config {
	t.Helper()
	s.PKCS11Tool(t, "--keygen", "--key-type", "AES:32", "--label", label, "--private", "--sensitive")
	cfg.KeyLabel = label
	return cfg
}

func openHSM(t *testing.T, cfg Config) *HSM {
	t.Helper()
	h, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

var kek = []byte("0123456789abcdef0123456789abcdef")

func TestHSMWrapUnwrap(t *testing.T) {
	s, cfg := softHSM(t)
	ctx := context.Background()
	h := openHSM(t, cfg)

	w, err := h.Wrap(ctx, kek)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != 1+12+len(kek)+16 || w[0] != 1 {
		t.Fatalf("wrapped form is %d bytes starting %d; want version 1 | 12-byte IV | 32 bytes | 16-byte tag", len(w), w[0])
	}
	if bytes.Contains(w, kek) {
		t.Fatal("wrapped form holds the plaintext")
	}
	back, err := h.Unwrap(ctx, w)
	if err != nil || !bytes.Equal(back, kek) {
		t.Fatalf("unwrap: %q, %v", back, err)
	}
	w2, err := h.Wrap(ctx, kek)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(w[1:13], w2[1:13]) {
		t.Fatal("two wraps used the same IV")
	}
	if err := h.Check(ctx); err != nil {
		t.Fatalf("check: %v", err)
	}
	if d := h.Describe(); d != `token "appliance" key "kek"` || strings.Contains(d, s.PIN) {
		t.Fatalf("Describe: %q", d)
	}

	// What does not decrypt under this key is ErrUnwrap, never
	// ErrUnavailable: the token is fine.
	other := openHSM(t, privateKey(t, s, cfg, "other"))
	fromOther, err := other.Wrap(ctx, kek)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte { b := bytes.Clone(w); b[i] ^= 1; return b }
	for name, blob := range map[string][]byte{
		"tag":             flip(len(w) - 1),
		"ciphertext":      flip(13),
		"IV":              flip(1),
		"version":         flip(0),
		"truncated":       w[:20],
		"empty":           nil,
		"another key's":   fromOther,
		"plaintext as is": append([]byte{1}, bytes.Repeat(kek, 2)...),
	} {
		_, err := h.Unwrap(ctx, blob)
		if !errors.Is(err, ErrUnwrap) || errors.Is(err, ErrUnavailable) {
			t.Errorf("%s blob: want ErrUnwrap, got %v", name, err)
		}
	}
	// And the session is still good after those failures.
	if err := h.Check(ctx); err != nil {
		t.Fatalf("check after failed unwraps: %v", err)
	}
}

// Two handles on one library in one process (one C_Initialize between
// them), used from 8 goroutines at once, each unwrapping what the other
// handle wrapped; meanwhile failed opens of a missing token re-initialize
// the library under them, which the handles must absorb.
func TestHSMConcurrentUse(t *testing.T) {
	s, cfg := softHSM(t)
	ctx := context.Background()
	hs := []*HSM{openHSM(t, cfg), openHSM(t, cfg)}
	pcfg := privateKey(t, s, cfg, "kek-private")
	hs = append(hs, openHSM(t, pcfg), openHSM(t, pcfg))

	var wg sync.WaitGroup
	errs := make(chan error, 9)
	for i := range 8 {
		wg.Go(func() {
			wrapper, unwrapper := hs[i%4], hs[i%4^1] // pairs on the same key
			for range 25 {
				w, err := wrapper.Wrap(ctx, kek)
				if err == nil {
					var back []byte
					back, err = unwrapper.Unwrap(ctx, w)
					if err == nil && !bytes.Equal(back, kek) {
						err = errors.New("unwrapped a different key")
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		bad := cfg
		bad.TokenLabel = "absent"
		for range 5 {
			if h, err := Open(ctx, bad); !errors.Is(err, ErrToken) {
				if h != nil {
					h.Close()
				}
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent use: %v", err)
	}
}

func TestHSMOpenErrors(t *testing.T) {
	s, good := softHSM(t)
	ctx := context.Background()
	s.PKCS11Tool(t, "--keygen", "--key-type", "AES:16", "--label", "aes128")
	s.PKCS11Tool(t, "--keygen", "--key-type", "GENERIC:32", "--label", "generic")
	s.GenerateAESKey(t, "twice")
	s.GenerateAESKey(t, "twice")
	// pkcs11-tool cannot make an AES key that may not encrypt: make one
	// through the library.
	h := openHSM(t, good)
	err := h.use(ctx, func() error {
		_, err := h.mod.ctx.GenerateKey(h.session, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, "wrap-only"),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
			pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slot := h.slot
	h.Close()

	noSlot := uint(987654)
	notModule := t.TempDir() + "/libnot.so"
	if err := os.WriteFile(notModule, []byte("not a shared object"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		mutate func(c *Config)
		want   error
		text   string
	}{
		{"wrong PIN", func(c *Config) { c.PIN = "wrong-pin-4711" }, ErrPIN, "check the PIN"},
		{"PIN too long", func(c *Config) { c.PIN = strings.Repeat("9", 300) }, ErrPIN, "check the PIN"},
		{"wrong key label", func(c *Config) { c.KeyLabel = "nokey" }, ErrKey, `no secret key labelled "nokey"`},
		{"no key label", func(c *Config) { c.KeyLabel = "" }, ErrKey, "no key label"},
		{"AES-128 key", func(c *Config) { c.KeyLabel = "aes128" }, ErrKey, "is AES-128, not AES-256"},
		{"not an AES key", func(c *Config) { c.KeyLabel = "generic" }, ErrKey, "not an AES key"},
		{"two keys with the label", func(c *Config) { c.KeyLabel = "twice" }, ErrKey, "more than one"},
		{"key may not encrypt", func(c *Config) { c.KeyLabel = "wrap-only" }, ErrKey, "may not encrypt and decrypt"},
		{"wrong token label", func(c *Config) { c.TokenLabel = "other" }, ErrToken, `tokens present: "appliance" in slot`},
		{"no such slot", func(c *Config) { c.TokenLabel = ""; c.Slot = &noSlot }, ErrToken, `no initialized token in slot 987654 (tokens present: "appliance"`},
		{"label and slot", func(c *Config) { c.Slot = &slot }, ErrToken, "both a token label and a slot"},
		{"neither label nor slot", func(c *Config) { c.TokenLabel = "" }, ErrToken, "neither"},
		{"missing library", func(c *Config) { c.Library = "/nonexistent/libpkcs11.so" }, ErrLibrary, "no such file"},
		{"no library", func(c *Config) { c.Library = "" }, ErrLibrary, "no library path"},
		{"library is a directory", func(c *Config) { c.Library = s.Dir }, ErrLibrary, "is not a file"},
		{"not a module", func(c *Config) { c.Library = notModule }, ErrLibrary, "not a loadable PKCS#11 module"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mutate(&cfg)
			h, err := Open(ctx, cfg)
			if err == nil {
				h.Close()
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("want %v with %q, got %v", tc.want, tc.text, err)
			}
			if cfg.PIN != "" && strings.Contains(err.Error(), cfg.PIN) || strings.Contains(err.Error(), good.PIN) {
				t.Fatal("the error holds the PIN")
			}
		})
	}

	// After all those failures the right config still opens, by label and
	// by slot.
	openHSM(t, good)
	bySlot := good
	bySlot.TokenLabel, bySlot.Slot = "", &slot
	if err := openHSM(t, bySlot).Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// Closing one handle must not log the others out: C_Logout would end the
// login of every session of the process on the token, and a private key
// is then out of reach.
func TestHSMCloseLeavesOthersUsable(t *testing.T) {
	s, cfg := softHSM(t)
	ctx := context.Background()
	pcfg := privateKey(t, s, cfg, "kek-private")
	a, b := openHSM(t, pcfg), openHSM(t, pcfg)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Check(ctx); err != nil {
		t.Fatalf("the other handle after a Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := a.Wrap(ctx, kek); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Wrap after Close: %v", err)
	}
	// A failed open (the key is not there) must not log the others out
	// either.
	bad := pcfg
	bad.KeyLabel = "absent"
	if _, err := Open(ctx, bad); !errors.Is(err, ErrKey) {
		t.Fatal(err)
	}
	if err := b.Check(ctx); err != nil {
		t.Fatalf("the other handle after a failed open: %v", err)
	}
}

// A token that goes away under an open handle: its calls fail with
// ErrUnavailable (not ErrUnwrap, and without hanging), a new open
// says the token is missing; once it is back, a new open works, even
// while the old handle still holds the library, and the old handle works
// again.
func TestHSMTokenRemovedAndRestored(t *testing.T) {
	s, cfg := softHSM(t)
	ctx := context.Background()
	for name, cfg := range map[string]Config{"public key": cfg, "private key": privateKey(t, s, cfg, "kek-private")} {
		t.Run(name, func(t *testing.T) {
			old := openHSM(t, cfg)
			w, err := old.Wrap(ctx, kek)
			if err != nil {
				t.Fatal(err)
			}

			s.RemoveToken(t)
			if err := old.Check(ctx); !errors.Is(err, ErrUnavailable) {
				t.Errorf("Check with the token gone: %v", err)
			}
			if _, err := old.Unwrap(ctx, w); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnwrap) {
				t.Errorf("Unwrap with the token gone: %v", err)
			}
			if _, err := old.Wrap(ctx, kek); !errors.Is(err, ErrUnavailable) {
				t.Errorf("Wrap with the token gone: %v", err)
			}
			if h, err := Open(ctx, cfg); err == nil {
				h.Close()
				t.Fatal("opened a removed token")
			} else if !errors.Is(err, ErrToken) || !strings.Contains(err.Error(), "tokens present: none") {
				t.Fatalf("open with the token gone: %v", err)
			}

			s.RestoreToken(t)
			h := openHSM(t, cfg)
			if back, err := h.Unwrap(ctx, w); err != nil || !bytes.Equal(back, kek) {
				t.Fatalf("new handle after the token came back: %v", err)
			}
			if back, err := old.Unwrap(ctx, w); err != nil || !bytes.Equal(back, kek) {
				t.Fatalf("old handle after the token came back: %v", err)
			}
		})
	}

	// With no handle open the library is finalized, and the next open
	// initializes it afresh.
	s.RemoveToken(t)
	if _, err := Open(ctx, cfg); !errors.Is(err, ErrToken) {
		t.Fatalf("open with the token gone: %v", err)
	}
	s.RestoreToken(t)
	if err := openHSM(t, cfg).Check(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestHSMContext(t *testing.T) {
	_, cfg := softHSM(t)
	h := openHSM(t, cfg)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Open(done, cfg); !errors.Is(err, context.Canceled) {
		t.Fatalf("Open with a cancelled context: %v", err)
	}
	if _, err := h.Wrap(done, kek); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wrap with a cancelled context: %v", err)
	}
	// A caller waiting behind a call in progress gives up with its context.
	h.sem <- struct{}{}
	err := h.Check(done)
	<-h.sem
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("Check behind a busy session: %v", err)
	}
	if err := h.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}
