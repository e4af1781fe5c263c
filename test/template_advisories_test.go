package test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/gitlabsim"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// GHSA-59w7-v8rr-pr4p: an operator gives CI jobs a templated policy, one
// directory of secrets per branch, the branch coming from the job's ID
// token (claim_mappings ref -> alias metadata):
//
//	path "kv/data/{{identity.entity.aliases.<accessor>.metadata.ref}}/*"
//
// A developer pushes a branch named "+" (git allows it): on OpenBao 2.4.0
// the path becomes kv/data/+/*, and the job reads main's secrets. The
// filter refuses the policy (400 naming the advisory and the fix), and
// accepts it with OpenBao 2.6's opt-in options; templates on values
// logins do not shape (ids, a userpass alias's name, what identity writers
// set, OpenBao's own default policy) pass as they are; PKI roles
// templating allowed_domains on alias metadata are refused likewise.
func TestTemplateSubstitutionAdvisoryClosed(t *testing.T) {
	n := newRootNode(t)
	addr, root, hc, v1 := n.addr, n.root, n.hc, n.v1
	must := n.must
	is, err := gitlabsim.NewIssuer()
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	keys, err := is.PublicKeysPEM()
	if err != nil {
		t.Fatal(err)
	}
	c := apiClient(t, addr, root)
	harness.MountKVv2(t, c, "kv")
	must("PUT", "kv/data/main/deploy-key", map[string]any{"data": map[string]any{"v": "main-only"}})
	must("PUT", "kv/data/+/x", map[string]any{"data": map[string]any{"v": "plus"}})
	must("POST", "sys/auth/ci_jwt", map[string]any{"type": "jwt"})
	must("POST", "auth/ci_jwt/config", map[string]any{"jwt_validation_pubkeys": []string{keys}})
	var auths map[string]struct {
		Accessor string `json:"accessor"`
	}
	var wrap struct {
		Data json.RawMessage `json:"data"`
	}
	if json.Unmarshal([]byte(must("GET", "sys/auth", nil)), &wrap) != nil || json.Unmarshal(wrap.Data, &auths) != nil || auths["ci_jwt/"].Accessor == "" {
		t.Fatal("no accessor for ci_jwt/")
	}
	acc := auths["ci_jwt/"].Accessor
	branchPolicy := `path "kv/data/{{identity.entity.aliases.` + acc + `.metadata.ref}}/*" { capabilities = ["read"] }`
	must("POST", "auth/ci_jwt/role/job", map[string]any{
		"role_type": "jwt", "user_claim": "sub", "bound_audiences": []string{addr},
		"claim_mappings": map[string]string{"ref": "ref"}, "token_policies": []string{"branch-secrets"}, "token_ttl": "10m",
	})

	for _, body := range []map[string]any{
		{"policy": branchPolicy},
		{"policy": base64.StdEncoding.EncodeToString([]byte(branchPolicy))},
		{"policy": branchPolicy, "allow_wildcards_in_substitutions": true}, // "/" would still widen it
	} {
		code, out := call(t, hc, "PUT", v1+"sys/policies/acl/branch-secrets", root, body)
		if code != http.StatusBadRequest || !strings.Contains(out, "GHSA-59w7-v8rr-pr4p") || !strings.Contains(out, "allow_slashes_in_substitutions") {
			t.Errorf("the templated policy (%d keys): %d %.300s, want 400 naming GHSA-59w7-v8rr-pr4p and the opt-in", len(body), code, strings.TrimSpace(out))
		}
	}
	if code, out := call(t, hc, "PUT", v1+"sys/policy/branch-secrets", root, map[string]any{"rules": branchPolicy}); code != http.StatusBadRequest || !strings.Contains(out, "GHSA-59w7-v8rr-pr4p") {
		t.Errorf("the templated policy through sys/policy: %d %.300s, want 400", code, strings.TrimSpace(out))
	}

	// The attack: a job on the branch "+".
	job := func(ref string) string {
		t.Helper()
		jwt, err := is.Sign(gitlabsim.Times(map[string]any{"iss": is.URL, "aud": addr, "sub": "project_path:g/p:ref_type:branch:ref:" + ref, "ref": ref}, 5*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := gitlabsim.Login(hc, addr, "", "ci_jwt", "job", jwt)
		if err != nil {
			t.Fatalf("job login on %q: %v", ref, err)
		}
		return tok
	}
	plus := job("+")
	if code, out := call(t, hc, "GET", v1+"kv/data/main/deploy-key", plus, nil); code != http.StatusForbidden || strings.Contains(out, "main-only") {
		t.Errorf("a job on the branch \"+\" read main's secret: %d %.200s, want 403", code, strings.TrimSpace(out))
	}

	// Opting in as OpenBao 2.6 reads it (another policy name: no job has it).
	must("PUT", "sys/policies/acl/branch-secrets-optin", map[string]any{"policy": branchPolicy, "allow_wildcards_in_substitutions": true, "allow_slashes_in_substitutions": "true"})
	// Values no user shapes.
	must("POST", "sys/auth/userpass", map[string]any{"type": "userpass"})
	var up map[string]struct {
		Accessor string `json:"accessor"`
	}
	if json.Unmarshal([]byte(must("GET", "sys/auth", nil)), &wrap) != nil || json.Unmarshal(wrap.Data, &up) != nil || up["userpass/"].Accessor == "" {
		t.Fatal("no accessor for userpass/")
	}
	// Values logins do not shape (ids, userpass usernames, what identity
	// writers set), and OpenBao's own default policy, written back.
	var def struct {
		Data struct {
			Policy string `json:"policy"`
		} `json:"data"`
	}
	if json.Unmarshal([]byte(must("GET", "sys/policies/acl/default", nil)), &def) != nil || !strings.Contains(def.Data.Policy, "{{identity.entity.name}}") {
		t.Fatal("the default policy does not template identity.entity.name")
	}
	for name, pol := range map[string]string{
		"default":         def.Data.Policy,
		"by-entity":       `path "kv/data/{{identity.entity.id}}/*" { capabilities = ["read"] }`,
		"by-alias-id":     `path "kv/data/{{ identity.entity.aliases.` + acc + `.id }}/*" { capabilities = ["read"] }`,
		"by-username":     `path "kv/data/{{identity.entity.aliases.` + up["userpass/"].Accessor + `.name}}/*" { capabilities = ["read"] }`,
		"by-entity-name":  `path "kv/data/{{identity.entity.name}}" { capabilities = ["read"] }`,
		"by-group-meta":   `path "kv/data/{{identity.groups.names.devs.metadata.team}}/*" { capabilities = ["read"] }`,
		"by-custom-meta":  `path "kv/data/x/{{identity.entity.aliases.` + acc + `.custom_metadata.a}}" { capabilities = ["read"] }`,
		"entity-metadata": `path "kv/data/{{identity.entity.metadata.team}}/*" { capabilities = ["read"] }`,
		"plain":           `path "kv/data/main/*" { capabilities = ["read"] }`,
	} {
		must("PUT", "sys/policies/acl/"+name, map[string]any{"policy": pol})
	}
	// Values logins shape: a JWT alias's name (its user_claim) and metadata.
	for name, pol := range map[string]string{
		"by-jwt-name":   `path "kv/data/{{identity.entity.aliases.` + acc + `.name}}/*" { capabilities = ["read"] }`,
		"by-jwt-claims": `path "kv/data/x/{{identity.entity.aliases.` + acc + `.metadata}}" { capabilities = ["read"] }`,
	} {
		if code, out := call(t, hc, "PUT", v1+"sys/policies/acl/"+name, root, map[string]any{"policy": pol}); code != http.StatusBadRequest || !strings.Contains(out, "GHSA-59w7-v8rr-pr4p") {
			t.Errorf("policy %s: %d %.300s, want 400", name, code, strings.TrimSpace(out))
		}
	}

	// PKI: allowed_domains templated on alias metadata.
	must("POST", "sys/mounts/pki", map[string]any{"type": "pki"})
	role := map[string]any{"allowed_domains": []string{"{{identity.entity.aliases." + acc + ".metadata.ref}}.ci.example"}, "allowed_domains_template": true, "allow_subdomains": true}
	if code, out := call(t, hc, "POST", v1+"pki/roles/ci", root, role); code != http.StatusBadRequest || !strings.Contains(out, "GHSA-59w7-v8rr-pr4p") || !strings.Contains(out, "allow_globs_in_substitutions") {
		t.Errorf("a PKI role templating allowed_domains on metadata: %d %.300s, want 400", code, strings.TrimSpace(out))
	}
	role["allow_globs_in_substitutions"] = true
	must("POST", "pki/roles/ci", role)
	must("POST", "pki/roles/by-id", map[string]any{"allowed_domains": "{{identity.entity.id}}.ci.example", "allowed_domains_template": "true"})
	must("POST", "pki/roles/untemplated", map[string]any{"allowed_domains": []string{"{{identity.entity.aliases." + acc + ".metadata.ref}}.example"}})
}
