package test

import (
	"context"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// OpenBao 2.4.0's sys/rotate/root (GH-2619, fixed in 2.5.x) rotates,
// under OpenBao's own Shamir seal, the key that wraps the root key too,
// and hands out no new shares: every operator share would be void. The
// appliance's barrier seal is its own auto seal (appliance.go: NewAutoSeal
// over the multi-unseal wrapper), so 2.4.0 takes the other branch: a new
// root key stored through the seal, which wraps it with every mechanism.
// Shown on real nodes: rotated while unsealed by the HSM, the same shares
// unseal after a restart without the HSM; rotated again while unsealed by
// shares, the HSM unseals after a restart, and so do the same shares; on
// a Shamir-only node the same shares unseal after a rotation and a
// restart. The secret written before stays readable throughout, and the
// Shamir mechanism keeps its shares and threshold.
func TestRotateRootKeepsSharesAndHSM(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	hsm := harness.NewSoftHSM(t, "gitlab-secrets")
	hsm.GenerateAESKey(t, "kek")
	cfg, addr := nodeConfig(t, dir, "node-1", "127.0.0.1", "", hsmSeal(t, hsm, dir, "kek", true))
	hc := &http.Client{Timeout: time.Minute}
	start := func(cfg, addr string, env ...string) *harness.Node {
		n := harness.StartNode(t, tr, bin, cfg, addr, env...)
		n.WaitServing(t, tr)
		return n
	}
	stop := func(n *harness.Node) {
		t.Helper()
		if code := n.Signal(t, syscall.SIGTERM, time.Minute); code != 0 {
			t.Fatalf("SIGTERM: exit %d", code)
		}
	}
	const secretValue = "rotate-7c2e"
	// rotate rotates the root key of n's cluster, and n's log says so.
	rotate := func(n *harness.Node, addr, root string) {
		t.Helper()
		before := strings.Count(n.Output.String(), "security barrier rekeyed")
		if code, out := call(t, hc, "PUT", addr+"/v1/sys/rotate/root", root, nil); code != http.StatusNoContent {
			t.Fatalf("sys/rotate/root: %d %s", code, out)
		}
		harness.Eventually(t, 30*time.Second, "the node to log the rotation", func() bool {
			return strings.Count(n.Output.String(), "security barrier rekeyed") > before
		})
	}
	readBack := func(addr, root, when string) {
		t.Helper()
		got, err := apiClient(t, addr, root).KVv2("kv").Get(context.Background(), "db")
		if err != nil || got.Data["password"] != secretValue {
			t.Fatalf("the secret %s: %v", when, err)
		}
	}
	shamirIntact := func(st statusOutput, when string) {
		t.Helper()
		if s, ok := mechanism(st, "shamir"); !ok || s.Shares != 3 || s.Threshold != 2 {
			t.Errorf("the Shamir mechanism %s: %+v, want 3 shares, threshold 2", when, s)
		}
	}

	n := start(cfg, addr, hsm.Env()...)
	res := initCluster(t, bin, addr)
	waitState(t, tr, bin, addr, "active")
	harness.MountKVv2(t, apiClient(t, addr, res.RootToken), "kv")
	if _, err := apiClient(t, addr, res.RootToken).KVv2("kv").Put(context.Background(), "db", map[string]any{"password": secretValue}); err != nil {
		t.Fatal(err)
	}

	// Unsealed by the HSM: rotate; the HSM gone, the same shares.
	rotate(n, addr, res.RootToken)
	stop(n)
	hsm.RemoveToken(t)
	n = start(cfg, addr, hsm.Env()...)
	submitShares(t, tr, bin, addr, res.Shares[0], res.Shares[1])
	st := waitState(t, tr, bin, addr, "active")
	if s, _ := mechanism(st, "shamir"); !s.LastUsed {
		t.Fatalf("after the rotation, unsealed by the shares: %+v", st.Seal)
	}
	shamirIntact(st, "after a rotation")
	readBack(addr, res.RootToken, "after a rotation, unsealed by shares")

	// Unsealed by shares: rotate; the HSM back, it unseals alone.
	rotate(n, addr, res.RootToken)
	stop(n)
	hsm.RestoreToken(t)
	n = start(cfg, addr, hsm.Env()...)
	st = waitState(t, tr, bin, addr, "active")
	if p, _ := mechanism(st, "pkcs11"); !p.LastUsed {
		t.Fatalf("after the second rotation, not unsealed by the HSM: %+v", st.Seal)
	}
	readBack(addr, res.RootToken, "after a second rotation, unsealed by the HSM")
	stop(n)

	// And the same shares still, after both rotations.
	hsm.RemoveToken(t)
	n = start(cfg, addr, hsm.Env()...)
	submitShares(t, tr, bin, addr, res.Shares[2], res.Shares[0])
	st = waitState(t, tr, bin, addr, "active")
	shamirIntact(st, "after two rotations")
	readBack(addr, res.RootToken, "after two rotations, unsealed by shares")
	stop(n)

	// Shamir alone (no seal block: the appliance's default).
	cfg2, addr2, _ := singleNode(t)
	n = start(cfg2, addr2)
	res2 := initCluster(t, bin, addr2, "--shares", "3", "--threshold", "2")
	waitState(t, tr, bin, addr2, "active")
	harness.MountKVv2(t, apiClient(t, addr2, res2.RootToken), "kv")
	if _, err := apiClient(t, addr2, res2.RootToken).KVv2("kv").Put(context.Background(), "db", map[string]any{"password": secretValue}); err != nil {
		t.Fatal(err)
	}
	rotate(n, addr2, res2.RootToken)
	stop(n)
	n = start(cfg2, addr2)
	submitShares(t, tr, bin, addr2, res2.Shares[1], res2.Shares[2])
	shamirIntact(waitState(t, tr, bin, addr2, "active"), "on a Shamir-only node after a rotation")
	readBack(addr2, res2.RootToken, "on a Shamir-only node after a rotation")
	stop(n)
}
