package appliance

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openbao/openbao/api/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/freeport"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/testpki"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// syncBuffer collects a node's log for the secret scans.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freeAddr returns a loopback host:port nobody listens on, with the port
// after it free too (for the cluster listener).
func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := freeport.Pair("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

func testConfig(t *testing.T, log *syncBuffer) *config.Config {
	t.Helper()
	cfg := config.NewConfig()
	cfg.NodeID = "node-1"
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	addr := freeAddr(t)
	cfg.Listeners = []config.Listener{{Address: addr, TLSDisable: true, TLSMinVersion: config.DefaultTLSMinVersion}}
	cfg.Cluster.Address = config.NextPort(addr)
	cfg.LogOutput = log
	return cfg
}

func startNode(t *testing.T, cfg *config.Config) *Appliance {
	t.Helper()
	a, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func baoClient(t *testing.T, a *Appliance, token string) *api.Client {
	t.Helper()
	conf := api.DefaultConfig()
	conf.Address = a.APIAddr()
	c, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	return c
}

// initAndUnseal initializes a cluster (3 shares, threshold 2); the node
// unseals itself with the new seal key.
func initAndUnseal(t *testing.T, a *Appliance) *client.InitResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := a.Init(ctx, client.InitRequest{Shares: 3, Threshold: 2})
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	if len(res.UnsealShares) != 3 || res.UnsealThreshold != 2 || len(res.RecoveryKeys) != 5 || res.RecoveryThreshold != 3 {
		t.Fatalf("init result: %d shares of %d, %d recovery keys of %d", len(res.UnsealShares), res.UnsealThreshold, len(res.RecoveryKeys), res.RecoveryThreshold)
	}
	if err := a.WaitUnsealed(ctx); err != nil {
		t.Fatal(err)
	}
	return res
}

// startWithSecret starts an initialized node with KV v2 at kv/ holding
// kv/k = {"v": value}, and returns it with its init result and a root client.
func startWithSecret(t *testing.T, cfg *config.Config, value string) (*Appliance, *client.InitResult, *api.Client) {
	t.Helper()
	a := startNode(t, cfg)
	res := initAndUnseal(t, a)
	c := baoClient(t, a, res.RootToken)
	harness.MountKVv2(t, c, "kv")
	if _, err := c.KVv2("kv").Put(context.Background(), "k", map[string]interface{}{"v": value}); err != nil {
		t.Fatal(err)
	}
	return a, res, c
}

// unsealWithShares submits shares and waits for the node's role.
func unsealWithShares(t *testing.T, a *Appliance, shares ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, s := range shares {
		p, err := a.Unseal(ctx, s)
		if err != nil {
			t.Fatalf("share %d: %v", i, err)
		}
		if last := i == len(shares)-1; p.Sealed == last {
			t.Fatalf("after share %d: sealed=%v", i, p.Sealed)
		}
	}
	if err := a.WaitUnsealed(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestKVv2Lifecycle(t *testing.T) {
	log := &syncBuffer{}
	a := startNode(t, testConfig(t, log))
	if st := a.Status(context.Background()); st.State != client.StateUninitialized || !st.Sealed {
		t.Fatalf("fresh node: state %q sealed %v", st.State, st.Sealed)
	}
	res := initAndUnseal(t, a)
	if st := a.Status(context.Background()); st.State != client.StateActive || st.Sealed || !st.Raft.Voter {
		t.Fatalf("after unseal: %+v", st)
	}
	c := baoClient(t, a, res.RootToken)
	ctx := context.Background()
	harness.MountKVv2(t, c, "secret")
	kv := c.KVv2("secret")
	const v1, v2 = "value-one-8f2a", "value-two-3c9d"
	if _, err := kv.Put(ctx, "app/db", map[string]interface{}{"password": v1}); err != nil {
		t.Fatalf("put v1: %v", err)
	}
	if _, err := kv.Put(ctx, "app/db", map[string]interface{}{"password": v2}); err != nil {
		t.Fatalf("put v2: %v", err)
	}
	got, err := kv.Get(ctx, "app/db")
	if err != nil || got.Data["password"] != v2 || got.VersionMetadata.Version != 2 {
		t.Fatalf("read latest: %v %+v", err, got)
	}
	old, err := kv.GetVersion(ctx, "app/db", 1)
	if err != nil || old.Data["password"] != v1 {
		t.Fatalf("read version 1: %v %+v", err, old)
	}
	if err := kv.Delete(ctx, "app/db"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if got, err := kv.Get(ctx, "app/db"); err != nil || got.Data != nil || got.VersionMetadata.DeletionTime.IsZero() {
		t.Fatalf("read after delete: want no data and a deletion time, got %v %+v", err, got)
	}
	if err := kv.Undelete(ctx, "app/db", []int{2}); err != nil {
		t.Fatalf("undelete: %v", err)
	}
	if got, err := kv.Get(ctx, "app/db"); err != nil || got.Data["password"] != v2 {
		t.Fatalf("read after undelete: %v %+v", err, got)
	}
	if err := kv.Destroy(ctx, "app/db", []int{1}); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if got, err := kv.GetVersion(ctx, "app/db", 1); err != nil || got.Data != nil || !got.VersionMetadata.Destroyed {
		t.Fatalf("read destroyed version: want no data and destroyed, got %v %+v", err, got)
	}
	meta, err := kv.GetMetadata(ctx, "app/db")
	if err != nil || !meta.Versions["1"].Destroyed || meta.Versions["2"].Destroyed {
		t.Fatalf("metadata after destroy: %v %+v", err, meta)
	}

	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, secret := range append(append([]string{v1, v2, res.RootToken}, res.UnsealShares...), res.RecoveryKeys...) {
		if strings.Contains(log.String(), secret) {
			t.Errorf("the node's log holds a secret value, share or token")
		}
	}
}

func TestRestartKeepsDataAndRefusesBadShares(t *testing.T) {
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	a, res, _ := startWithSecret(t, cfg, "kept")
	ctx := context.Background()
	if _, err := a.Init(ctx, client.InitRequest{}); !errors.Is(err, ErrAlreadyInitialized) {
		t.Fatalf("second init: want ErrAlreadyInitialized, got %v", err)
	}
	a.Close()

	b := startNode(t, cfg)
	st := b.Status(ctx)
	if st.State != client.StateSealed || len(st.Seal.Mechanisms) != 1 || st.Seal.Mechanisms[0].Threshold != 2 || !st.Seal.Mechanisms[0].Enrolled {
		t.Fatalf("restarted node: %+v", st)
	}
	if _, err := b.Unseal(ctx, "not a share!"); !errors.Is(err, ErrMalformedShare) {
		t.Fatalf("malformed share: got %v", err)
	}
	raw, _ := base64.StdEncoding.DecodeString(res.UnsealShares[1])
	raw[40] ^= 1 // one bit off in the share itself
	if _, err := b.Unseal(ctx, base64.StdEncoding.EncodeToString(raw)); !errors.Is(err, seal.ErrCorruptShare) {
		t.Fatalf("corrupted share: got %v", err)
	}
	if _, err := b.Unseal(ctx, res.UnsealShares[0]); err != nil {
		t.Fatal(err)
	}
	p, err := b.Unseal(ctx, res.UnsealShares[0])
	if !errors.Is(err, ErrDuplicateShare) || p.Progress != 1 || !p.Sealed {
		t.Fatalf("duplicate share: %v %+v", err, p)
	}
	other := startNode(t, testConfig(t, log))
	otherRes, err := other.Init(ctx, client.InitRequest{Shares: 3, Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	p, err = b.Unseal(ctx, otherRes.UnsealShares[1])
	if !errors.Is(err, seal.ErrForeignShare) || !p.Sealed || p.Progress != 1 {
		t.Fatalf("share from another cluster: %v %+v", err, p)
	}
	unsealWithShares(t, b, res.UnsealShares[2])
	got, err := baoClient(t, b, res.RootToken).KVv2("kv").Get(ctx, "k")
	if err != nil || got.Data["v"] != "kept" {
		t.Fatalf("after restart: %v %+v", err, got)
	}
}

func TestStartFailsCleanly(t *testing.T) {
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	busy, err := net.Listen("tcp", cfg.Listeners[0].Address)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if _, err := Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "listener[0]: cannot listen") {
		t.Fatalf("port in use: got %v", err)
	}
	busy.Close()
	// Nothing was left open: the same config starts now.
	a := startNode(t, cfg)
	a.Close()

	bad := testConfig(t, log)
	bad.NodeID = ""
	var ce *config.ConfigError
	if _, err := Start(context.Background(), bad); !errors.As(err, &ce) || ce.Problems[0].Key != "node_id" {
		t.Fatalf("invalid config: got %v", err)
	}
}

func TestEnvironmentDoesNotReconfigure(t *testing.T) {
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	elsewhere := t.TempDir()
	t.Setenv("BAO_RAFT_PATH", elsewhere)
	t.Setenv("VAULT_RAFT_NODE_ID", "intruder")
	a := startNode(t, cfg)
	initAndUnseal(t, a)
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "vault.db")); err != nil {
		t.Fatalf("Raft data not in data_dir: %v", err)
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Fatalf("BAO_RAFT_PATH was used: %v", entries)
	}
	if !strings.Contains(log.String(), "BAO_RAFT_PATH") || !strings.Contains(log.String(), "ignoring") {
		t.Fatalf("no warning about the ignored variables in the log")
	}
	if os.Getenv("BAO_RAFT_PATH") != "" {
		t.Fatal("BAO_RAFT_PATH still set in the process")
	}
}

func TestDevReusesDataDir(t *testing.T) {
	log := &syncBuffer{}
	dir := filepath.Join(t.TempDir(), "dev")
	listen := freeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, info, err := StartDev(ctx, DevOptions{Listen: listen, DataDir: dir, LogOutput: log})
	if err != nil {
		t.Fatal(err)
	}
	if info.Reused {
		t.Fatal("new dev data dir reported as reused")
	}
	tok, err := os.ReadFile(info.RootTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(info.RootTokenFile); st.Mode().Perm() != 0o600 {
		t.Fatalf("root token file mode %04o", st.Mode().Perm())
	}
	token := strings.TrimSpace(string(tok))
	if _, err := baoClient(t, a, token).KVv2("secret").Put(ctx, "hello", map[string]interface{}{"v": "world"}); err != nil {
		t.Fatalf("write to secret/: %v", err)
	}
	a.Close()

	b, info, err := StartDev(ctx, DevOptions{Listen: listen, DataDir: dir, LogOutput: log})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !info.Reused {
		t.Fatal("second dev start did not reuse the data dir")
	}
	got, err := baoClient(t, b, token).KVv2("secret").Get(ctx, "hello")
	if err != nil || got.Data["v"] != "world" {
		t.Fatalf("read after dev restart: %v %+v", err, got)
	}
}

// A TLS listener with the given certificate, a socket audit device that
// receives every request, and Prometheus metrics without a token.
func TestTLSAuditSocketAndMetrics(t *testing.T) {
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	certFile, keyFile := testpki.WriteCert(t, t.TempDir())
	cfg.Listeners[0].TLSDisable = false
	cfg.Listeners[0].Address = strings.Replace(cfg.Listeners[0].Address, "127.0.0.1", "localhost", 1)
	cfg.Listeners[0].TLSCertFile, cfg.Listeners[0].TLSKeyFile = certFile, keyFile
	cfg.Listeners[0].UnauthenticatedMetricsAccess = true
	cfg.Telemetry.PrometheusRetentionTime = "1h"

	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	audit := &syncBuffer{}
	go func() {
		for {
			conn, err := sink.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(audit, conn) }()
		}
	}()
	cfg.Audit = []config.AuditDevice{{Type: "socket", Path: "socket", Options: map[string]string{"address": sink.Addr().String(), "socket_type": "tcp"}}}

	a := startNode(t, cfg)
	if !strings.HasPrefix(a.APIAddr(), "https://localhost:") {
		t.Fatalf("API address %s", a.APIAddr())
	}
	res := initAndUnseal(t, a)

	conf := api.DefaultConfig()
	conf.Address = a.APIAddr()
	if err := conf.ConfigureTLS(&api.TLSConfig{CACert: certFile}); err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(res.RootToken)
	if _, err := c.Auth().Token().LookupSelf(); err != nil {
		t.Fatalf("request over TLS: %v", err)
	}
	waitFor(t, "the audit entry on the socket", func() bool { return strings.Contains(audit.String(), "auth/token/lookup-self") })
	if strings.Contains(audit.String(), res.RootToken) {
		t.Fatal("the audit log holds the token in clear")
	}

	resp, err := c.CloneConfig().HttpClient.Get(a.APIAddr() + "/v1/sys/metrics?format=prometheus")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "# TYPE") {
		t.Fatalf("prometheus metrics: %d %.200s", resp.StatusCode, body)
	}

	plain, err := http.Get(strings.Replace(a.APIAddr(), "https://", "http://", 1) + "/v1/sys/health")
	if err == nil {
		plain.Body.Close()
		if plain.StatusCode < 400 {
			t.Fatal("the TLS listener answered plain HTTP")
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Rotating the shares voids the old ones; recovery keys keep working; the
// last mechanism cannot be removed; an unconfigured HSM cannot be added.
func TestRotateSharesVoidsOldShares(t *testing.T) {
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	a, res, c := startWithSecret(t, cfg, "kept")
	ctx := context.Background()
	rot, newShares := changeSeal(t, a, res.RootToken, "rotate-shares", client.SealChange{Shares: 4, Threshold: 3}, res.UnsealShares)
	if len(newShares) != 4 || rot.Generation != 2 {
		t.Fatalf("rotation result: %d shares, generation %d", len(newShares), rot.Generation)
	}
	if _, err := a.StartSealChange(ctx, res.RootToken, "remove", client.SealChange{Mechanism: "shamir"}); err == nil || !strings.Contains(err.Error(), "only seal mechanism") {
		t.Fatalf("removing the only mechanism: %v", err)
	}
	if _, err := a.StartSealChange(ctx, res.RootToken, "add", client.SealChange{Mechanism: "pkcs11"}); err == nil || !strings.Contains(err.Error(), "no seal \"pkcs11\" block") {
		t.Fatalf("adding an unconfigured HSM: %v", err)
	}
	a.Close()

	b := startNode(t, cfg)
	if st := b.Status(ctx); st.Seal.Mechanisms[0].Threshold != 3 || st.Seal.Mechanisms[0].Shares != 4 || st.Seal.Generation != 2 {
		t.Fatalf("after rotation and restart: %+v", st.Seal)
	}
	if _, err := b.Unseal(ctx, res.UnsealShares[0]); !errors.Is(err, seal.ErrVoidShare) {
		t.Fatalf("old share after rotation: %v", err)
	}
	unsealWithShares(t, b, newShares[3], newShares[0], newShares[2])
	c = baoClient(t, b, res.RootToken)
	if got, err := c.KVv2("kv").Get(ctx, "k"); err != nil || got.Data["v"] != "kept" {
		t.Fatalf("data after rotation: %v", err)
	}

	// The recovery keys survived the re-encryption: generate-root works.
	gen, err := c.Sys().GenerateRootInit("", "")
	if err != nil {
		t.Fatal(err)
	}
	var st *api.GenerateRootStatusResponse
	for _, k := range res.RecoveryKeys[:3] {
		if st, err = c.Sys().GenerateRootUpdate(k, gen.Nonce); err != nil {
			t.Fatalf("generate-root with a recovery key: %v", err)
		}
	}
	if !st.Complete || st.EncodedToken == "" {
		t.Fatalf("generate-root did not complete: %+v", st)
	}
}

// The bao CLI's calls: sys/init enrolls the seal and returns the shares,
// sys/unseal takes them (hex or base64) after a restart.
func TestBaoCompatInitAndUnseal(t *testing.T) {
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	a := startNode(t, cfg)
	c := baoClient(t, a, "")
	init, err := c.Sys().Init(&api.InitRequest{SecretShares: 3, SecretThreshold: 2, RecoveryShares: 1, RecoveryThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(init.Keys) != 3 || len(init.KeysB64) != 3 || len(init.RecoveryKeysB64) != 1 || init.RootToken == "" {
		t.Fatalf("sys/init answer: %d keys, %d base64, %d recovery", len(init.Keys), len(init.KeysB64), len(init.RecoveryKeysB64))
	}
	if err := a.WaitUnsealed(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sys().Init(&api.InitRequest{SecretShares: 1, SecretThreshold: 1}); err == nil {
		t.Fatal("second sys/init accepted")
	}
	a.Close()

	b := startNode(t, cfg)
	c = baoClient(t, b, "")
	st, err := c.Sys().Unseal(init.Keys[2])
	if err != nil || !st.Sealed || st.Progress != 1 || st.T != 2 || st.N != 3 {
		t.Fatalf("sys/unseal hex share: %v %+v", err, st)
	}
	if _, err := c.Sys().Unseal(init.KeysB64[2]); err == nil || !strings.Contains(err.Error(), "already submitted") {
		t.Fatalf("duplicate share through sys/unseal: %v", err)
	}
	if st, err = c.Sys().Unseal(init.KeysB64[0]); err != nil || st.Sealed {
		t.Fatalf("sys/unseal second share: %v %+v", err, st)
	}
	if st, err := c.Sys().SealStatus(); err != nil || st.Sealed || !st.Initialized {
		t.Fatalf("sys/seal-status: %v %+v", err, st)
	}
}
