package appliance

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openbao/openbao/api/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/testpki"
)

// servedSerial is the serial number of the certificate the listener shows.
func servedSerial(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// Reload: new certificates from the same files, a new audit device, the
// log level; an invalid config changes nothing.
func TestReload(t *testing.T) {
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	dir := t.TempDir()
	certFile, keyFile := testpki.WriteCert(t, dir)
	cfg.Listeners[0].TLSDisable = false
	cfg.Listeners[0].TLSCertFile, cfg.Listeners[0].TLSKeyFile = certFile, keyFile
	a := startNode(t, cfg)
	res := initAndUnseal(t, a)
	hostport := strings.TrimPrefix(a.APIAddr(), "https://")
	before := servedSerial(t, hostport)

	// New certificate in the same files (writeCert uses serial 1: bump it).
	testpki.WriteCertSerial(t, dir, 2)
	auditFile := filepath.Join(dir, "audit.log")
	next := *cfg
	next.LogLevel = "debug"
	next.Audit = []config.AuditDevice{{Type: "file", Path: "file", Options: map[string]string{"file_path": auditFile}}}

	bad := next
	bad.NodeID = ""
	if err := a.Reload(&bad); err == nil {
		t.Fatal("an invalid config was applied")
	}
	if servedSerial(t, hostport) != before {
		t.Fatal("a refused reload changed the certificate")
	}

	if err := a.Reload(&next); err != nil {
		t.Fatal(err)
	}
	if after := servedSerial(t, hostport); after == before {
		t.Fatalf("the listener still serves certificate %s", before)
	}
	conf := api.DefaultConfig()
	conf.Address = a.APIAddr()
	conf.ConfigureTLS(&api.TLSConfig{Insecure: true})
	c, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(res.RootToken)
	waitFor(t, "the new audit device to log a request", func() bool {
		c.Auth().Token().LookupSelf()
		b, _ := os.ReadFile(auditFile)
		return strings.Contains(string(b), "auth/token/lookup-self")
	})
	if !a.logger.IsDebug() {
		t.Fatal("the log level was not raised to debug")
	}
}

// Reload keeps the new gitlab block, so `gitlab bootstrap` applies it (the
// new audience ends up in GitLab Rails' role); settings that need a
// restart are named in the log and left as they started. A gitlab block
// whose keys file changed waits for the restart as a whole.
func TestReloadKeepsGitLabBlock(t *testing.T) {
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	dir := t.TempDir()
	keys := testpki.WritePublicKey(t, dir)
	cfg.GitLab = &config.GitLab{
		URL:            "https://gitlab.example.com",
		PublicKeysFile: keys,
		KeysAddress:    freeAddr(t),
		Audience:       "https://old.example.com:8200",
	}
	cfg.GitLab.TokenTTL, cfg.GitLab.TokenMaxTTL = config.DefaultGitLabTokenTTL, config.DefaultGitLabTokenMaxTTL
	a := startNode(t, cfg)
	res := initAndUnseal(t, a)
	if res.GitLabBootstrap != client.BootstrapRunning {
		t.Fatalf("bootstrap after init: %q", res.GitLabBootstrap)
	}
	waitFor(t, "the bootstrap after init", func() bool { return a.Status(context.Background()).GitLabBootstrap == client.BootstrapApplied })
	c := baoClient(t, a, res.RootToken)
	audiences := func() []any {
		t.Helper()
		s, err := c.Logical().Read("auth/gitlab_rails_jwt/role/app")
		if err != nil || s == nil {
			t.Fatalf("reading the role: %v", err)
		}
		aud, _ := s.Data["bound_audiences"].([]any)
		return aud
	}
	if aud := audiences(); len(aud) != 1 || aud[0] != "https://old.example.com:8200" {
		t.Fatalf("after init: bound_audiences %v", aud)
	}

	next := *cfg
	g := *cfg.GitLab
	g.Audience = "https://new.example.com:8200"
	next.GitLab = &g
	next.Seal = &config.Seal{Shamir: &config.ShamirSeal{Shares: 7, Threshold: 4}}
	next.Listeners = []config.Listener{cfg.Listeners[0]}
	next.Listeners[0].Address = freeAddr(t)
	if err := a.Reload(&next); err != nil {
		t.Fatal(err)
	}
	g.Audience = "https://changed-after-reload.example.com:8200" // Reload kept its own copy
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := a.BootstrapGitLab(ctx, res.RootToken); err != nil {
		t.Fatal(err)
	}
	if aud := audiences(); len(aud) != 1 || aud[0] != "https://new.example.com:8200" {
		t.Fatalf("gitlab bootstrap after the reload applied bound_audiences %v, want the new audience", aud)
	}
	want := "changed, applies at the next start: listener[0].address, seal.shamir.shares, seal.shamir.threshold"
	if !strings.Contains(log.String(), want) {
		t.Fatalf("the log does not say %q:\n%s", want, log.String())
	}
	if got := a.config(); got.Seal.Shamir.Shares != 5 || got.Listeners[0].Address != cfg.Listeners[0].Address || got.GitLab.Audience != "https://new.example.com:8200" {
		t.Fatalf("the running config after the reload: seal %+v, listener %s, audience %s", got.Seal.Shamir, got.Listeners[0].Address, got.GitLab.Audience)
	}

	// Another keys file: the keys server still serves the one the node
	// started with, so the block waits for the restart.
	other := filepath.Join(t.TempDir(), "other.pem")
	b, _ := os.ReadFile(keys)
	os.WriteFile(other, b, 0o644)
	moved := *cfg
	mg := *cfg.GitLab
	mg.PublicKeysFile, mg.Audience = other, "https://third.example.com:8200"
	moved.GitLab = &mg
	if err := a.Reload(&moved); err != nil {
		t.Fatal(err)
	}
	if got := a.config().GitLab; got.Audience != "https://new.example.com:8200" || got.PublicKeysFile != keys {
		t.Fatalf("a gitlab block with another keys file was applied live: %+v", got)
	}
	want = "changed, applies at the next start: gitlab.jwt_validation_pubkeys_file, gitlab.audience"
	if !strings.Contains(log.String(), want) {
		t.Fatalf("the log does not say %q:\n%s", want, log.String())
	}
}
