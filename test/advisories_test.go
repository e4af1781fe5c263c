package test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
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
