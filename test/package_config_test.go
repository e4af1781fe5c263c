package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// The config file the packages install (packaging/nfpm/appliance.hcl):
// as shipped, the node refuses to start until node_id is set, and says so;
// with node_id set it is valid.
func TestPackagedConfig(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	src, err := os.ReadFile("../packaging/nfpm/appliance.hcl")
	if err != nil {
		t.Fatal(err)
	}
	// Its directories, here in a temp dir; the package creates the real ones.
	dir := t.TempDir()
	data, logs := filepath.Join(dir, "data"), filepath.Join(dir, "log")
	if err := os.Mkdir(logs, 0o750); err != nil {
		t.Fatal(err)
	}
	shipped := strings.NewReplacer(`"/var/lib/gitlab-secrets-appliance"`, `"`+data+`"`,
		`"/var/log/gitlab-secrets-appliance/`, `"`+logs+`/`).Replace(string(src))
	if shipped == string(src) {
		t.Fatal("the packaged config names neither /var/lib/gitlab-secrets-appliance nor /var/log/gitlab-secrets-appliance")
	}
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o640); err != nil {
			t.Fatal(err)
		}
		return p
	}

	cfg := write("shipped.hcl", shipped)
	_, errOut, code := harness.Run(t, tr, nil, bin, "server", "--config", cfg)
	if code != 3 || !strings.Contains(errOut, "has 1 problem(s):\n  - node_id: missing; set a name for this node") {
		t.Fatalf("the shipped config: exit %d, want 3 and only node_id missing:\n%s", code, errOut)
	}
	const unset = `# node_id = "gitlab-1"`
	if !strings.Contains(shipped, unset) {
		t.Fatalf("the packaged config has no %q line to set", unset)
	}
	cfg = write("set.hcl", strings.Replace(shipped, unset, `node_id = "gitlab-1"`, 1))
	if out, errOut, code := harness.Run(t, tr, nil, bin, "config", "validate", cfg); code != 0 {
		t.Fatalf("with node_id set: exit %d: %s %s", code, out, errOut)
	}
}
