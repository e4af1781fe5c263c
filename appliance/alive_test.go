//go:build cgo

package appliance

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// Alive waits for the core's state lock, held here by a real path: the
// unseal at boot (OpenBao's UnsealWithStoredKeys takes the lock, then asks
// the seal for the stored keys) waits in C_Decrypt of a token that does
// not answer (a real SoftHSM2 token behind the harness's shim). Alive is
// seen blocked on the lock, and returns only once the token answers and
// the unseal lets the lock go.
func TestAliveWaitsForTheStateLock(t *testing.T) {
	hsm := harness.NewSoftHSM(t, "appliance")
	hsm.GenerateAESKey(t, "kek")
	shim := harness.NewHangingHSM(t, hsm)
	shim.SetEnv(t)
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	p11 := hsmConfig(t, hsm, "kek")
	p11.Library = shim.Library
	cfg.Seal = &Seal{PKCS11: p11, Shamir: &ShamirSeal{Shares: 3, Threshold: 2}}

	a := startNode(t, cfg)
	initAndUnseal(t, a)
	alive := make(chan struct{})
	go func() { a.Alive(); close(alive) }()
	select {
	case <-alive:
	case <-time.After(hangDetector):
		t.Fatal("Alive hung on an unsealed node")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	shim.Hang(t, "C_Decrypt")
	a = startNode(t, cfg)
	harness.Eventually(t, hangDetector, "the unseal to block in the token", func() bool { return shim.Blocked() == 1 })
	var released atomic.Bool
	var sawRelease bool
	returned := make(chan struct{})
	go func() {
		a.Alive()
		sawRelease = released.Load()
		close(returned)
	}()
	harness.Eventually(t, hangDetector, "Alive to wait for the state lock", func() bool {
		select {
		case <-returned:
			t.Fatal("Alive returned while the unseal held the state lock")
		default:
		}
		return blockedIn("(*Core).StandbyStates", "RLock")
	})
	released.Store(true)
	shim.Release(t)
	select {
	case <-returned:
	case <-time.After(hangDetector):
		t.Fatal("Alive did not return once the token answered")
	}
	// The unseal gives up on the token after 30 s by itself, which lets
	// the lock go too; either way Alive waited for the lock.
	if !sawRelease && !strings.Contains(log.String(), "did not answer within") {
		t.Fatal("Alive returned before the lock was let go")
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangDetector)
	defer cancel()
	if err := a.WaitUnsealed(ctx); err != nil {
		t.Fatal(err)
	}
}

// blockedIn reports whether a goroutine's stack has fn in it, waiting in
// a frame matching wait.
func blockedIn(fn, wait string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte(fn)) && bytes.Contains(g, []byte(wait)) {
			return true
		}
	}
	return false
}
