//go:build cgo

package pkcs11

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// These tests hang a real SoftHSM2 token: the harness's PKCS#11 shim
// passes every call to it, and blocks the calls a hung HSM would never
// return from while the test says so (see test/harness/hsmshim/shim.c).

// hangDetector bounds every wait in these tests. It is not a timing
// assertion: the code under test returns in milliseconds or at its own
// bounds of a few seconds; reaching this means it hung.
const hangDetector = 2 * time.Minute

// hungHSM is a token with key "kek" behind the shim, and the config to
// reach it through the shim.
func hungHSM(t *testing.T) (*harness.HangingHSM, Config) {
	t.Helper()
	s, cfg := softHSM(t)
	hh := harness.NewHangingHSM(t, s)
	hh.SetEnv(t)
	cfg.Library = hh.Library
	return hh, cfg
}

// within runs f and fails the test if it has not returned after
// hangDetector.
func within[T any](t *testing.T, what string, f func() T) T {
	t.Helper()
	return harness.Within(t, hangDetector, what, f)
}

// eventually polls cond until it holds, or fails the test.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	harness.Eventually(t, hangDetector, what, cond)
}

// A call the token does not answer returns when its context ends; the
// next calls are refused at once as busy, without reaching the token;
// Close gives up at once and the session is closed when the call returns
// at last, after which the token works again.
func TestHSMHungCall(t *testing.T) {
	shim, cfg := hungHSM(t)
	h, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, err := h.Wrap(context.Background(), kek)
	if err != nil {
		t.Fatal(err)
	}

	shim.Hang(t, "C_Encrypt", "C_Decrypt")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = within(t, "Unwrap with a deadline", func() error { _, err := h.Unwrap(ctx, w); return err })
	var hung *HungError
	if !errors.As(err, &hung) || hung.Busy || !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "did not answer within") || !strings.Contains(err.Error(), "an unwrap has been waiting since") {
		t.Fatalf("Unwrap on a hung token: %v", err)
	}
	eventually(t, "the call to block in the token", func() bool { return shim.Blocked() == 1 })

	// No context deadline at all: still refused at once.
	for name, f := range map[string]func() error{
		"Wrap":   func() error { _, err := h.Wrap(context.Background(), kek); return err },
		"Unwrap": func() error { _, err := h.Unwrap(context.Background(), w); return err },
		"Check":  func() error { return h.Check(context.Background()) },
		"Open": func() error {
			h2, err := Open(context.Background(), cfg)
			if err == nil {
				h2.Close()
			}
			return err
		},
	} {
		err := within(t, name, f)
		if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "busy: a call to the token (an unwrap) has not returned since") {
			t.Errorf("%s behind the hung call: %v", name, err)
		}
	}
	if err := within(t, "Close", h.Close); err == nil || !strings.Contains(err.Error(), "the token did not answer") {
		t.Fatalf("Close with a call hung: %v", err)
	}
	if n := shim.Count("block"); n != 1 {
		t.Fatalf("%d calls reached the hung token; want the first only", n)
	}

	closed := shim.Count("leave", "C_CloseSession")
	shim.Release(t)
	eventually(t, "the session to be closed once the hung call returned", func() bool {
		return shim.Count("leave", "C_CloseSession") > closed
	})
	h = openHSM(t, cfg)
	if err := h.Check(context.Background()); err != nil {
		t.Fatalf("after the token answered again: %v", err)
	}
}
