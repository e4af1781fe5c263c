//go:build cgo

package appliance

import (
	"context"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// Alive takes the core's state lock (what systemd's watchdog pings
// through). A token that hangs at boot no longer holds that lock: the seal
// asks the HSM before OpenBao's UnsealWithStoredKeys takes it (see
// seal.RecoverStoredKey), so with C_Decrypt hung (a real SoftHSM2 token
// behind the harness's shim) Alive returns while the token still hangs,
// and the watchdog does not kill a node that only waits for its HSM. It
// used to block until the token answered or the 30 s bound.
func TestAliveWhileTheHSMHangs(t *testing.T) {
	hsm := harness.NewSoftHSM(t, "appliance")
	hsm.GenerateAESKey(t, "kek")
	shim := harness.NewHangingHSM(t, hsm)
	shim.SetEnv(t)
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	p11 := hsmConfig(t, hsm, "kek")
	p11.Library = shim.Library
	cfg.Seal = &config.Seal{PKCS11: p11, Shamir: &config.ShamirSeal{Shares: 3, Threshold: 2}}

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
	returned := make(chan struct{})
	go func() { a.Alive(); close(returned) }()
	select {
	case <-returned:
	case <-time.After(hangDetector):
		t.Fatal("Alive waited while the unseal waited for the hung token")
	}
	if shim.Blocked() != 1 || strings.Contains(log.String(), "did not answer within") {
		t.Fatal("the token stopped hanging before Alive returned: the test proved nothing")
	}
	shim.Release(t)
	ctx, cancel := context.WithTimeout(context.Background(), hangDetector)
	defer cancel()
	if err := a.WaitUnsealed(ctx); err != nil {
		t.Fatal(err)
	}
}
