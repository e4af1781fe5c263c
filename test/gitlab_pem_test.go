package test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/gitlabsim"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// PEM mode: GitLab's keys come from a file, which the appliance serves to
// its own OpenBao on loopback (gitlab_rails_jwt never fetches from GitLab;
// the projects' mounts Rails sets up do, as GitLab configures them). A
// rotated key is picked up when the file is
// replaced: no restart, no command, no token. `gitlab bootstrap` repeats
// safely, and refuses a token without the rights (Rails' own).
func TestGitLabBootstrapWithPEMKeys(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	is, err := gitlabsim.NewIssuer()
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close() // projects' pipeline_jwt mounts still discover GitLab, as Rails configures them
	dir := t.TempDir()
	keys := filepath.Join(dir, "gitlab-jwt.pem")
	writePEM := func() {
		t.Helper()
		p, err := is.PublicKeysPEM()
		if err != nil {
			t.Fatal(err)
		}
		// Replace the file as an operator or Omnibus would: write, rename.
		tmp := keys + ".new"
		if err := os.WriteFile(tmp, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, keys); err != nil {
			t.Fatal(err)
		}
	}
	writePEM()
	cfg, addr := nodeConfig(t, dir, "node-1", "127.0.0.1", "", "")
	keysAddr := harness.FreeAddr(t, "127.0.0.1")
	f, _ := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintf(f, "gitlab {\n  url = %q\n  jwt_validation_pubkeys_file = %q\n  pubkeys_jwks_address = %q\n  audience = %q\n}\n", is.URL, keys, keysAddr, addr)
	f.Close()
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	res := initCluster(t, bin, addr)
	if res.GitLabBootstrap != "running" {
		t.Fatalf("init: GitLab bootstrap %q", res.GitLabBootstrap)
	}
	harness.WaitGitLabBootstrap(t, tr, bin, addr)
	waitState(t, tr, bin, addr, "active")
	hc := &http.Client{Timeout: 30 * time.Second}
	rails := &gitlabsim.Rails{Addr: addr, HTTP: hc, Issuer: is}
	railsToken, err := rails.Login()
	if err != nil {
		t.Fatalf("Rails login with the PEM key: %v", err)
	}
	p3 := gitlabsim.Project{Org: 1, Group: 2, ID: 3, Path: "acme/platform/project-3"}
	if err := rails.Provision(p3); err != nil {
		t.Fatalf("provisioning through inline auth with the PEM key: %v", err)
	}

	oldJWT := sign(t, is, is.RailsClaims(addr)) // signed before the rotation, still valid
	if err := is.Rotate(); err != nil {
		t.Fatal(err)
	}
	if _, err := rails.Login(); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "failed to verify id token signature") {
		t.Fatalf("a key not yet in the PEM file: want HTTP 400 ...failed to verify id token signature..., got %v", err)
	}
	writePEM()
	if _, err := rails.Login(); err != nil {
		t.Fatalf("Rails login with the rotated key, once in the file: %v", err)
	}
	if err := rails.CreateSecret(p3, "AFTER_ROTATION", "v-rot-19ae", "*", "*"); err != nil {
		t.Fatalf("inline auth with the rotated key: %v", err)
	}

	// The bootstrap command: refused with Rails' token, applied again with
	// an operator's (here the root token, from standard input).
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(railsToken), 0o600)
	if _, errOut, code := harness.Run(t, tr, nil, bin, "gitlab", "bootstrap", "--address", addr, "--token-file", tokenFile); code != 1 || !strings.Contains(errOut, "permission denied") {
		t.Fatalf("bootstrap with Rails' token: exit %d: %s", code, errOut)
	}
	out, errOut, code := harness.Run(t, tr, []byte(res.RootToken+"\n"), bin, "gitlab", "bootstrap", "--address", addr)
	if code != 0 || !strings.Contains(out, "exists   sys/auth/gitlab_rails_jwt") {
		t.Fatalf("bootstrap: exit %d: %s %s", code, out, errOut)
	}
	if _, err := rails.Login(); err != nil {
		t.Fatalf("Rails login after a repeated bootstrap: %v", err)
	}

	// Withdrawing the old key: OpenBao keeps keys it has fetched until a
	// token names one it does not know, so a withdrawn key needs the
	// bootstrap again (rewriting the mount's config drops the cache).
	is.Retire()
	writePEM()
	if _, errOut, code := harness.Run(t, tr, []byte(res.RootToken+"\n"), bin, "gitlab", "bootstrap", "--address", addr); code != 0 {
		t.Fatalf("bootstrap after withdrawing a key: exit %d: %s", code, errOut)
	}
	if _, err := gitlabsim.Login(hc, addr, "", gitlabsim.RailsMount, gitlabsim.RailsRole, oldJWT); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "failed to verify id token signature") {
		t.Fatalf("a token signed with a withdrawn key after the bootstrap: want HTTP 400 ...failed to verify id token signature..., got %v", err)
	}
	if _, err := rails.Login(); err != nil {
		t.Fatalf("Rails login with the current key after withdrawing the old: %v", err)
	}
	scanForSecrets(t, tr.String(), []string{res.RootToken, railsToken, "v-rot-19ae"})
	if code := n.Signal(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}
