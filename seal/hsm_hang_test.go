//go:build cgo

package seal

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal/pkcs11"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// These tests hang a real SoftHSM2 token: the harness's PKCS#11 shim
// passes every call to it, and blocks the calls a hung HSM would never
// return from while the test says so (see test/harness/hsmshim/shim.c).

// hangDetector bounds every wait in these tests. It is not a timing
// assertion: the code under test returns in milliseconds or at its own
// bounds of a few seconds; reaching this means it hung.
const hangDetector = 2 * time.Minute

// softHSM makes a SoftHSM2 token with one AES-256 key, "kek", made the way
// an operator would, and points this process at it (SOFTHSM2_CONF is
// process-wide: these tests do not run in parallel).
func softHSM(t *testing.T) (*harness.SoftHSM, pkcs11.Config) {
	t.Helper()
	s := harness.NewSoftHSM(t, "appliance")
	s.GenerateAESKey(t, "kek")
	t.Setenv("SOFTHSM2_CONF", s.Conf)
	return s, pkcs11.Config{Library: s.Library, TokenLabel: s.TokenLabel, PIN: s.PIN, KeyLabel: "kek"}
}

// hungHSM is a token with key "kek" behind the shim, and the config to
// reach it through the shim.
func hungHSM(t *testing.T) (*harness.HangingHSM, pkcs11.Config) {
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

// newHungSeal makes a seal on the shimmed token with the HSM and Shamir
// shares enrolled; it returns the seal and its shares.
func newHungSeal(t *testing.T, cfg pkcs11.Config) (*Seal, []string) {
	t.Helper()
	s := New(Options{HSM: &cfg})
	shares, err := s.Initialize(context.Background(), InitSpec{HSM: true, Shamir: true, Shares: 3, Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Finalize(context.Background()) })
	return s, shares
}

// expireProbes forgets the outcome of the last HSM probe, as hsmHealthTTL
// passing does.
func expireProbes(s *Seal) {
	s.hsmHealth.mu.Lock()
	defer s.hsmHealth.mu.Unlock()
	for _, ps := range s.hsmHealth.probes {
		ps.last = nil
	}
}

func pkcs11Status(t *testing.T, s *Seal) MechanismStatus {
	t.Helper()
	for _, m := range s.Status(context.Background(), true).Mechanisms {
		if m.Type == MechanismPKCS11 {
			return m
		}
	}
	t.Fatal("no pkcs11 mechanism in the status")
	return MechanismStatus{}
}

// 200 status requests at once against a hung token: all return, no
// goroutine is left per request, and at most one probe reaches the token;
// later requests (a new probe after the cached outcome expired) do not
// reach it either. Once the token answers again, status says healthy.
func TestStatusWithHungHSM(t *testing.T) {
	shim, cfg := hungHSM(t)
	s, _ := newHungSeal(t, cfg)
	if m := pkcs11Status(t, s); m.Healthy == nil || !*m.Healthy {
		t.Fatalf("before the hang: %+v", m)
	}
	runtime.GC()
	before := runtime.NumGoroutine()

	shim.Hang(t)
	expireProbes(s) // else status serves the healthy outcome for hsmHealthTTL yet
	entered := shim.Count("enter")
	const requests = 200
	var wg sync.WaitGroup
	errs := make(chan string, requests)
	for range requests {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // the client's timeout
			defer cancel()
			st := s.Status(ctx, true)
			for _, m := range st.Mechanisms {
				if m.Type == MechanismPKCS11 && (m.Healthy == nil || *m.Healthy) {
					errs <- "a status said the hung token is healthy"
				}
			}
		})
	}
	within(t, "200 status requests", func() bool { wg.Wait(); return true })
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	m := pkcs11Status(t, s)
	if !strings.Contains(m.Error, "did not answer within 3s (a probe has been waiting since") {
		t.Fatalf("status with the token hung: %q", m.Error)
	}
	// The cached outcome expires; the next probe finds the first still
	// waiting and does not ask the token again.
	eventually(t, "a later probe to be refused as busy", func() bool {
		return strings.Contains(pkcs11Status(t, s).Error, "busy: a call to the token (a probe) has not returned since")
	})
	if n, in := shim.Count("block"), shim.Count("enter")-entered; n > 1 || in > 2 {
		t.Fatalf("%d calls blocked in the token, %d entered it, for %d status requests and more", n, in, requests)
	}
	var after int
	eventually(t, "the goroutines of the requests to end", func() bool {
		after = runtime.NumGoroutine()
		return after <= before+3
	})
	t.Logf("goroutines: %d before the hang, %d after %d status requests; calls into the hung token: %d entered, %d blocked",
		before, after, requests, shim.Count("enter")-entered, shim.Count("block"))

	shim.Release(t)
	eventually(t, "status to say healthy again", func() bool {
		m := pkcs11Status(t, s)
		return m.Healthy != nil && *m.Healthy && m.Error == ""
	})
}

// A node restarting with the token hung: the unseal's unwrap returns at
// its deadline, later ones are refused at once, shares submitted while
// an unwrap is still waiting end it and unseal, and Finalize does not
// wait for the token.
func TestUnsealWithHungHSM(t *testing.T) {
	shim, cfg := hungHSM(t)
	first, shares := newHungSeal(t, cfg)
	blob, err := first.Encrypt(context.Background(), []byte("stored keys"))
	if err != nil {
		t.Fatal(err)
	}
	first.Finalize(context.Background())

	shim.Hang(t, "C_Decrypt")
	s := New(Options{HSM: &cfg}) // the restarted node: no KEK in memory
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = within(t, "Decrypt", func() error { _, err := s.Decrypt(ctx, blob); return err })
	if !errors.Is(err, ErrLocked) || !errors.Is(err, pkcs11.ErrUnavailable) || !strings.Contains(err.Error(), "did not answer within") {
		t.Fatalf("Decrypt with the token hung: %v", err)
	}
	err = within(t, "Decrypt again", func() error { _, err := s.Decrypt(context.Background(), blob); return err })
	if !errors.Is(err, ErrLocked) || !errors.Is(err, pkcs11.ErrBusy) {
		t.Fatalf("Decrypt again: %v", err)
	}
	if n := shim.Count("block"); n != 1 {
		t.Fatalf("%d calls reached the hung token", n)
	}
	if m := pkcs11Status(t, s); m.Healthy == nil || *m.Healthy || !strings.Contains(m.Error, "busy") {
		t.Fatalf("status: %+v", m)
	}

	// An unwrap waiting on the token (no deadline of its own here) ends
	// when the shares recover the key, and its Decrypt uses that key.
	shim.Release(t)
	eventually(t, "the hung call to return", func() bool { return shim.Blocked() == 0 })
	shim.Hang(t, "C_Decrypt")
	waiting := make(chan error, 1)
	go func() { _, err := s.Decrypt(context.Background(), blob); waiting <- err }()
	eventually(t, "a new unwrap to block in the token", func() bool { return shim.Blocked() == 1 })
	for _, sh := range shares[:2] {
		if _, err := s.SubmitShare(context.Background(), sh); err != nil {
			t.Fatal(err)
		}
	}
	err = within(t, "the waiting Decrypt", func() error { return <-waiting })
	if err != nil {
		t.Fatalf("the Decrypt waiting on the token when the shares came: %v", err)
	}
	if got, err := s.Decrypt(context.Background(), blob); err != nil || !bytes.Equal(got, []byte("stored keys")) || s.LastUsed() != MechanismShamir {
		t.Fatalf("Decrypt after the shares: %q %v (last used %q)", got, err, s.LastUsed())
	}

	err = within(t, "Finalize", func() error { return s.Finalize(context.Background()) })
	if err == nil || !strings.Contains(err.Error(), "the token did not answer") {
		t.Fatalf("Finalize with a call hung: %v", err)
	}
	closed := shim.Count("leave", "C_CloseSession")
	shim.Release(t)
	eventually(t, "the session to be closed once the hung call returned", func() bool {
		return shim.Count("leave", "C_CloseSession") > closed
	})
}
