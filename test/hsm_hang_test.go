package test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// hangDetector is how long a node may take to exit after SIGTERM before
// the test calls it hung. Not a timing assertion: a node exits in seconds.
const hangDetector = 2 * time.Minute

// A node whose HSM hangs: configured with the harness's PKCS#11 shim in
// front of a real SoftHSM2 token, initialized, then restarted while the
// token does not answer C_Decrypt, so that the unseal at boot is stuck
// inside the token. It answers status (sealed, and what the HSM does),
// Shamir shares unseal it, and SIGTERM stops it; with the token answering
// again it unseals by the HSM at the next start.
func TestHungHSMAtBoot(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	hsm := harness.NewSoftHSM(t, "gitlab-secrets")
	hsm.GenerateAESKey(t, "kek")
	shim := harness.NewHangingHSM(t, hsm)
	section := strings.Replace(hsmSeal(t, hsm, dir, "kek", true), hsm.Library, shim.Library, 1)
	cfg, addr := nodeConfig(t, dir, "node-1", "127.0.0.1", "", section)
	start := func() *harness.Node {
		n := harness.StartNode(t, tr, bin, cfg, addr, shim.Env()...)
		n.WaitServing(t, tr)
		return n
	}

	n := start()
	res := initCluster(t, bin, addr)
	waitState(t, tr, bin, addr, "active")
	if code := n.Signal(t, syscall.SIGTERM, hangDetector); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}

	shim.Hang(t, "C_Decrypt")
	// Not start(): WaitServing asks the appliance's status, which probes
	// the HSM; the call that hangs must be the unseal's at boot, which
	// waits for the token for 30 s before the node gives up on it. (When
	// the probe came first, the unseal gave up with it after 3 s, and a
	// busy machine's GETs below came after that.)
	n = harness.StartNode(t, tr, bin, cfg, addr, shim.Env()...)
	harness.Eventually(t, hangDetector, "the unseal to block in C_Decrypt", func() bool { return shim.Blocked() == 1 })
	// A load balancer's check and `bao status` answer while the token
	// hangs, asked before anything probed the HSM (the appliance's status
	// does, which used to keep the unseal away from the token): never
	// after the node gave up on the token ("sealed: ..." in its log).
	hc := &http.Client{Timeout: hangDetector}
	for _, p := range []string{"/v1/sys/seal-status", "/v1/sys/health"} {
		var resp *http.Response
		harness.Eventually(t, hangDetector, "the API to listen", func() bool {
			var err error
			resp, err = hc.Get(addr + p)
			if err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("GET %s with the token hung: %v", p, err)
			}
			return err == nil
		})
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if out := n.Output.String(); strings.Contains(out, "sealed: ") {
			t.Fatalf("GET %s answered only after the node gave up on the hung token (%d %s):\n%s", p, resp.StatusCode, body, out)
		}
		if !strings.Contains(string(body), `"sealed":true`) {
			t.Fatalf("GET %s with the token hung: %d %s", p, resp.StatusCode, body)
		}
	}
	st, code := status(t, tr, bin, addr)
	p, _ := mechanism(st, "pkcs11")
	if code != 2 || st.State != "sealed" || p.Healthy == nil || *p.Healthy || !strings.Contains(p.Error, "the HSM is unavailable") {
		t.Fatalf("with the token hung: exit %d, %s, pkcs11 %+v", code, st.State, p)
	}
	t.Logf("sealed; pkcs11: %s", p.Error)

	submitShares(t, tr, bin, addr, res.Shares[1], res.Shares[2])
	st = waitState(t, tr, bin, addr, "active")
	if s, _ := mechanism(st, "shamir"); !s.LastUsed {
		t.Fatalf("unsealed, but not by the shares: %+v", st.Seal)
	}
	if n := shim.Count("block"); n > 2 {
		t.Fatalf("%d calls reached the hung token", n)
	}

	// The unseal's C_Decrypt still has not returned: stopping must not
	// wait for it. The node says it could not close the HSM session.
	code = n.Signal(t, syscall.SIGTERM, hangDetector)
	if out := n.Output.String(); code != 1 || !strings.Contains(out, "closing the HSM session") || !strings.Contains(out, "the token did not answer") {
		t.Fatalf("SIGTERM with the token hung: exit %d:\n%s", code, out)
	}

	shim.Release(t)
	n = start()
	st = waitState(t, tr, bin, addr, "active")
	if p, _ := mechanism(st, "pkcs11"); !p.LastUsed {
		t.Fatalf("with the token answering again: %+v", st.Seal)
	}
	if code := n.Signal(t, syscall.SIGTERM, hangDetector); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	scanForSecrets(t, tr.String(), append([]string{hsm.PIN, res.RootToken}, res.Shares...))
}
