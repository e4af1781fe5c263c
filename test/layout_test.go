package test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The package graph keeps what docs/development.md says of it: nothing
// below the server imports it (the drill and the client do not embed an
// OpenBao core), the Geo runtime reaches the core only through its Node
// interface, and only internal/raftx touches memory with unsafe.
func TestLayout(t *testing.T) {
	const mod = "gitlab.com/gitlab-org/gitlab-secrets-appliance/"
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}|{{join .Deps \" \"}}", "./...")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	imports, deps := map[string][]string{}, map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 3 {
			t.Fatalf("go list line %q", line)
		}
		p := strings.TrimPrefix(f[0], mod)
		imports[p], deps[p] = strings.Fields(f[1]), strings.Fields(f[2])
	}
	if len(deps) < 20 || deps["appliance"] == nil {
		t.Fatalf("go list found %d packages, without appliance: the check reads nothing", len(deps))
	}
	const server, core = mod + "appliance", "github.com/openbao/openbao/vault"
	for p, d := range deps {
		top := p == "appliance" || p == "internal/cli" || p == "cmd/gitlab-secrets-appliance" || strings.HasPrefix(p, "test")
		if !top && slices.Contains(d, server) {
			t.Errorf("%s imports the server (appliance): only internal/cli and the tests may", p)
		}
		if slices.Contains(imports[p], "unsafe") && p != "internal/raftx" {
			t.Errorf("%s imports unsafe: only internal/raftx may reach unexported state", p)
		}
	}
	for _, p := range []string{"client", "config", "drill", "geo", "geo/reconciler", "geo/disaster", "snapshot", "seal", "datadir"} {
		if d, ok := deps[p]; !ok {
			t.Errorf("package %s not found", p)
		} else if slices.Contains(d, core) {
			t.Errorf("%s depends on OpenBao's core (%s)", p, core)
		}
	}
}
