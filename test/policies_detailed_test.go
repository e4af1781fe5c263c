package test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/gitlabsim"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// GitLab's secrets-permissions page: list_policies(type: :users) sends
// LIST <project namespace>/sys/policies/detailed/acl/users with inline
// auth. OpenBao 2.4.0 answered 404 "unsupported path" (GitLab showed no
// role policies); the appliance answers as OpenBao 2.5 does: the policies
// whose names begin with users/, each with its text, and only to a caller
// whose ACL allows that LIST.
func TestGitLabListsUserPolicies(t *testing.T) {
	tr := &harness.Transcript{}
	is, err := gitlabsim.NewIssuer()
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	_, addr, root, _ := gitlabsim.StartAppliance(t, tr, is)
	hc := &http.Client{Timeout: 30 * time.Second}
	rails := &gitlabsim.Rails{Addr: addr, HTTP: hc, Issuer: is}
	p3 := gitlabsim.Project{Org: 1, Group: 2, ID: 3, Path: "acme/platform/project-3"}
	if err := rails.Provision(p3); err != nil {
		t.Fatal(err)
	}
	ns := p3.Namespace()
	v1 := addr + "/v1/"
	putPolicy := func(name, hcl string) {
		t.Helper()
		if code, out := call(t, hc, "PUT", v1+ns+"/sys/policies/acl/"+name, root, map[string]string{"policy": hcl}); code/100 != 2 {
			t.Fatalf("policy %s: %d %s", name, code, out)
		}
	}
	putPolicy("users-other", `path "x" { capabilities = ["read"] }`) // shares "users", not "users/"
	putPolicy("pipelines/main", `path "y" { capabilities = ["read"] }`)

	// GitLab's call, exactly: the namespace in the path, inline auth.
	got, err := rails.ListPolicies(ns, "users")
	if err != nil {
		t.Fatalf("list_policies(type: :users): %v", err)
	}
	want := []string{"users/roles/30", "users/roles/40", "users/roles/50"}
	slices.Sort(got.Keys)
	if !slices.Equal(got.Keys, want) {
		t.Errorf("keys %v, want %v", got.Keys, want)
	}
	for _, k := range want {
		info := got.KeyInfo[k]
		pol, _ := info["policy"].(string)
		var parsed map[string]any // GitLab parses it as JSON (AclPolicy)
		if info["name"] != k || json.Unmarshal([]byte(pol), &parsed) != nil || !strings.Contains(pol, "secrets/kv/metadata/explicit/*") {
			t.Errorf("key_info[%s] = %v", k, info)
		}
	}
	// A prefix with nothing under it: OpenBao's empty list, 404.
	if _, err := rails.ListPolicies(ns, "nobody"); statusOf(err) != http.StatusNotFound {
		t.Errorf("an empty prefix: %v, want 404", err)
	}

	// The ACL decides, on the prefixed path: a token allowed to list the
	// whole detailed list but denied the users/ prefix, and one with no
	// right at all, get 403; one allowed both gets the list. The method
	// LIST and the namespace in the header work too.
	for _, c := range []struct {
		name, hcl string
		code      int
	}{
		{"lists-all", `path "sys/policies/detailed/acl" { capabilities = ["list"] }
path "sys/policies/detailed/acl/*" { capabilities = ["list"] }`, http.StatusOK},
		{"denied-users", `path "sys/policies/detailed/acl" { capabilities = ["list"] }
path "sys/policies/detailed/acl/users" { capabilities = ["deny"] }
path "sys/policies/detailed/acl/users/" { capabilities = ["deny"] }`, http.StatusForbidden},
		{"no-right", `path "kv/*" { capabilities = ["read"] }`, http.StatusForbidden},
	} {
		putPolicy(c.name, c.hcl)
		tok, _ := nsToken(t, hc, v1, root, ns, c.name)
		code, out := call(t, hc, "LIST", v1+"sys/policies/detailed/acl/users", tok, nil, "X-Vault-Namespace", ns)
		if code != c.code || code == http.StatusOK && !strings.Contains(out, `"users/roles/50"`) || strings.Contains(out, "users-other") {
			t.Errorf("%s: LIST sys/policies/detailed/acl/users: %d %.300s, want %d", c.name, code, strings.TrimSpace(out), c.code)
		}
	}
	// Nothing else changed: the whole detailed list and a policy read.
	if code, out := call(t, hc, "LIST", v1+ns+"/sys/policies/detailed/acl", root, nil); code != http.StatusOK || !strings.Contains(out, "users-other") {
		t.Errorf("LIST sys/policies/detailed/acl: %d %.300s", code, out)
	}
}
