package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// hsmSeal is the seal section for a node using token s with key label.
func hsmSeal(t *testing.T, s *harness.SoftHSM, dir, keyLabel string, shamir bool) string {
	t.Helper()
	out := fmt.Sprintf(`seal {
  pkcs11 {
    library     = %q
    token_label = %q
    pin_file    = %q
    key_label   = %q
  }
`, s.Library, s.TokenLabel, s.WritePINFile(t, dir), keyLabel)
	if shamir {
		out += "  shamir {\n    shares    = 3\n    threshold = 2\n  }\n"
	}
	return out + "}\n"
}

func mechanism(st statusOutput, typ string) (m struct {
	Type      string `json:"type"`
	Enrolled  bool   `json:"enrolled"`
	Healthy   *bool  `json:"healthy"`
	LastUsed  bool   `json:"last_used"`
	Error     string `json:"error"`
	Threshold int    `json:"threshold"`
	Shares    int    `json:"shares"`
	Progress  int    `json:"progress"`
}, ok bool) {
	for _, x := range st.Seal.Mechanisms {
		if x.Type == typ {
			return x, true
		}
	}
	return m, false
}

func submitShares(t *testing.T, tr *harness.Transcript, bin, addr string, shares ...string) {
	t.Helper()
	for _, s := range shares {
		if out, errOut, code := harness.Run(t, tr, []byte(s+"\n"), bin, "unseal", "--address", addr); code != 0 {
			t.Fatalf("unseal: exit %d: %s %s", code, out, errOut)
		}
	}
}

// The main path: HSM and Shamir configured; the HSM unseals at
// every restart; without the token the node stays sealed and says why;
// shares open it; with the token back it unseals by itself again. Then the
// shares are rotated (old ones void), and with the HSM gone from the
// config Shamir alone still works.
func TestHSMAndSharesEachUnseal(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	hsm := harness.NewSoftHSM(t, "gitlab-secrets")
	hsm.GenerateAESKey(t, "kek")
	cfg, addr := nodeConfig(t, dir, "node-1", "127.0.0.1", "", hsmSeal(t, hsm, dir, "kek", true))
	start := func() *harness.Node {
		n := harness.StartNode(t, tr, bin, cfg, addr, hsm.Env()...)
		n.WaitServing(t, tr)
		return n
	}
	stop := func(n *harness.Node) {
		t.Helper()
		if code := n.Signal(t, syscall.SIGTERM, time.Minute); code != 0 {
			t.Fatalf("SIGTERM: exit %d", code)
		}
	}

	n := start()
	res := initCluster(t, bin, addr)
	if len(res.Shares) != 3 || res.Threshold != 2 {
		t.Fatalf("init: %d shares, threshold %d", len(res.Shares), res.Threshold)
	}
	st := waitState(t, tr, bin, addr, "active")
	if p, _ := mechanism(st, "pkcs11"); !p.Enrolled || p.Healthy == nil || !*p.Healthy {
		t.Fatalf("after init: %+v", st.Seal)
	}
	const secretValue = "s3cret-7a1b93"
	c := apiClient(t, addr, res.RootToken)
	harness.MountKVv2(t, c, "kv")
	if _, err := c.KVv2("kv").Put(context.Background(), "db", map[string]interface{}{"password": secretValue}); err != nil {
		t.Fatal(err)
	}
	stop(n)

	// Restart: the HSM unseals, no human involved.
	n = start()
	st = waitState(t, tr, bin, addr, "active")
	if p, _ := mechanism(st, "pkcs11"); !p.LastUsed {
		t.Fatalf("restart with the HSM: not unsealed by it: %+v", st.Seal)
	}
	stop(n)

	// The token is gone: sealed, and status says why.
	hsm.RemoveToken(t)
	n = start()
	st, code := status(t, tr, bin, addr)
	p, _ := mechanism(st, "pkcs11")
	if code != 2 || st.State != "sealed" || p.Healthy == nil || *p.Healthy || !strings.Contains(p.Error, "token was not found") {
		t.Fatalf("without the token: exit %d %+v", code, st.Seal)
	}
	harness.Eventually(t, time.Minute, "the log to say why the node is sealed", func() bool {
		return strings.Contains(n.Output.String(), "waiting for the HSM or for Shamir shares")
	})
	submitShares(t, tr, bin, addr, res.Shares[0])
	st, _ = status(t, tr, bin, addr)
	if s, _ := mechanism(st, "shamir"); !st.Sealed || s.Progress != 1 {
		t.Fatalf("after T-1 shares: %+v", st)
	}
	submitShares(t, tr, bin, addr, res.Shares[2])
	st = waitState(t, tr, bin, addr, "active")
	if s, _ := mechanism(st, "shamir"); !s.LastUsed {
		t.Fatalf("unsealed by shares: %+v", st.Seal)
	}
	if got, err := c.KVv2("kv").Get(context.Background(), "db"); err != nil || got.Data["password"] != secretValue {
		t.Fatalf("secret after unseal by shares: %v", err)
	}
	stop(n)

	// The token is back: the next restart unseals by itself.
	hsm.RestoreToken(t)
	n = start()
	st = waitState(t, tr, bin, addr, "active")
	if p, _ := mechanism(st, "pkcs11"); !p.LastUsed {
		t.Fatalf("HSM restored: %+v", st.Seal)
	}

	// Rotate the shares: two current shares authorize it, the new ones
	// go to files; nothing changes until three of them are given back;
	// then the old ones are void and the new ones work.
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(res.RootToken), 0o600)
	shareDir := filepath.Join(dir, "new-shares")
	out, errOut, code := harness.Run(t, tr, []byte(res.Shares[1]+"\n"+res.Shares[2]+"\n"), bin, "seal", "rotate-shares", "--address", addr, "--token-file", tokenFile,
		"--shares", "4", "--threshold", "3", "--share-dir", shareDir)
	if code != 0 || !strings.Contains(errOut, "Nothing has changed yet") || !strings.Contains(errOut, "seal verify") {
		t.Fatalf("rotate-shares: exit %d: %s %s", code, out, errOut)
	}
	var newShares []string
	for i := 1; i <= 4; i++ {
		f := filepath.Join(shareDir, fmt.Sprintf("unseal-share-g2-%d", i))
		b, err := os.ReadFile(f)
		if st, _ := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("share file %s: %v", f, err)
		}
		newShares = append(newShares, strings.TrimSpace(string(b)))
	}
	if st, _ := status(t, tr, bin, addr); st.Seal.Generation != 1 {
		t.Fatalf("the seal changed before the new shares were verified: generation %d", st.Seal.Generation)
	}
	out, errOut, code = harness.Run(t, tr, []byte(newShares[2]+"\n"+newShares[0]+"\n"+newShares[3]+"\n"), bin, "seal", "verify", "--address", addr)
	if code != 0 || !strings.Contains(out, "pkcs11, shamir") || !strings.Contains(out, "generation 2") {
		t.Fatalf("seal verify: exit %d: %s %s", code, out, errOut)
	}
	stop(n)

	// HSM taken out of the config: Shamir alone.
	replaceSeal(t, cfg, "seal {\n  shamir {}\n}\n")
	n = start()
	st, _ = status(t, tr, bin, addr)
	if p, _ := mechanism(st, "pkcs11"); st.State != "sealed" || !p.Enrolled || !strings.Contains(p.Error, "no seal \"pkcs11\" block") {
		t.Fatalf("without HSM config: %+v", st)
	}
	if _, errOut, code := harness.Run(t, tr, []byte(res.Shares[1]+"\n"), bin, "unseal", "--address", addr); code != 1 || !strings.Contains(errOut, "voided by a share rotation") {
		t.Fatalf("old share after rotation: exit %d: %s", code, errOut)
	}
	submitShares(t, tr, bin, addr, newShares[0], newShares[3], newShares[1])
	waitState(t, tr, bin, addr, "active")
	if got, err := c.KVv2("kv").Get(context.Background(), "db"); err != nil || got.Data["password"] != secretValue {
		t.Fatalf("secret after Shamir-only unseal: %v", err)
	}
	stop(n)

	scanForSecrets(t, tr.String()+readAll(t, dir, "audit.log"), append(append([]string{secretValue, hsm.PIN, res.RootToken}, res.Shares...), newShares...))
}

// replaceSeal swaps the seal section of a config written by nodeConfig.
func replaceSeal(t *testing.T, cfg, section string) {
	t.Helper()
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := strings.Cut(string(b), "seal {")
	if err := os.WriteFile(cfg, []byte(head+section), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name))
	return string(b)
}

func scanForSecrets(t *testing.T, haystack string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(haystack, s) {
			t.Errorf("a secret value, share, PIN or token appears in a log or output (%d chars)", len(s))
		}
	}
}

// Every node can unseal with either mechanism: a second node with the HSM
// configured joins and unseals by itself; a third without it joins with
// operators' shares. After a restart the third waits for shares again.
func TestJoiningNodesUnsealByHSMAndByShares(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	hsm := harness.NewSoftHSM(t, "gitlab-secrets")
	hsm.GenerateAESKey(t, "kek")
	cfg1, addr1 := nodeConfig(t, dir, "node-1", "127.0.0.1", "", hsmSeal(t, hsm, dir, "kek", true))
	cfg2, addr2 := nodeConfig(t, dir, "node-2", "127.0.0.2", addr1, hsmSeal(t, hsm, dir, "kek", true))
	cfg3, addr3 := nodeConfig(t, dir, "node-3", "127.0.0.3", addr1, "seal {\n  shamir {}\n}\n")

	n1 := harness.StartNode(t, tr, bin, cfg1, addr1, hsm.Env()...)
	n1.WaitServing(t, tr)
	res := initCluster(t, bin, addr1)
	waitState(t, tr, bin, addr1, "active")

	n2 := harness.StartNode(t, tr, bin, cfg2, addr2, hsm.Env()...)
	n2.WaitServing(t, tr)
	st := waitState(t, tr, bin, addr2, "standby")
	if p, _ := mechanism(st, "pkcs11"); !p.LastUsed {
		t.Fatalf("node-2 did not unseal by the HSM: %+v", st.Seal)
	}

	n3 := harness.StartNode(t, tr, bin, cfg3, addr3)
	n3.WaitServing(t, tr)
	if st, _ := status(t, tr, bin, addr3); st.Initialized {
		t.Fatalf("node-3 joined without a key: %+v", st)
	}
	submitShares(t, tr, bin, addr3, res.Shares[1], res.Shares[0])
	st = waitState(t, tr, bin, addr3, "standby")
	if s, _ := mechanism(st, "shamir"); !s.LastUsed {
		t.Fatalf("node-3 did not unseal by shares: %+v", st.Seal)
	}

	// Writes through any node reach all three.
	c3 := apiClient(t, addr3, res.RootToken)
	harness.MountKVv2(t, c3, "kv")
	if _, err := c3.KVv2("kv").Put(context.Background(), "x", map[string]interface{}{"v": "1"}); err != nil {
		t.Fatal(err)
	}
	if got, err := apiClient(t, addr2, res.RootToken).KVv2("kv").Get(context.Background(), "x"); err != nil || got.Data["v"] != "1" {
		t.Fatalf("read through node-2: %v", err)
	}

	// node-3 restarts: it has storage now and waits for shares again.
	if code := n3.Signal(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("SIGTERM node-3: exit %d", code)
	}
	n3 = harness.StartNode(t, tr, bin, cfg3, addr3)
	n3.WaitServing(t, tr)
	if st, code := status(t, tr, bin, addr3); code != 2 || st.State != "sealed" || !st.Initialized {
		t.Fatalf("node-3 restarted: exit %d %+v", code, st)
	}
	submitShares(t, tr, bin, addr3, res.Shares[2], res.Shares[1])
	waitState(t, tr, bin, addr3, "standby")
	for _, n := range []*harness.Node{n3, n2, n1} {
		n.Signal(t, syscall.SIGTERM, time.Minute)
	}
	scanForSecrets(t, tr.String(), append([]string{hsm.PIN, res.RootToken}, res.Shares...))
}

// Wrong PIN, wrong key label, missing library, a corrupted share, a share
// of another cluster: each its own message; nothing changes on disk.
func TestSealErrorsChangeNothing(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	hsm := harness.NewSoftHSM(t, "gitlab-secrets")
	hsm.GenerateAESKey(t, "kek")
	good := hsmSeal(t, hsm, dir, "kek", true)
	cfg, addr := nodeConfig(t, dir, "node-1", "127.0.0.1", "", good)
	n := harness.StartNode(t, tr, bin, cfg, addr, hsm.Env()...)
	n.WaitServing(t, tr)
	res := initCluster(t, bin, addr)
	waitState(t, tr, bin, addr, "active")
	n.Signal(t, syscall.SIGTERM, time.Minute)
	before := snapshotDir(t, filepath.Join(dir, "node-1"))

	badPIN := filepath.Join(dir, "bad-pin")
	os.WriteFile(badPIN, []byte("not-the-pin-93\n"), 0o600)
	t.Run("wrong PIN", func(t *testing.T) {
		replaceSeal(t, cfg, strings.Replace(good, hsm.WritePINFile(t, dir), badPIN, 1))
		n := harness.StartNode(t, tr, bin, cfg, addr, hsm.Env()...)
		n.WaitServing(t, tr)
		st, code := status(t, tr, bin, addr)
		p, _ := mechanism(st, "pkcs11")
		if code != 2 || st.State != "sealed" || !strings.Contains(p.Error, "the HSM refused the PIN") {
			t.Fatalf("exit %d, pkcs11 %+v", code, p)
		}
		n.Signal(t, syscall.SIGTERM, time.Minute)
	})
	// Unwrapping uses the key the cluster recorded, so a wrong key_label
	// does not lock the cluster out; status names the mistake.
	t.Run("wrong key label", func(t *testing.T) {
		replaceSeal(t, cfg, strings.Replace(good, `key_label   = "kek"`, `key_label   = "other-key"`, 1))
		n := harness.StartNode(t, tr, bin, cfg, addr, hsm.Env()...)
		n.WaitServing(t, tr)
		st := waitState(t, tr, bin, addr, "active")
		p, _ := mechanism(st, "pkcs11")
		if !p.LastUsed || !strings.Contains(p.Error, `seal.pkcs11.key_label "other-key" is not usable`) || !strings.Contains(p.Error, `no secret key labelled "other-key"`) {
			t.Fatalf("pkcs11 %+v", p)
		}
		n.Signal(t, syscall.SIGTERM, time.Minute)
	})
	t.Run("init with a wrong key label", func(t *testing.T) {
		fresh, freshAddr := nodeConfig(t, dir, "fresh", "127.0.0.5", "", strings.Replace(good, `key_label   = "kek"`, `key_label   = "nokey"`, 1))
		n := harness.StartNode(t, tr, bin, fresh, freshAddr, hsm.Env()...)
		n.WaitServing(t, tr)
		_, errOut, code := harness.Run(t, tr, nil, bin, "init", "--address", freshAddr)
		if code != 1 || !strings.Contains(errOut, `no secret key labelled "nokey"`) {
			t.Fatalf("init: exit %d: %s", code, errOut)
		}
		if st, _ := status(t, tr, bin, freshAddr); st.Initialized {
			t.Fatal("a failed init left the node initialized")
		}
		n.Signal(t, syscall.SIGTERM, time.Minute)
	})
	t.Run("missing library", func(t *testing.T) {
		replaceSeal(t, cfg, strings.Replace(good, hsm.Library, "/nonexistent/libsofthsm2.so", 1))
		_, errOut, code := harness.Run(t, tr, nil, bin, "server", "--config", cfg)
		if code != 3 || !strings.Contains(errOut, "seal.pkcs11.library: cannot read /nonexistent/libsofthsm2.so") {
			t.Fatalf("exit %d: %s", code, errOut)
		}
	})

	// Shares: a corrupted one and one of another cluster are refused
	// one by one; progress is untouched.
	replaceSeal(t, cfg, "seal {\n  shamir {}\n}\n")
	n = harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	corrupt := []byte(res.Shares[0])
	corrupt[len(corrupt)/2] = map[bool]byte{true: 'A', false: 'B'}[corrupt[len(corrupt)/2] != 'A']
	otherCfg, otherAddr := nodeConfig(t, dir, "other", "127.0.0.4", "", "")
	other := harness.StartNode(t, tr, bin, otherCfg, otherAddr)
	other.WaitServing(t, tr)
	otherRes := initCluster(t, bin, otherAddr)
	for _, tc := range []struct{ share, want string }{
		{string(corrupt), "corrupted"},
		{otherRes.Shares[0], "belongs to another cluster"},
		{res.Shares[0][:20], "malformed"},
	} {
		if _, errOut, code := harness.Run(t, tr, []byte(tc.share+"\n"), bin, "unseal", "--address", addr); code != 1 || !strings.Contains(errOut, tc.want) {
			t.Fatalf("share (%s): exit %d: %s", tc.want, code, errOut)
		}
	}
	st, _ := status(t, tr, bin, addr)
	if s, _ := mechanism(st, "shamir"); s.Progress != 0 || !st.Sealed {
		t.Fatalf("refused shares changed the progress: %+v", st.Seal)
	}
	n.Signal(t, syscall.SIGTERM, time.Minute)
	other.Signal(t, syscall.SIGTERM, time.Minute)
	if after := snapshotDir(t, filepath.Join(dir, "node-1")); after != before {
		t.Fatalf("the failed attempts changed the seal state on disk:\nbefore %s\nafter  %s", before, after)
	}
	scanForSecrets(t, tr.String(), append([]string{hsm.PIN, "not-the-pin-93", res.RootToken}, res.Shares...))
}

// snapshotDir returns what must not change: the seal header of the stored
// keys (cluster, generation, KEK check, mechanisms) as it lies in the Raft
// FSM's database file.
func snapshotDir(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "vault.db"))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(b), `{"v":1,"cluster":`)
	if i < 0 {
		t.Fatal("no seal header in the data dir")
	}
	j := strings.Index(string(b[i:]), "}")
	return string(b[i : i+j])
}
