package test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// post sends body as JSON to addr+path (no token) and returns the status
// and the answer's text.
func post(hc *http.Client, addr, path, token string, body any) (int, string, error) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", addr+path, bytes.NewReader(b))
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw), nil
}

func shamirProgress(t *testing.T, tr *harness.Transcript, bin, addr string) int {
	t.Helper()
	st, _ := status(t, tr, bin, addr)
	for _, m := range st.Seal.Mechanisms {
		if m.Type == "shamir" {
			return m.Progress
		}
	}
	t.Fatalf("status has no shamir mechanism: %+v", st.Seal)
	return 0
}

// Nobody who can reach the API can spoil the operators' unseal attempt:
// a reset without a share, or with a forged one, is refused with 403 on
// the bao API and the appliance's, and changes nothing; an operator's
// reset (with one of the shares) discards the attempt. Genuine shares
// still unseal the node while an attacker sends resets in a loop.
func TestUnsealResetNeedsAShare(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	addr, res := startActive(t, tr, bin, "--shares", "5", "--threshold", "3")
	hc := &http.Client{Timeout: 30 * time.Second}
	// Sealed by an operator, the node forgets its key: shares only.
	if code, out, err := post(hc, addr, "/v1/sys/seal", res.RootToken, map[string]any{}); err != nil || code/100 != 2 {
		t.Fatalf("sys/seal: %d %s %v", code, out, err)
	}
	shares := res.Shares
	st := waitState(t, tr, bin, addr, "sealed")
	forged := forgedShare(st.Seal.Cluster, st.Seal.Generation, 3)

	attacks := []struct {
		path string
		body map[string]any
	}{
		{"/v1/sys/unseal", map[string]any{"reset": true}},
		{"/appliance/v1/unseal", map[string]any{"reset": true}},
		{"/v1/sys/unseal", map[string]any{"reset": true, "key": forged}},
		{"/appliance/v1/unseal", map[string]any{"reset": true, "share": forged}},
		{"/appliance/v1/unseal", map[string]any{"reset": true, "share": "not a share"}},
	}
	submitShares(t, tr, bin, addr, shares[0])
	for _, a := range attacks {
		code, out, err := post(hc, addr, a.path, "", a.body)
		if err != nil || code != http.StatusForbidden || !strings.Contains(out, "must carry one of this cluster's current shares") {
			t.Errorf("unauthenticated reset %s %v: %d %s %v, want 403", a.path, a.body["key"] != nil || a.body["share"] != nil, code, out, err)
		}
	}
	if p := shamirProgress(t, tr, bin, addr); p != 1 {
		t.Fatalf("the refused resets changed the progress: %d of 3, want 1", p)
	}
	// `bao status` (sys/seal-status) shows the operators the same progress.
	if ss, err := apiClient(t, addr, "").Sys().SealStatus(); err != nil || !ss.Sealed || ss.Progress != 1 || ss.T != 3 || ss.N != 5 {
		t.Fatalf("sys/seal-status after one share: %+v %v, want sealed, progress 1 of t=3, n=5", ss, err)
	}

	// An operator's reset: one of the shares on standard input.
	out, errOut, code := harness.Run(t, tr, []byte(shares[3]+"\n"), bin, "unseal", "--reset", "--address", addr)
	if code != 0 || !strings.Contains(out, "reset: 0 of 3") {
		t.Fatalf("unseal --reset with a share: exit %d: %s %s", code, out, errOut)
	}
	if _, errOut, code := harness.Run(t, tr, []byte("\n"), bin, "unseal", "--reset", "--address", addr); code == 0 {
		t.Fatalf("unseal --reset without a share succeeded: %s", errOut)
	}
	// The same through the bao API: the share as "key" beside "reset".
	submitShares(t, tr, bin, addr, shares[0])
	if code, out, err := post(hc, addr, "/v1/sys/unseal", "", map[string]any{"reset": true, "key": shares[2]}); err != nil || code != http.StatusOK || !strings.Contains(out, `"progress":0`) {
		t.Fatalf("sys/unseal reset with a share: %d %s %v", code, out, err)
	}

	// The attacker: resets in a loop, bounded, until the operators are done.
	var sent, accepted atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 6000; i++ {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			a := attacks[i%len(attacks)]
			if code, _, err := post(hc, addr, a.path, "", a.body); err == nil && code == http.StatusOK {
				accepted.Add(1)
			}
			sent.Add(1)
		}
	}()
	stop := func() { close(done); wg.Wait() }
	submitShares(t, tr, bin, addr, shares[1], shares[4])
	// Resets arrive between the second share and the third.
	from := sent.Load()
	harness.Eventually(t, time.Minute, "the attacker's resets", func() bool { return sent.Load() >= from+2*int64(len(attacks)) })
	if p := shamirProgress(t, tr, bin, addr); p != 2 {
		stop()
		t.Fatalf("progress after two shares under attack: %d, want 2", p)
	}
	submitShares(t, tr, bin, addr, shares[2])
	waitState(t, tr, bin, addr, "active")
	stop()
	if accepted.Load() != 0 {
		t.Fatalf("%d of %d unauthenticated resets were accepted", accepted.Load(), sent.Load())
	}
	t.Logf("unsealed with 3 genuine shares while %d unauthenticated resets were refused", sent.Load())
}
