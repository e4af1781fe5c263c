package gitlabsim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// StartAppliance starts an appliance process whose config has a gitlab
// block trusting the issuer's JWKS and a file audit device, initializes
// it (which applies the GitLab bootstrap) and returns the node, its API
// URL, the root token and the audit log's path.
func StartAppliance(t testing.TB, tr *harness.Transcript, is *Issuer) (*harness.Node, string, string, string) {
	t.Helper()
	bin := harness.Binary(t)
	dir := t.TempDir()
	listen := harness.FreeAddr(t, "127.0.0.1")
	addr := "http://" + listen
	audit := filepath.Join(dir, "audit.log")
	cfg := filepath.Join(dir, "appliance.hcl")
	src := fmt.Sprintf(`node_id  = "gitlab-1"
data_dir = %q
listener {
  address     = %q
  tls_disable = true
}
audit "file" {
  options = { file_path = %q }
}
gitlab {
  url      = %q
  jwks_url = %q
  audience = %q
}
`, filepath.Join(dir, "data"), listen, audit, is.URL, is.URL+"/oauth/discovery/keys", addr)
	if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	out, errOut, code := harness.Run(t, &harness.Transcript{}, nil, bin, "init", "--format", "json", "--address", addr)
	var res struct {
		RootToken       string `json:"root_token"`
		GitLabBootstrap string `json:"gitlab_bootstrap"`
	}
	// init answers with the secrets first; the bootstrap follows.
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.GitLabBootstrap != "running" {
		t.Fatalf("init: exit %d, bootstrap %q: %s", code, res.GitLabBootstrap, errOut)
	}
	harness.WaitGitLabBootstrap(t, tr, bin, addr)
	return n, addr, res.RootToken, audit
}
