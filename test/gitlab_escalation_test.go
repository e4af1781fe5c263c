package test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/gitlab"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/gitlabsim"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// adminHCL is what an attacker would like a policy to say.
const adminHCL = `path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }`

// GitLab Rails' token plays the attacker: it wants an operator's rights
// (the policy ops-admin, sudo on everything) and tries every way OpenBao
// offers to get them in the root namespace: write a policy, mint a token,
// create a token role, enable or tune an auth mount, join an identity
// group, re-point its identity, move the operators' mount into GitLab's
// namespace. Each is refused with 403 permission denied, and each request
// is one the root token's answer shows well-formed, so only the policy
// refuses it. Inside GitLab's namespaces Rails keeps its rights, and what
// it mints there stays there.
func TestGitLabRailsCannotEscalate(t *testing.T) {
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
	railsToken, err := rails.Login()
	if err != nil {
		t.Fatalf("Rails' privileged login: %v", err)
	}
	asRoot := func(method, path string, body, out any) {
		t.Helper()
		if err := gitlabsim.Call(hc, addr, root, method, "", path, body, out); err != nil {
			t.Fatalf("root: %s %s: %v", method, path, err)
		}
	}

	// What the operators have: a policy with every right, a KV mount with
	// their secrets, a token role, a userpass mount, an identity group and
	// an entity carrying the policy.
	asRoot("POST", "sys/policies/acl/ops-admin", map[string]string{"policy": adminHCL}, nil)
	asRoot("POST", "sys/mounts/ops", map[string]any{"type": "kv-v2"}, nil)
	harness.Eventually(t, time.Minute, "the operators' KV v2 mount", func() bool {
		return gitlabsim.Call(hc, addr, root, "POST", "", "ops/data/db", map[string]any{"data": map[string]string{"password": "v-ops-7e21"}}, nil) == nil
	})
	asRoot("POST", "auth/token/roles/ops", map[string]any{"allowed_policies": []string{"ops-admin"}}, nil)
	asRoot("POST", "sys/auth/ops-userpass", map[string]any{"type": "userpass"}, nil)
	var group, entity struct {
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	asRoot("POST", "identity/group", map[string]any{"name": "operators", "policies": []string{"ops-admin"}}, &group)
	asRoot("POST", "identity/entity", map[string]any{"name": "ops", "policies": []string{"ops-admin"}}, &entity)
	opsEntity := entity.Data.ID
	var defaultPolicy struct {
		Data struct {
			Policy string `json:"policy"`
		} `json:"data"`
	}
	asRoot("GET", "sys/policies/acl/default", nil, &defaultPolicy)

	// Rails' own identity: its entity (its token may read it) and the alias
	// its logins land on.
	railsEntity, railsAlias := railsIdentity(t, hc, addr, railsToken)
	railsRole := railsRole(t, hc, addr, root)
	escalatedRole := maps.Clone(railsRole)
	escalatedRole["token_policies"] = []string{gitlab.PolicyName, "ops-admin"}

	for _, a := range []railsAttempt{
		// Policies: the legacy endpoint and the current one, new or rewritten
		// (its own, an operator's, everyone's default).
		{name: "a new policy (legacy endpoint)", method: "POST", path: "sys/policy/rails-admin", body: map[string]string{"policy": adminHCL},
			replay: true, undo: "sys/policy/rails-admin"},
		{name: "its own policy (legacy endpoint)", method: "POST", path: "sys/policy/" + gitlab.PolicyName, body: map[string]string{"policy": adminHCL},
			replay: true, rootBody: map[string]string{"policy": gitlab.Policy}},
		{name: "an operator's policy (legacy endpoint)", method: "POST", path: "sys/policy/ops-admin", body: map[string]string{"policy": adminHCL},
			replay: true},
		{name: "a new root policy", method: "POST", path: "sys/policies/acl/rails-admin", body: map[string]string{"policy": adminHCL},
			replay: true, undo: "sys/policies/acl/rails-admin"},
		{name: "its own policy", method: "POST", path: "sys/policies/acl/" + gitlab.PolicyName, body: map[string]string{"policy": adminHCL},
			replay: true, rootBody: map[string]string{"policy": gitlab.Policy}},
		{name: "the default policy", method: "POST", path: "sys/policies/acl/default", body: map[string]string{"policy": adminHCL},
			replay: true, rootBody: map[string]string{"policy": defaultPolicy.Data.Policy}},
		{name: "an operator's policy", method: "DELETE", path: "sys/policies/acl/ops-admin"},

		// Tokens: with root or an operator's policy, orphans, token roles.
		{name: "a root token", method: "POST", path: "auth/token/create", body: map[string]any{"policies": []string{"root"}, "ttl": "1m"}, replay: true},
		{name: "a token with an operator's policy", method: "POST", path: "auth/token/create", body: map[string]any{"policies": []string{"ops-admin"}, "ttl": "1m"}, replay: true},
		{name: "an orphan token", method: "POST", path: "auth/token/create-orphan", body: map[string]any{"policies": []string{"ops-admin"}, "ttl": "1m"}, replay: true},
		{name: "a token from an operator's token role", method: "POST", path: "auth/token/create/ops", body: map[string]any{"policies": []string{"ops-admin"}, "ttl": "1m"}, replay: true},
		{name: "a token role", method: "POST", path: "auth/token/roles/rails", body: map[string]any{"allowed_policies": []string{"ops-admin"}},
			replay: true, undo: "auth/token/roles/rails"},
		{name: "every token's accessor", method: "LIST", path: "auth/token/accessors", replay: true},

		// Auth mounts: its own login, a new one, an operator's.
		{name: "tuning its own auth mount", method: "POST", path: "sys/auth/" + gitlab.AuthMount + "/tune", body: map[string]any{"max_lease_ttl": "768h"}, replay: true},
		{name: "tuning its own auth mount (sys/mounts)", method: "POST", path: "sys/mounts/auth/" + gitlab.AuthMount + "/tune", body: map[string]any{"max_lease_ttl": "768h"}, replay: true},
		{name: "its own role", method: "POST", path: "auth/" + gitlab.AuthMount + "/role/" + gitlab.RoleName, body: escalatedRole,
			replay: true, rootBody: railsRole},
		{name: "disabling its own auth mount", method: "DELETE", path: "sys/auth/" + gitlab.AuthMount},
		{name: "a root userpass mount", method: "POST", path: "sys/auth/rails-userpass", body: map[string]any{"type": "userpass"},
			replay: true, undo: "sys/auth/rails-userpass"},
		{name: "a user with an operator's policy", method: "POST", path: "auth/ops-userpass/users/rails",
			body: map[string]any{"password": "v-pass-3a9c", "token_policies": []string{"ops-admin"}}, replay: true, undo: "auth/ops-userpass/users/rails"},

		// Mounts: new, tuned, read, moved into GitLab's namespace.
		{name: "a root mount", method: "POST", path: "sys/mounts/rails-kv", body: map[string]any{"type": "kv"}, replay: true, undo: "sys/mounts/rails-kv"},
		{name: "tuning an operator's mount", method: "POST", path: "sys/mounts/ops/tune", body: map[string]any{"max_lease_ttl": "768h"}, replay: true},
		{name: "the operators' secret", method: "GET", path: "ops/data/db", replay: true},
		{name: "moving the operators' mount into GitLab's namespace", method: "POST", path: "sys/remount",
			body: map[string]any{"from": "ops", "to": "org_1/ops"}},

		// Identity: a group or entity with an operator's policy, joining the
		// operators' group, re-pointing its alias, merging into theirs.
		{name: "a group with an operator's policy", method: "POST", path: "identity/group",
			body:   map[string]any{"name": "rails-admins", "policies": []string{"ops-admin"}, "member_entity_ids": []string{railsEntity}},
			replay: true, rootBody: map[string]any{"name": "rails-admins-check", "policies": []string{"ops-admin"}}, undo: "identity/group/name/rails-admins-check"},
		{name: "joining the operators' group", method: "POST", path: "identity/group/name/operators",
			body:   map[string]any{"member_entity_ids": []string{railsEntity}},
			replay: true, rootBody: map[string]any{"member_entity_ids": []string{}}},
		{name: "an entity with an operator's policy", method: "POST", path: "identity/entity", body: map[string]any{"name": "rails-twin", "policies": []string{"ops-admin"}},
			replay: true, undo: "identity/entity/name/rails-twin"},
		{name: "an operator's policy on its own entity", method: "POST", path: "identity/entity/id/" + railsEntity, body: map[string]any{"policies": []string{"ops-admin"}},
			replay: true, rootBody: map[string]any{"policies": []string{}}},
		{name: "its alias moved to the operators' entity", method: "POST", path: "identity/entity-alias/id/" + railsAlias, body: map[string]any{"canonical_id": opsEntity},
			replay: true, rootBody: map[string]any{"canonical_id": railsEntity}},
		{name: "merging its entity into the operators'", method: "POST", path: "identity/entity/merge",
			body: map[string]any{"from_entity_ids": []string{railsEntity}, "to_entity_id": opsEntity}},

		// The rest of the root namespace: namespaces not GitLab's, config,
		// quotas, loggers, plugins, profiles, raw storage, leases.
		{name: "a namespace not GitLab's", method: "POST", path: "sys/namespaces/ops-team", body: map[string]any{}, replay: true},
		{name: "locking GitLab's namespace", method: "POST", path: "sys/namespaces/api-lock/lock/org_1", body: map[string]any{}},
		{name: "CORS", method: "POST", path: "sys/config/cors", body: map[string]any{"enabled": true, "allowed_origins": []string{"*"}},
			replay: true, undo: "sys/config/cors"},
		{name: "audited request headers", method: "POST", path: "sys/config/auditing/request-headers/x-rails", body: map[string]any{"hmac": false},
			replay: true, undo: "sys/config/auditing/request-headers/x-rails"},
		{name: "the log level", method: "POST", path: "sys/loggers", body: map[string]any{"level": "trace"},
			replay: true, rootBody: map[string]any{"level": "info"}},
		{name: "a rate limit", method: "POST", path: "sys/quotas/rate-limit/rails", body: map[string]any{"rate": 1},
			replay: true, undo: "sys/quotas/rate-limit/rails"},
		{name: "a plugin", method: "POST", path: "sys/plugins/catalog/secret/rails", body: map[string]any{"sha256": strings.Repeat("0", 64), "command": "rails"},
			replay: true, rootRefusal: "plugin directory is not configured"},
		{name: "a profile of the server", method: "GET", path: "sys/pprof/cmdline", replay: true},
		{name: "raw storage", method: "GET", path: "sys/raw/sys/policy/ops-admin", replay: true, rootRefusal: "unsupported path"},
		{name: "revoking leases by prefix", method: "POST", path: "sys/leases/revoke-prefix/auth/ops-userpass", body: map[string]any{}, replay: true},

		// Key ceremonies: a sudo token on top of the keys (the legacy
		// recovery-key rekey is off altogether).
		{name: "a recovery-key rotation (legacy endpoint)", method: "PUT", path: "sys/rekey-recovery-key/init", body: map[string]any{"secret_shares": 3, "secret_threshold": 2}},
		{name: "a recovery-key rotation", method: "PUT", path: "sys/rotate/recovery/init", body: map[string]any{"secret_shares": 3, "secret_threshold": 2},
			replay: true, undo: "sys/rotate/recovery/init"},
		{name: "a root token generation", method: "PUT", path: "sys/generate-root/attempt", body: map[string]any{}, replay: true, undo: "sys/generate-root/attempt"},
		{name: "cancelling a root token generation", method: "DELETE", path: "sys/generate-root/attempt"},
	} {
		a.try(t, hc, addr, railsToken, root)
	}

	// Whatever it tried, Rails' tokens carry its policies and nothing else,
	// and its rights in the root namespace are what they were.
	for _, tok := range []string{railsToken, mustRailsLogin(t, rails)} {
		self := lookupSelf(t, hc, addr, tok)
		if !slices.Equal(self.Policies, []string{"default", gitlab.PolicyName}) || len(self.IdentityPolicies) != 0 {
			t.Errorf("Rails' token carries policies %v and identity policies %v", self.Policies, self.IdentityPolicies)
		}
	}
	var caps map[string]any
	if err := gitlabsim.Call(hc, addr, railsToken, "POST", "", "sys/capabilities-self",
		map[string]any{"paths": []string{"sys/policies/acl/x", "auth/token/create", "sys/auth/x", "identity/group", "ops/data/db", "org_1/sys/policies/acl/x"}}, &caps); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"sys/policies/acl/x", "auth/token/create", "sys/auth/x", "identity/group", "ops/data/db"} {
		if got := fmt.Sprint(caps[p]); got != "[deny]" {
			t.Errorf("Rails' capabilities on %s: %s, want [deny]", p, got)
		}
	}
	if got := fmt.Sprint(caps["org_1/sys/policies/acl/x"]); !strings.Contains(got, "sudo") {
		t.Errorf("Rails' capabilities in its own namespace org_1: %s, want everything", got)
	}
	var ops struct {
		Data struct {
			Policy string `json:"policy"`
		} `json:"data"`
	}
	asRoot("GET", "sys/policies/acl/ops-admin", nil, &ops)
	if ops.Data.Policy != adminHCL {
		t.Errorf("the operators' policy changed: %q", ops.Data.Policy)
	}
	var members struct {
		Data struct {
			MemberEntityIDs []string `json:"member_entity_ids"`
		} `json:"data"`
	}
	asRoot("GET", "identity/group/id/"+group.Data.ID, nil, &members)
	if slices.Contains(members.Data.MemberEntityIDs, railsEntity) {
		t.Error("Rails' entity is in the operators' group")
	}

	// The seal of the appliance itself (/appliance/v1/, beside OpenBao's API).
	req, _ := http.NewRequest("POST", addr+"/appliance/v1/seal/rotate-shares", bytes.NewReader([]byte(`{"shares":1,"threshold":1}`)))
	req.Header.Set("X-Vault-Token", railsToken)
	if resp, err := hc.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("Rails' token rotating the seal shares: HTTP %d, want 403", resp.StatusCode)
		}
	}

	namespacedEscalation(t, hc, addr, rails, railsToken, railsEntity)
}

// railsAttempt is one request Rails' token must be refused with 403. With
// replay the root token sends it too (rootBody instead of body if set) and
// must be served, which shows the request well-formed, or refused with
// rootRefusal, a reason that is not a policy's; undo deletes what the
// replay made.
type railsAttempt struct {
	name, method, path string
	body               any
	replay             bool
	rootBody           any
	rootRefusal        string
	undo               string
}

func (a railsAttempt) try(t *testing.T, hc *http.Client, addr, railsToken, root string) {
	t.Helper()
	err := gitlabsim.Call(hc, addr, railsToken, a.method, "", a.path, a.body, nil)
	t.Logf("Rails: %s %s (%s): %v", a.method, a.path, a.name, err)
	wantForbidden(t, "Rails: "+a.name+" ("+a.method+" "+a.path+")", err)
	if !a.replay {
		return
	}
	body := a.body
	if a.rootBody != nil {
		body = a.rootBody
	}
	err = gitlabsim.Call(hc, addr, root, a.method, "", a.path, body, nil)
	t.Logf("root: %s %s: %v", a.method, a.path, err)
	switch {
	case a.rootRefusal == "" && err != nil:
		t.Errorf("root: %s %s: %v", a.method, a.path, err)
	case a.rootRefusal != "" && (err == nil || statusOf(err) == http.StatusForbidden || !strings.Contains(err.Error(), a.rootRefusal)):
		t.Errorf("root: %s %s: want a refusal ...%s..., got %v", a.method, a.path, a.rootRefusal, err)
	}
	if a.undo != "" && err == nil {
		if err := gitlabsim.Call(hc, addr, root, "DELETE", "", a.undo, nil, nil); err != nil {
			t.Errorf("root: DELETE %s: %v", a.undo, err)
		}
	}
}

// wantForbidden checks that err is OpenBao's refusal by policy: HTTP 403,
// permission denied.
func wantForbidden(t *testing.T, what string, err error) {
	t.Helper()
	var ae *gitlabsim.APIError
	if !errors.As(err, &ae) || ae.Code != http.StatusForbidden || !strings.Contains(strings.Join(ae.Errors, "; "), "permission denied") {
		t.Errorf("%s: want HTTP 403 permission denied, got %v", what, err)
	}
}

// statusOf is the HTTP status of an OpenBao error answer, 0 for none.
func statusOf(err error) int {
	var ae *gitlabsim.APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return 0
}

type tokenSelf struct {
	Policies         []string `json:"policies"`
	IdentityPolicies []string `json:"identity_policies"`
	EntityID         string   `json:"entity_id"`
	NamespacePath    string   `json:"namespace_path"`
}

func lookupSelf(t *testing.T, hc *http.Client, addr, token string) tokenSelf {
	t.Helper()
	return lookupSelfIn(t, hc, addr, token, "")
}

// railsRole is Rails' role auth/gitlab_rails_jwt/role/app as the root
// token reads it: what writing it back leaves as it is.
func railsRole(t *testing.T, hc *http.Client, addr, root string) map[string]any {
	t.Helper()
	var out struct {
		Data map[string]any `json:"data"`
	}
	if err := gitlabsim.Call(hc, addr, root, "GET", "", "auth/"+gitlab.AuthMount+"/role/"+gitlab.RoleName, nil, &out); err != nil || len(out.Data) == 0 {
		t.Fatalf("root: reading Rails' role: %v", err)
	}
	return out.Data
}

func mustRailsLogin(t *testing.T, rails *gitlabsim.Rails) string {
	t.Helper()
	tok, err := rails.Login()
	if err != nil {
		t.Fatalf("Rails' privileged login: %v", err)
	}
	return tok
}

// railsIdentity is the entity of Rails' logins and its alias on
// gitlab_rails_jwt, read with Rails' own token (the default policy lets a
// token read its entity).
func railsIdentity(t *testing.T, hc *http.Client, addr, railsToken string) (entity, alias string) {
	t.Helper()
	entity = lookupSelf(t, hc, addr, railsToken).EntityID
	var out struct {
		Data struct {
			Aliases []struct {
				ID        string `json:"id"`
				MountPath string `json:"mount_path"`
			} `json:"aliases"`
		} `json:"data"`
	}
	if err := gitlabsim.Call(hc, addr, railsToken, "GET", "", "identity/entity/id/"+entity, nil, &out); err != nil {
		t.Fatalf("Rails reading its entity: %v", err)
	}
	for _, a := range out.Data.Aliases {
		if a.MountPath == "auth/"+gitlab.AuthMount+"/" {
			return entity, a.ID
		}
	}
	t.Fatalf("Rails' entity %s has no alias on %s: %+v", entity, gitlab.AuthMount, out.Data.Aliases)
	return "", ""
}

// namespacedEscalation: inside GitLab's namespace org_1 Rails may do
// anything (it is GitLab's), but nothing it makes there reaches the root
// namespace, and OpenBao refuses the cluster's endpoints there.
func namespacedEscalation(t *testing.T, hc *http.Client, addr string, rails *gitlabsim.Rails, railsToken, railsEntity string) {
	t.Helper()
	const ns = "org_1"
	in := func(method, path string, body, out any) error {
		return gitlabsim.Call(hc, addr, railsToken, method, ns, path, body, out)
	}
	mustIn := func(method, path string, body, out any) {
		t.Helper()
		if err := in(method, path, body, out); err != nil {
			t.Fatalf("Rails in %s: %s %s: %v", ns, method, path, err)
		}
	}
	var created, login struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	// org_1's own ops-admin: everything, in org_1.
	mustIn("POST", "sys/policies/acl/ops-admin", map[string]string{"policy": adminHCL}, nil)
	mustIn("POST", "auth/token/create", map[string]any{"policies": []string{"ops-admin"}, "ttl": "5m"}, &created)
	mustIn("POST", "sys/auth/userpass", map[string]any{"type": "userpass"}, nil)
	mustIn("POST", "auth/userpass/users/admin", map[string]any{"password": "v-pass-5d0e", "token_policies": []string{"ops-admin"}}, nil)
	mustIn("POST", "auth/userpass/login/admin", map[string]any{"password": "v-pass-5d0e"}, &login)
	userpass := login.Auth.ClientToken
	if self := lookupSelfIn(t, hc, addr, userpass, ns); self.NamespacePath != ns+"/" || !slices.Contains(self.Policies, "ops-admin") {
		t.Fatalf("the userpass login in %s: namespace %q, policies %v", ns, self.NamespacePath, self.Policies)
	}
	if err := gitlabsim.Call(hc, addr, userpass, "POST", ns, "sys/policies/acl/x", map[string]string{"policy": adminHCL}, nil); err != nil {
		t.Errorf("the userpass login cannot use its rights in %s: %v", ns, err)
	}
	// A group of org_1 cannot hold Rails' entity of the root namespace.
	err := in("POST", "identity/group", map[string]any{"name": "rails-admins", "policies": []string{"ops-admin"}, "member_entity_ids": []string{railsEntity}}, nil)
	t.Logf("Rails in %s: a group holding its root entity: %v", ns, err)
	if err == nil || !strings.Contains(err.Error(), "invalid entity ID") {
		t.Errorf("Rails in %s: a group holding its root entity: %v", ns, err)
	}
	// A root token cannot be minted from a parent namespace.
	err = in("POST", "auth/token/create", map[string]any{"policies": []string{"root"}, "ttl": "1m"}, nil)
	t.Logf("Rails in %s: a root token: %v", ns, err)
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "root tokens may not be created from a parent namespace") {
		t.Errorf("Rails in %s: a root token: %v", ns, err)
	}

	// Nor can a mount of the root namespace be moved in from there.
	err = in("POST", "sys/remount", map[string]any{"from": "../ops", "to": "stolen"}, nil)
	t.Logf("Rails in %s: moving the operators' mount in: %v", ns, err)
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "no matching mount") {
		t.Errorf("Rails in %s: moving the operators' mount in: %v", ns, err)
	}

	// Tokens of org_1 in the root namespace: refused with 403. (The token
	// Rails minted in org_1 carries Rails' root entity, which org_1 does not
	// know, so OpenBao 2.4 refuses it everywhere; the userpass login is a
	// working token of org_1.)
	for who, tok := range map[string]string{"a token Rails created in " + ns: created.Auth.ClientToken, "a userpass login in " + ns: userpass} {
		for _, r := range []struct {
			method, path string
			body         any
		}{
			{"POST", "sys/policies/acl/rails-admin", map[string]string{"policy": adminHCL}},
			{"POST", "auth/token/create", map[string]any{"policies": []string{"ops-admin"}}},
			{"POST", "sys/auth/rails-userpass", map[string]any{"type": "userpass"}},
			{"POST", "identity/group", map[string]any{"name": "rails-admins", "policies": []string{"ops-admin"}}},
			{"GET", "ops/data/db", nil},
		} {
			err := gitlabsim.Call(hc, addr, tok, r.method, "", r.path, r.body, nil)
			t.Logf("%s at the root: %s %s: %v", who, r.method, r.path, err)
			wantForbidden(t, who+" at the root: "+r.method+" "+r.path, err)
		}
	}
	// Whatever Rails did in org_1, its root logins gained nothing.
	if self := lookupSelf(t, hc, addr, mustRailsLogin(t, rails)); len(self.IdentityPolicies) != 0 {
		t.Errorf("Rails' login after its work in %s: identity policies %v", ns, self.IdentityPolicies)
	}

	// The cluster's endpoints do not exist in a namespace.
	for _, r := range []struct {
		method, path string
		body         any
	}{
		{"POST", "sys/seal", map[string]any{}},
		{"POST", "sys/storage/raft/remove-peer", map[string]any{"server_id": "gitlab-9"}},
		{"POST", "sys/audit/evil", map[string]any{"type": "file", "options": map[string]string{"file_path": "/dev/null"}}},
		{"POST", "sys/rotate/recovery/init", map[string]any{"secret_shares": 1, "secret_threshold": 1}},
		{"GET", "sys/raw/core", nil},
		{"POST", "sys/config/cors", map[string]any{"enabled": true, "allowed_origins": []string{"*"}}},
		{"POST", "sys/loggers", map[string]any{"level": "trace"}},
		{"GET", "sys/pprof/cmdline", nil},
		{"POST", "sys/quotas/rate-limit/rails", map[string]any{"rate": 1}},
	} {
		err := in(r.method, r.path, r.body, nil)
		t.Logf("Rails in %s: %s %s: %v", ns, r.method, r.path, err)
		if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "operation unavailable in namespaces") {
			t.Errorf("Rails in %s: %s %s: want HTTP 400 operation unavailable in namespaces, got %v", ns, r.method, r.path, err)
		}
	}
}

func lookupSelfIn(t *testing.T, hc *http.Client, addr, token, ns string) tokenSelf {
	t.Helper()
	var out struct {
		Data tokenSelf `json:"data"`
	}
	if err := gitlabsim.Call(hc, addr, token, "GET", ns, "auth/token/lookup-self", nil, &out); err != nil {
		t.Fatalf("lookup-self in namespace %q: %v", ns, err)
	}
	return out.Data
}
