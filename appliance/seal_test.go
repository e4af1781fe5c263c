package appliance

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

func hsmConfig(t *testing.T, s *harness.SoftHSM, keyLabel string) *config.PKCS11Seal {
	t.Helper()
	return &config.PKCS11Seal{Library: s.Library, TokenLabel: s.TokenLabel, PINFile: s.WritePINFile(t, t.TempDir()), KeyLabel: keyLabel}
}

func enrolled(st client.Status) []string {
	var out []string
	for _, m := range st.Seal.Mechanisms {
		if m.Enrolled {
			out = append(out, m.Type)
		}
	}
	return out
}

func lastUsed(st client.Status) string {
	for _, m := range st.Seal.Mechanisms {
		if m.LastUsed {
			return m.Type
		}
	}
	return ""
}

// Each seal change, then a restart that proves what it left: remove
// Shamir (HSM only), add Shamir back, remove the HSM (new shares), add
// the HSM back, re-wrap with a new HSM key after the old one is deleted.
func TestSealMechanismChanges(t *testing.T) {
	hsm := harness.NewSoftHSM(t, "appliance")
	hsm.GenerateAESKey(t, "kek-1")
	t.Setenv("SOFTHSM2_CONF", hsm.Conf)
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	cfg.Seal = &config.Seal{PKCS11: hsmConfig(t, hsm, "kek-1"), Shamir: &config.ShamirSeal{Shares: 3, Threshold: 2}}
	ctx := context.Background()
	restart := func(a *Appliance) *Appliance {
		t.Helper()
		a.Close()
		return startNode(t, cfg)
	}

	a := startNode(t, cfg)
	res := initAndUnseal(t, a)
	if got := enrolled(a.Status(ctx)); !slices.Equal(got, []string{"pkcs11", "shamir"}) {
		t.Fatalf("after init: %v", got)
	}

	changeSeal(t, a, res.RootToken, "remove", client.SealChange{Mechanism: "shamir"}, res.UnsealShares)
	a = restart(a)
	if err := a.WaitUnsealed(ctx); err != nil {
		t.Fatal(err)
	}
	if st := a.Status(ctx); !slices.Equal(enrolled(st), []string{"pkcs11"}) || lastUsed(st) != "pkcs11" {
		t.Fatalf("HSM only: %+v", st.Seal)
	}
	if _, err := a.StartSealChange(ctx, res.RootToken, "remove", client.SealChange{Mechanism: "pkcs11"}); err == nil {
		t.Fatal("removed the last mechanism")
	}
	// HSM only: the recovery keys authorize.
	if _, err := a.StartSealChange(ctx, res.RootToken, "add", client.SealChange{Mechanism: "shamir", AuthorizeWith: "shares"}); err == nil {
		t.Fatal("a change authorized by shares the cluster does not have")
	}
	_, added := changeSeal(t, a, res.RootToken, "add", client.SealChange{Mechanism: "shamir", Shares: 2, Threshold: 2}, res.RecoveryKeys)
	if len(added) != 2 {
		t.Fatalf("add shamir: %d shares", len(added))
	}
	removed, removedShares := changeSeal(t, a, res.RootToken, "remove", client.SealChange{Mechanism: "pkcs11"}, added)
	if len(removedShares) != 2 || !slices.Equal(removed.Mechanisms, []string{"shamir"}) {
		t.Fatalf("remove pkcs11: %+v", removed)
	}
	a = restart(a)
	if st := a.Status(ctx); st.State != client.StateSealed {
		t.Fatalf("with the HSM removed the node unsealed by itself: %+v", st.Seal)
	}
	if _, err := a.Unseal(ctx, added[0]); !errors.Is(err, seal.ErrVoidShare) {
		t.Fatalf("share voided by the HSM removal: %v", err)
	}
	if _, err := a.Unseal(ctx, res.UnsealShares[0]); !errors.Is(err, seal.ErrVoidShare) {
		t.Fatalf("share from init: %v", err)
	}
	unsealWithShares(t, a, removedShares...)

	changeSeal(t, a, res.RootToken, "add", client.SealChange{Mechanism: "pkcs11"}, removedShares)
	a = restart(a)
	if err := a.WaitUnsealed(ctx); err != nil {
		t.Fatal(err)
	}

	// HSM key change: new key, config names it, rewrap, old key deleted.
	hsm.GenerateAESKey(t, "kek-2")
	cfg.Seal.PKCS11.KeyLabel = "kek-2"
	a = restart(a) // still unseals with kek-1, which the cluster recorded
	if err := a.WaitUnsealed(ctx); err != nil {
		t.Fatal(err)
	}
	changeSeal(t, a, res.RootToken, "rewrap-hsm", client.SealChange{}, removedShares)
	hsm.DeleteKey(t, "kek-1")
	a = restart(a)
	if err := a.WaitUnsealed(ctx); err != nil {
		t.Fatalf("after rewrap and deleting the old key: %v", err)
	}
	for _, m := range a.Status(ctx).Seal.Mechanisms {
		if m.Type == "pkcs11" && (m.KeyLabel != "kek-2" || !m.LastUsed || m.Error != "") {
			t.Fatalf("after rewrap: %+v", m)
		}
	}
}

// A Raft snapshot taken before a share rotation still restores after it:
// its checksums were sealed with the replaced KEK, which the current
// header keeps, wrapped by the new one.
func TestSnapshotFromBeforeRotationRestores(t *testing.T) {
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	a, res, c := startWithSecret(t, cfg, "in-snapshot")
	ctx := context.Background()
	var snap bytes.Buffer
	if err := c.Sys().RaftSnapshotWithContext(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	shares := res.UnsealShares
	for range 2 { // two rotations: the history carries over
		_, shares = changeSeal(t, a, res.RootToken, "rotate-shares", client.SealChange{Shares: 3, Threshold: 2}, shares)
	}
	// A restart forgets every KEK but the one the new shares give.
	a.Close()
	a = startNode(t, cfg)
	unsealWithShares(t, a, shares[:2]...)
	c = baoClient(t, a, res.RootToken)
	if _, err := c.KVv2("kv").Put(ctx, "k", map[string]interface{}{"v": "after"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Sys().RaftSnapshotRestoreWithContext(ctx, bytes.NewReader(snap.Bytes()), false); err != nil {
		t.Fatalf("restoring a snapshot from before the rotations: %v", err)
	}
	waitFor(t, "the restored value", func() bool {
		got, err := c.KVv2("kv").Get(ctx, "k")
		return err == nil && got.Data["v"] == "in-snapshot"
	})
}

// A PIN read from pin_env leaves the environment at once.
func TestPINEnvIsRemovedFromTheEnvironment(t *testing.T) {
	t.Setenv("GSA_TEST_HSM_PIN", "1234-not-a-real-pin")
	pin, err := readPIN(&config.PKCS11Seal{PINEnv: "GSA_TEST_HSM_PIN"})
	if err != nil || pin != "1234-not-a-real-pin" {
		t.Fatalf("readPIN: %q %v", pin, err)
	}
	if v, ok := os.LookupEnv("GSA_TEST_HSM_PIN"); ok {
		t.Fatalf("the PIN is still in the environment: %q", v)
	}
}
