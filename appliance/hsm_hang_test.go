//go:build cgo

package appliance

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// hangDetector bounds the waits of this test: what it waits for takes
// milliseconds or the code's own bounds of seconds; reaching it means a
// hang. It is not a timing assertion.
const hangDetector = 2 * time.Minute

func pkcs11Mechanism(st client.Status) (seal.MechanismStatus, bool) {
	for _, m := range st.Seal.Mechanisms {
		if m.Type == seal.MechanismPKCS11 {
			return m, true
		}
	}
	return seal.MechanismStatus{}, false
}

// A node restarts while its HSM hangs (a real SoftHSM2 token behind the
// harness's PKCS#11 shim), in C_Decrypt with its session open, or in every
// call from C_GetSlotList on, before it has one: it stays sealed and says
// why; 200 unauthenticated status requests at once all answer, leave no
// goroutine behind and send at most one more call to the token; Shamir
// shares unseal it; Close does not wait for the token. Once the token
// answers again the node unseals by the HSM and calls it healthy.
func TestHungHSMAtUnseal(t *testing.T) {
	for name, calls := range map[string][]string{
		"in C_Decrypt":        {"C_Decrypt"},
		"opening the session": nil, // every wrapped call
	} {
		t.Run(name, func(t *testing.T) { testHungHSMAtUnseal(t, calls) })
	}
}

func testHungHSMAtUnseal(t *testing.T, hang []string) {
	hsm := harness.NewSoftHSM(t, "appliance")
	hsm.GenerateAESKey(t, "kek")
	shim := harness.NewHangingHSM(t, hsm)
	shim.SetEnv(t)
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	p11 := hsmConfig(t, hsm, "kek")
	p11.Library = shim.Library
	cfg.Seal = &config.Seal{PKCS11: p11, Shamir: &config.ShamirSeal{Shares: 3, Threshold: 2}}
	ctx := context.Background()

	a := startNode(t, cfg)
	res := initAndUnseal(t, a)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	shim.Hang(t, hang...)
	a = startNode(t, cfg)
	harness.Eventually(t, hangDetector, "the unseal to block in the token", func() bool { return shim.Blocked() == 1 })
	st := a.Status(ctx)
	if m, _ := pkcs11Mechanism(st); st.State != client.StateSealed || m.Healthy == nil || *m.Healthy || !strings.Contains(m.Error, "did not answer within") {
		t.Fatalf("status with the token hung: %s %+v", st.State, m)
	}
	m, _ := pkcs11Mechanism(st)
	t.Logf("sealed, pkcs11: %s", m.Error)

	runtime.GC()
	before := runtime.NumGoroutine()
	hc := &http.Client{Timeout: time.Minute}
	const requests = 200
	var wg sync.WaitGroup
	errs := make(chan error, requests)
	for range requests {
		wg.Go(func() {
			resp, err := hc.Get(a.APIAddr() + "/appliance/v1/status")
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			var st client.Status
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				errs <- err
				return
			}
			if m, _ := pkcs11Mechanism(st); resp.StatusCode != http.StatusOK || st.State != client.StateSealed || m.Healthy == nil || *m.Healthy || m.Error == "" {
				errs <- fmt.Errorf("status %d: %s %+v", resp.StatusCode, st.State, m)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(hangDetector):
		t.Fatal("status requests hung")
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	hc.CloseIdleConnections()
	var after int
	harness.Eventually(t, hangDetector, "the goroutines of the status requests to end", func() bool {
		after = runtime.NumGoroutine()
		return after <= before+10
	})
	blocked := shim.Count("block")
	t.Logf("goroutines: %d before, %d after %d status requests; calls blocked in the hung token: %d", before, after, requests, blocked)
	if blocked > 2 {
		t.Fatalf("%d calls reached the hung token", blocked)
	}

	unsealWithShares(t, a, res.UnsealShares[0], res.UnsealShares[2])
	if st := a.Status(ctx); lastUsed(st) != seal.MechanismShamir {
		t.Fatalf("after the shares: %+v", st.Seal)
	}
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	select {
	case err := <-closed:
		// With a session open, closing it is given up on and said so;
		// without one there is nothing to close.
		if hasSession := len(hang) > 0; hasSession != (err != nil) || err != nil && !strings.Contains(err.Error(), "closing the HSM session") || err != nil && !strings.Contains(err.Error(), "the token did not answer") {
			t.Fatalf("Close with the token hung: %v", err)
		}
	case <-time.After(hangDetector):
		t.Fatal("Close hung behind the token")
	}

	shim.Release(t)
	// The closed node's cluster listener goes away in the background
	// (OpenBao stops it asynchronously); the next node needs the port.
	harness.Eventually(t, hangDetector, "the cluster port to be free", func() bool {
		l, err := net.Listen("tcp", cfg.Cluster.Address)
		if err == nil {
			l.Close()
		}
		return err == nil
	})
	a = startNode(t, cfg)
	if err := a.WaitUnsealed(ctx); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, hangDetector, "status to call the HSM healthy", func() bool {
		st := a.Status(ctx)
		m, _ := pkcs11Mechanism(st)
		return lastUsed(st) == seal.MechanismPKCS11 && m.Healthy != nil && *m.Healthy && m.Error == ""
	})
	if strings.Contains(log.String(), hsm.PIN) {
		t.Fatal("the log holds the PIN")
	}
}
