package test

import (
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/gitlab"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/gitlabsim"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// GitLab's whole path against a real appliance process, with GitLab's own
// requests (test/gitlabsim): Rails provisions projects 3 and 4 and their
// root group 2 through its privileged inline-auth login; a job ID token
// reads exactly what its policies grant; bad tokens are refused and
// audited while other jobs go on; a rotated signing key works at once; a
// deleted project's namespace and secrets are gone.
func TestGitLabConformance(t *testing.T) {
	tr := &harness.Transcript{}
	is, err := gitlabsim.NewIssuer()
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	n, addr, root, auditLog := gitlabsim.StartAppliance(t, tr, is)
	hc := &http.Client{Timeout: 30 * time.Second}
	rails := &gitlabsim.Rails{Addr: addr, HTTP: hc, Issuer: is}

	p3 := gitlabsim.Project{Org: 1, Group: 2, ID: 3, Path: "acme/platform/project-3"}
	p4 := gitlabsim.Project{Org: 1, Group: 2, ID: 4, Path: "acme/platform/project-4"}
	g2 := gitlabsim.Group{Org: 1, ID: 2}
	mainProd := gitlabsim.Job{Project: p3, JobID: 1001, PipelineID: 501, Ref: "main", RefType: "branch", RefProtected: true, Environment: "production", UserID: 7}
	pipelineJWT := sign(t, is, is.JobClaims(mainProd, addr))

	// Rails' privileged login works only with the privileged claims.
	railsToken, err := rails.Login()
	if err != nil {
		t.Fatalf("Rails' privileged login: %v", err)
	}
	// Each refused by the role (bound subject, claims, audience) or the
	// token's validation, with OpenBao's 400 and its reason: not a network
	// failure, not any other error.
	notRails := map[string]badToken{"a pipeline token": {sign(t, is, is.JobClaims(mainProd, addr)), "invalid subject (sub) claim"}}
	for name, b := range map[string]struct {
		why    string
		change func(c map[string]any)
	}{
		"another subject":       {"invalid subject (sub) claim", func(c map[string]any) { c["sub"] = "user:root" }},
		"the user scope":        {"claim \"secrets_manager_scope\" does not match any associated bound claim values", func(c map[string]any) { c["secrets_manager_scope"] = "user" }},
		"no scope":              {"claim \"secrets_manager_scope\" is missing", func(c map[string]any) { delete(c, "secrets_manager_scope") }},
		"another audience":      {"invalid audience (aud) claim", func(c map[string]any) { c["aud"] = "https://other.example.com" }},
		"an expired privileged": {"token is expired", func(c map[string]any) { gitlabsim.Times(c, -10*time.Minute) }},
	} {
		c := is.RailsClaims(addr)
		b.change(c)
		notRails[name] = badToken{sign(t, is, c), b.why}
	}
	for name, b := range notRails {
		_, err := gitlabsim.Login(hc, addr, "", gitlabsim.RailsMount, gitlabsim.RailsRole, b.jwt)
		t.Logf("Rails' login with %s: %v", name, err)
		if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), b.why) {
			t.Errorf("Rails' login with %s: want HTTP 400 ...%s..., got %v", name, b.why, err)
		}
	}
	// GitLab Rails cannot touch the cluster or its own rights, nor take
	// over the recovery keys (GitLab's recovery-key management: the
	// operators hold those here). Each is refused by policy (403), and the
	// root token's answer to the same request, where replaying it is safe,
	// shows it well-formed (OpenBao 2.4 takes audit devices from the config
	// only, so root is refused that for another reason); sealing (which
	// takes no parameters) is not replayed, and the Raft peer is one the
	// cluster does not have.
	role := railsRole(t, hc, addr, root)
	escalated := maps.Clone(role)
	escalated["token_policies"] = []string{gitlab.PolicyName, "root"}
	for _, a := range []railsAttempt{
		{name: "its own policy", method: "POST", path: "sys/policies/acl/" + gitlab.PolicyName, body: map[string]string{"policy": adminHCL},
			replay: true, rootBody: map[string]string{"policy": gitlab.Policy}},
		{name: "its own role", method: "POST", path: "auth/" + gitlab.AuthMount + "/role/" + gitlab.RoleName, body: escalated,
			replay: true, rootBody: role},
		{name: "an audit device", method: "POST", path: "sys/audit/evil",
			body:   map[string]any{"type": "file", "options": map[string]string{"file_path": filepath.Join(t.TempDir(), "evil.log")}},
			replay: true, rootRefusal: "cannot enable audit device via API"},
		{name: "a recovery-key rotation", method: "POST", path: "sys/rotate/recovery/init", body: map[string]any{"secret_shares": 1, "secret_threshold": 1},
			replay: true, undo: "sys/rotate/recovery/init"},
		{name: "sealing", method: "POST", path: "sys/seal", body: map[string]any{}},
		{name: "removing a Raft peer", method: "POST", path: "sys/storage/raft/remove-peer", body: map[string]any{"server_id": "gitlab-9"}, replay: true},
	} {
		a.try(t, hc, addr, railsToken, root)
	}

	// Provisioning in GitLab's order; again changes nothing and fails nothing.
	for _, p := range []gitlabsim.Project{p3, p4, p3} {
		if err := rails.Provision(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := rails.ProvisionGroup(g2); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]struct{ value, env, branch string }{
		"GLOBAL":       {"v-global-51d3", "*", "*"},
		"PROD":         {"v-prod-0a77", "production", "*"},
		"STAGING":      {"v-staging-9be2", "staging", "*"},
		"MAIN":         {"v-main-44c1", "*", "main"},
		"PROD_MAIN":    {"v-prod-main-c3f0", "production", "main"},
		"FEATURE_ONLY": {"v-feature-2210", "*", "feature"},
		"STAGING_MAIN": {"v-staging-main-77d2", "staging", "main"},
	}
	for name, s := range secrets {
		if err := rails.CreateSecret(p3, name, s.value, s.env, s.branch); err != nil {
			t.Fatal(err)
		}
	}
	const p4Value = "v-project4-e81b"
	if err := rails.CreateSecret(p4, "GLOBAL", p4Value, "*", "*"); err != nil {
		t.Fatal(err)
	}
	groupSecrets := map[string]struct {
		value, env string
		protected  bool
	}{
		"G_PROTECTED":         {"v-g-prot-1c2d", "*", true},
		"G_ANY_REF":           {"v-g-any-8e0f", "*", false},
		"G_STAGING_PROTECTED": {"v-g-stag-5a6b", "staging", true},
		"G_PROD_PROTECTED":    {"v-g-prod-3f4e", "production", true},
	}
	for name, s := range groupSecrets {
		if err := rails.CreateGroupSecret(g2, name, s.value, s.env, s.protected); err != nil {
			t.Fatal(err)
		}
	}

	// The job: project 3, protected branch main, environment production.
	jobToken := mustJobLogin(t, hc, addr, p3, pipelineJWT)
	expectReads(t, hc, addr, jobToken, p3.Namespace(), "project 3's job", map[string]string{
		"GLOBAL": secrets["GLOBAL"].value, "PROD": secrets["PROD"].value,
		"MAIN": secrets["MAIN"].value, "PROD_MAIN": secrets["PROD_MAIN"].value,
	}, "STAGING", "FEATURE_ONLY", "STAGING_MAIN")
	_, err = readSecret(hc, addr, jobToken, p4.Namespace(), "GLOBAL")
	wantForbidden(t, "project 3's job reading project 4's secret", err)
	for _, path := range []string{"data/explicit/GLOBAL", "data/explicit/NEW", "metadata/explicit/GLOBAL"} {
		err := gitlabsim.Call(hc, addr, jobToken, "POST", p3.Namespace(), gitlabsim.SecretsMount+"/"+path,
			map[string]any{"data": map[string]string{"value": "overwritten"}}, nil)
		wantForbidden(t, "a job writing "+path, err)
	}
	// Group secrets: the same ID token logs in at the group's namespace too.
	groupToken := mustLogin(t, hc, addr, g2.Namespace(), pipelineJWT)
	expectReads(t, hc, addr, groupToken, g2.Namespace(), "a protected job in group 2", map[string]string{
		"G_PROTECTED": groupSecrets["G_PROTECTED"].value, "G_ANY_REF": groupSecrets["G_ANY_REF"].value,
		"G_PROD_PROTECTED": groupSecrets["G_PROD_PROTECTED"].value,
	}, "G_STAGING_PROTECTED")
	// The same branch, unprotected: none of the secrets for protected refs.
	unprotected := mainProd
	unprotected.RefProtected, unprotected.JobID = false, 1002
	unprotectedJWT := sign(t, is, is.JobClaims(unprotected, addr))
	expectReads(t, hc, addr, mustLogin(t, hc, addr, g2.Namespace(), unprotectedJWT), g2.Namespace(), "an unprotected job in group 2",
		map[string]string{"G_ANY_REF": groupSecrets["G_ANY_REF"].value}, "G_PROTECTED", "G_PROD_PROTECTED", "G_STAGING_PROTECTED")

	// Bad tokens: each refused, each audited, and the node keeps serving.
	bad := badJobTokens(t, is, mainProd, p4, addr)
	for name, b := range bad {
		if _, err := gitlabsim.JobLogin(hc, addr, p3, b.jwt); err == nil || !strings.Contains(err.Error(), b.why) {
			t.Errorf("%s: want a refusal for ...%s..., got %v", name, b.why, err)
		}
		if _, err := readSecret(hc, addr, mustJobLogin(t, hc, addr, p3, sign(t, is, is.JobClaims(mainProd, addr))), p3.Namespace(), "GLOBAL"); err != nil {
			t.Fatalf("a good job after refusing %s: %v", name, err)
		}
	}
	notInGroup := is.JobClaims(mainProd, addr)
	notInGroup["project_group_ids"] = []string{"9"}
	if _, err := gitlabsim.LoginAt(hc, addr, g2.Namespace(), "auth/pipeline_jwt/cel/login", gitlabsim.PipelineRole, sign(t, is, notInGroup)); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "project does not belong to group") {
		t.Errorf("a job of a project outside group 2 logging in to the group: want HTTP 400 ...project does not belong to group..., got %v", err)
	}
	harness.Eventually(t, time.Minute, "an audit entry for every refused login", func() bool {
		return countFailedLogins(auditLog, p3.Namespace()) >= len(bad)
	})

	// A rotated signing key is picked up without a restart.
	if err := is.Rotate(); err != nil {
		t.Fatal(err)
	}
	rotated := mainProd
	rotated.JobID = 1003
	if _, err := readSecret(hc, addr, mustJobLogin(t, hc, addr, p3, sign(t, is, is.JobClaims(rotated, addr))), p3.Namespace(), "GLOBAL"); err != nil {
		t.Fatalf("a job token signed with the rotated key: %v", err)
	}
	if _, err := rails.Login(); err != nil {
		t.Fatalf("Rails' login with the rotated key: %v", err)
	}

	// The audit log names project and job, never a secret value or token.
	audit, _ := os.ReadFile(auditLog)
	for _, want := range []string{`"job_id":"1001"`, `"project_id":"3"`, `"pipeline_id":"501"`, `pipeline:3"`} {
		if !strings.Contains(string(audit), want) {
			t.Errorf("the audit log does not name the job: no %s", want)
		}
	}
	var values []string
	for _, s := range secrets {
		values = append(values, s.value)
	}
	for _, s := range groupSecrets {
		values = append(values, s.value)
	}
	scanForSecrets(t, string(audit)+tr.String(), append(values, p4Value, root, railsToken, jobToken, groupToken, pipelineJWT, unprotectedJWT))

	// Project 3 deleted: its namespace, roles and secrets are gone;
	// project 4 and the group are untouched.
	if err := rails.Deprovision(p3); err != nil {
		t.Fatal(err)
	}
	if _, err := gitlabsim.JobLogin(hc, addr, p3, sign(t, is, is.JobClaims(rotated, addr))); statusOf(err) != http.StatusNotFound || !strings.Contains(err.Error(), "namespace not found") {
		t.Errorf("a job logging in to a deleted project: want HTTP 404 namespace not found, got %v", err)
	}
	if _, err := readSecret(hc, addr, root, p3.Namespace(), "GLOBAL"); statusOf(err) != http.StatusNotFound || !strings.Contains(err.Error(), "namespace not found") {
		t.Errorf("a deleted project's secret with the root token: want HTTP 404 namespace not found, got %v", err)
	}
	job4 := mainProd
	job4.Project, job4.JobID = p4, 2001
	jwt4 := sign(t, is, is.JobClaims(job4, addr))
	if got, err := readSecret(hc, addr, mustJobLogin(t, hc, addr, p4, jwt4), p4.Namespace(), "GLOBAL"); err != nil || got != p4Value {
		t.Fatalf("project 4 after project 3 was deleted: %v", err)
	}
	if _, err := readSecret(hc, addr, mustLogin(t, hc, addr, g2.Namespace(), jwt4), g2.Namespace(), "G_ANY_REF"); err != nil {
		t.Fatalf("group 2 after project 3 was deleted: %v", err)
	}
	if code := n.Signal(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}

// badToken is an ID token project 3's pipeline role must refuse, and a
// part of OpenBao's answer that says why.
type badToken struct{ jwt, why string }

// badJobTokens are ID tokens project 3's pipeline role must refuse.
func badJobTokens(t *testing.T, is *gitlabsim.Issuer, job gitlabsim.Job, other gitlabsim.Project, aud string) map[string]badToken {
	t.Helper()
	bad := map[string]badToken{}
	with := func(name, why string, change func(c map[string]any)) {
		c := is.JobClaims(job, aud)
		change(c)
		bad[name] = badToken{sign(t, is, c), why}
	}
	with("expired", "expired", func(c map[string]any) { gitlabsim.Times(c, -10*time.Minute) })
	with("not yet valid", "nbf", func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() })
	with("wrong audience", "aud", func(c map[string]any) { c["aud"] = "https://other.example.com" })
	with("wrong issuer", "iss", func(c map[string]any) { c["iss"] = "https://gitlab.evil.example.com" })
	with("Rails' subject", "invalid subject for pipeline authentication", func(c map[string]any) { c["sub"] = "gitlab_secrets_manager" })
	with("a user's subject", "invalid subject for pipeline authentication", func(c map[string]any) { c["sub"] = "user:root" })
	with("the privileged scope", "invalid secrets_manager_scope", func(c map[string]any) { c["secrets_manager_scope"] = "privileged" })
	for claim, why := range map[string]string{
		"project_id": "missing project_id", "user_id": "missing user_id", "secrets_manager_scope": "missing secrets_manager_scope",
		"sub": "missing subject", "aud": "aud",
	} {
		with("missing "+claim, why, func(c map[string]any) { delete(c, claim) })
	}
	otherJob := job
	otherJob.Project = other
	bad["a token of another project (its sub and project_id)"] = badToken{sign(t, is, is.JobClaims(otherJob, aud)), "token project_id does not match project"}
	unknown, err := is.SignWithUnknownKey(is.JobClaims(job, aud))
	if err != nil {
		t.Fatal(err)
	}
	bad["unknown signing key"] = badToken{unknown, "failed to verify"}
	return bad
}

func sign(t *testing.T, is *gitlabsim.Issuer, claims map[string]any) string {
	t.Helper()
	s, err := is.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustJobLogin(t *testing.T, hc *http.Client, addr string, p gitlabsim.Project, jwt string) string {
	t.Helper()
	return mustLogin(t, hc, addr, p.Namespace(), jwt)
}

// mustLogin logs a job in at the pipeline_jwt CEL role of namespace ns.
func mustLogin(t *testing.T, hc *http.Client, addr, ns, jwt string) string {
	t.Helper()
	tok, err := gitlabsim.LoginAt(hc, addr, ns, "auth/"+gitlabsim.PipelineMount+"/cel/login", gitlabsim.PipelineRole, jwt)
	if err != nil {
		t.Fatalf("job login at %s: %v", ns, err)
	}
	return tok
}

// expectReads checks that token reads exactly the want secrets (with their
// values) and none of the others.
func expectReads(t *testing.T, hc *http.Client, addr, token, ns, who string, want map[string]string, not ...string) {
	t.Helper()
	for name, value := range want {
		if got, err := readSecret(hc, addr, token, ns, name); err != nil || got != value {
			t.Errorf("%s should read %s: %v", who, name, err)
		}
	}
	for _, name := range not {
		_, err := readSecret(hc, addr, token, ns, name)
		wantForbidden(t, who+" reading "+name+", which its policies do not grant", err)
	}
}

func readSecret(hc *http.Client, addr, token, ns, name string) (string, error) {
	var out struct {
		Data struct {
			Data map[string]string `json:"data"`
		} `json:"data"`
	}
	err := gitlabsim.Call(hc, addr, token, "GET", ns, gitlabsim.SecretsMount+"/data/"+gitlabsim.DataRoot+"/"+name, nil, &out)
	return out.Data.Data["value"], err
}

// countFailedLogins counts audit responses that refused a pipeline login
// in namespace ns (the error itself is HMAC'd, like every value).
func countFailedLogins(auditLog, ns string) int {
	b, err := os.ReadFile(auditLog)
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		var e struct {
			Type    string `json:"type"`
			Error   string `json:"error"`
			Request struct {
				Path      string `json:"path"`
				Namespace struct {
					Path string `json:"path"`
				} `json:"namespace"`
			} `json:"request"`
			Response struct {
				Data map[string]any `json:"data"`
			} `json:"response"`
		}
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		refused := e.Error != "" || e.Response.Data["error"] != nil
		if e.Type == "response" && refused && e.Request.Path == "auth/pipeline_jwt/cel/login" &&
			strings.TrimSuffix(e.Request.Namespace.Path, "/") == ns {
			n++
		}
	}
	return n
}
