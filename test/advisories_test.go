package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// The advisories table is reviewed for the OpenBao the appliance embeds:
// a change of github.com/openbao/openbao in go.mod fails here until
// docs/security/advisories.md names the new version in its "Reviewed for"
// line (and its rows were gone through for it). `make advisories` runs
// this alone; `make test` runs it with everything.
func TestAdvisoriesReviewedForEmbeddedVersion(t *testing.T) {
	gomod, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/openbao/openbao (v\S+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod does not require github.com/openbao/openbao")
	}
	embedded := "github.com/openbao/openbao " + string(m[1])
	doc, err := os.ReadFile(filepath.Join("..", "docs", "security", "advisories.md"))
	if err != nil {
		t.Fatal(err)
	}
	reviewed := regexp.MustCompile("(?m)^Reviewed for `([^`]+)`").FindSubmatch(doc)
	switch {
	case reviewed == nil:
		t.Fatal("docs/security/advisories.md has no \"Reviewed for `<module> <version>`\" line")
	case string(reviewed[1]) != embedded:
		t.Fatalf("go.mod embeds %s but docs/security/advisories.md was reviewed for %s: go through every row for the new version, then update the line", embedded, reviewed[1])
	}
	if strings.Contains(string(doc), "| unknown |") {
		t.Error("docs/security/advisories.md has a row whose status is unknown")
	}
}

// Advisories of modules the binary does not link are not reachable: the
// modules go.mod lists (indirectly, through OpenBao) but no package of
// which is compiled in. Read off the binary's own build information.
func TestAdvisoryModulesNotLinked(t *testing.T) {
	out, err := exec.Command("go", "version", "-m", harness.Binary(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("go version -m: %v\n%s", err, out)
	}
	for mod, advisory := range map[string]string{
		"go.opentelemetry.io/otel/sdk": "CVE-2026-24051 (GHSA-9h8m-3fm2-qjrq)",
		"github.com/go-ldap/ldap":      "the LDAP auth method's advisories",
	} {
		if strings.Contains(string(out), "\t"+mod) {
			t.Errorf("the binary links %s: %s is reachable; assess it in docs/security/advisories.md", mod, advisory)
		}
	}
	if !strings.Contains(string(out), "\tgithub.com/openbao/openbao\t") {
		t.Fatalf("go version -m names no OpenBao module: the check reads nothing\n%s", out)
	}
	// CVE-2025-68121: OpenBao 2.5.1 moved to Go 1.25.7 for it.
	var major, minor, patch int
	if _, err := fmt.Sscanf(strings.Fields(string(out))[1], "go%d.%d.%d", &major, &minor, &patch); err != nil || major != 1 || minor < 25 || minor == 25 && patch < 7 {
		t.Errorf("the binary is built with %s (%v): CVE-2025-68121 needs go1.25.7 or later", strings.Fields(string(out))[1], err)
	}
	// GHSA-444v-8vxr-p36h is bao agent's: the appliance has none.
	if _, errOut, code := harness.Run(t, &harness.Transcript{}, nil, harness.Binary(t), "agent"); code != 64 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("gitlab-secrets-appliance agent: exit %d, want 64 unknown command:\n%s", code, errOut)
	}
}
