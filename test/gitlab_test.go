package test

import (
	"encoding/json"
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

// GitLab's whole path: Rails logs in with its privileged token and
// provisions projects 3 and 4 as GitLab does; job ID tokens read exactly
// what their policies grant; bad tokens are refused and audited; a
// rotated signing key works at once; a deleted project's secrets are gone.
func TestGitLabConformance(t *testing.T) {
	tr := &harness.Transcript{}
	is, err := gitlabsim.NewIssuer()
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	n, addr, root, auditLog := gitlabsim.StartAppliance(t, tr, is)
	hc := &http.Client{Timeout: 30 * time.Second}

	// Rails: the privileged login works only with the privileged claims.
	rails := &gitlabsim.Rails{Addr: addr, HTTP: hc, Issuer: is}
	if err := rails.Login(); err != nil {
		t.Fatalf("Rails' privileged login: %v", err)
	}
	p3 := gitlabsim.Project{Org: 1, Group: 2, ID: 3, Path: "acme/platform/project-3"}
	p4 := gitlabsim.Project{Org: 1, Group: 2, ID: 4, Path: "acme/platform/project-4"}
	mainProd := gitlabsim.Job{Project: p3, JobID: 1001, PipelineID: 501, Ref: "main", RefType: "branch", RefProtected: true, Environment: "production", UserID: 7}
	pipelineJWT := sign(t, is, is.JobClaims(mainProd, addr))
	if _, err := gitlabsim.Login(hc, addr, "", "gitlab_rails_jwt", "app", pipelineJWT); err == nil {
		t.Fatal("a pipeline token logged in as GitLab Rails")
	}
	wrongSub := is.RailsClaims(addr)
	wrongSub["sub"] = "user:root"
	if _, err := gitlabsim.Login(hc, addr, "", "gitlab_rails_jwt", "app", sign(t, is, wrongSub)); err == nil {
		t.Fatal("a token with another subject logged in as GitLab Rails")
	}
	// GitLab Rails cannot touch the cluster or its own rights.
	if err := gitlabsim.Call(hc, addr, rails.Token, "POST", "", "sys/policies/acl/secrets_manager", map[string]string{"policy": `path "*" {capabilities=["sudo"]}`}, nil); err == nil {
		t.Fatal("GitLab Rails rewrote its own policy")
	}

	// Provisioning in GitLab's order, then secrets in every scope.
	for _, p := range []gitlabsim.Project{p3, p4} {
		if err := rails.Provision(p); err != nil {
			t.Fatal(err)
		}
	}
	// Provisioning again changes nothing and fails nothing.
	if err := rails.Provision(p3); err != nil {
		t.Fatalf("provisioning twice: %v", err)
	}
	secrets := map[string]struct{ value, env, branch string }{
		"GLOBAL":       {"v-global-51d3", "*", "*"},
		"PROD":         {"v-prod-0a77", "production", "*"},
		"STAGING":      {"v-staging-9be2", "staging", "*"},
		"MAIN":         {"v-main-44c1", "*", "main"},
		"PROD_MAIN":    {"v-prod-main-c3f0", "production", "main"},
		"FEATURE_ONLY": {"v-feature-2210", "*", "feature"},
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

	// The job: project 3, protected branch main, environment production.
	jobToken := mustLogin(t, hc, addr, p3, pipelineJWT)
	readable := map[string]bool{"GLOBAL": true, "PROD": true, "MAIN": true, "PROD_MAIN": true}
	for name, s := range secrets {
		got, err := readSecret(hc, addr, jobToken, p3, name)
		switch {
		case readable[name] && (err != nil || got != s.value):
			t.Errorf("%s: the job should read it: %v", name, err)
		case !readable[name] && err == nil:
			t.Errorf("%s: the job read a secret its policies do not grant", name)
		}
	}
	if _, err := readSecret(hc, addr, jobToken, p4, "GLOBAL"); err == nil {
		t.Error("project 3's job read project 4's secret")
	}
	if err := gitlabsim.Call(hc, addr, jobToken, "POST", p3.Namespace(), gitlabsim.SecretsMount+"/data/explicit/GLOBAL",
		map[string]any{"data": map[string]string{"value": "overwritten"}}, nil); err == nil {
		t.Error("a job wrote a secret")
	}
	// The same branch name, unprotected: no branch-scoped secrets.
	unprotected := mainProd
	unprotected.RefProtected, unprotected.JobID = false, 1002
	tok := mustLogin(t, hc, addr, p3, sign(t, is, is.JobClaims(unprotected, addr)))
	for _, name := range []string{"MAIN", "PROD_MAIN"} {
		if _, err := readSecret(hc, addr, tok, p3, name); err == nil {
			t.Errorf("%s: an unprotected ref read a secret for protected refs", name)
		}
	}
	if got, err := readSecret(hc, addr, tok, p3, "PROD"); err != nil || got != secrets["PROD"].value {
		t.Errorf("PROD from an unprotected ref in production: %v", err)
	}

	// Bad tokens: each refused, each audited, and the node keeps serving.
	bad := map[string]string{}
	expired := is.JobClaims(mainProd, addr)
	gitlabsim.Times(expired, -10*time.Minute)
	bad["expired"] = sign(t, is, expired)
	bad["wrong audience"] = sign(t, is, is.JobClaims(mainProd, "https://other.example.com"))
	wrongIss := is.JobClaims(mainProd, addr)
	wrongIss["iss"] = "https://gitlab.evil.example.com"
	bad["wrong issuer"] = sign(t, is, wrongIss)
	unknown, err := is.SignWithUnknownKey(is.JobClaims(mainProd, addr))
	if err != nil {
		t.Fatal(err)
	}
	bad["unknown key"] = unknown
	otherSub := is.JobClaims(mainProd, addr)
	otherSub["sub"] = "project_path:acme/platform/project-4:ref_type:branch:ref:main"
	bad["sub of another project"] = sign(t, is, otherSub)
	otherProject := mainProd
	otherProject.Project = p4
	bad["token of another project"] = sign(t, is, is.JobClaims(otherProject, addr))
	for _, claim := range []string{"project_id", "ref_protected", "secrets_manager_scope"} {
		c := is.JobClaims(mainProd, addr)
		delete(c, claim)
		bad["missing "+claim] = sign(t, is, c)
	}
	for name, jwt := range bad {
		if _, err := gitlabsim.Login(hc, addr, p3.Namespace(), gitlabsim.PipelineMount, gitlabsim.PipelineRole, jwt); err == nil {
			t.Errorf("%s: logged in", name)
		}
	}
	if _, err := readSecret(hc, addr, mustLogin(t, hc, addr, p3, sign(t, is, is.JobClaims(mainProd, addr))), p3, "GLOBAL"); err != nil {
		t.Fatalf("a good job after the refusals: %v", err)
	}
	harness.Eventually(t, time.Minute, "an audit entry for every refused login", func() bool {
		return countFailedLogins(t, auditLog, p3) >= len(bad)
	})

	// A rotated signing key is picked up without a restart.
	if err := is.Rotate(); err != nil {
		t.Fatal(err)
	}
	rotated := mainProd
	rotated.JobID = 1003
	if _, err := readSecret(hc, addr, mustLogin(t, hc, addr, p3, sign(t, is, is.JobClaims(rotated, addr))), p3, "GLOBAL"); err != nil {
		t.Fatalf("a job token signed with the rotated key: %v", err)
	}
	if err := rails.Login(); err != nil {
		t.Fatalf("Rails' login with the rotated key: %v", err)
	}

	// The audit log names project and job, never a secret value.
	audit, _ := os.ReadFile(auditLog)
	if !strings.Contains(string(audit), `"job_id":"1001"`) || !strings.Contains(string(audit), `"project_id":"3"`) {
		t.Error("the audit log does not name the job and project of the logins")
	}
	var values []string
	for _, s := range secrets {
		values = append(values, s.value)
	}
	scanForSecrets(t, string(audit)+tr.String(), append(values, p4Value, root, rails.Token, jobToken, pipelineJWT))

	// Project 3 deleted: its namespace, roles and secrets are gone;
	// project 4 is untouched.
	if err := rails.Deprovision(p3); err != nil {
		t.Fatal(err)
	}
	if _, err := gitlabsim.Login(hc, addr, p3.Namespace(), gitlabsim.PipelineMount, gitlabsim.PipelineRole, sign(t, is, is.JobClaims(rotated, addr))); err == nil {
		t.Error("a job logged in to a deleted project")
	}
	if _, err := readSecret(hc, addr, root, p3, "GLOBAL"); err == nil {
		t.Error("a deleted project's secret is still readable with the root token")
	}
	job4 := mainProd
	job4.Project, job4.JobID = p4, 2001
	if got, err := readSecret(hc, addr, mustLogin(t, hc, addr, p4, sign(t, is, is.JobClaims(job4, addr))), p4, "GLOBAL"); err != nil || got != p4Value {
		t.Fatalf("project 4 after project 3 was deleted: %v", err)
	}
	n.Signal(t, syscall.SIGTERM, time.Minute)
}

func sign(t *testing.T, is *gitlabsim.Issuer, claims map[string]any) string {
	t.Helper()
	s, err := is.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustLogin(t *testing.T, hc *http.Client, addr string, p gitlabsim.Project, jwt string) string {
	t.Helper()
	tok, err := gitlabsim.Login(hc, addr, p.Namespace(), gitlabsim.PipelineMount, gitlabsim.PipelineRole, jwt)
	if err != nil {
		t.Fatalf("job login for project %d: %v", p.ID, err)
	}
	return tok
}

func readSecret(hc *http.Client, addr, token string, p gitlabsim.Project, name string) (string, error) {
	var out struct {
		Data struct {
			Data map[string]string `json:"data"`
		} `json:"data"`
	}
	err := gitlabsim.Call(hc, addr, token, "GET", p.Namespace(), gitlabsim.SecretsMount+"/data/explicit/"+name, nil, &out)
	return out.Data.Data["value"], err
}

// countFailedLogins counts audit responses that refused a pipeline login
// in p's namespace (the error itself is HMAC'd, like every value).
func countFailedLogins(t *testing.T, auditLog string, p gitlabsim.Project) int {
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
		if e.Type == "response" && refused && e.Request.Path == "auth/pipeline_jwt/login" &&
			strings.TrimSuffix(e.Request.Namespace.Path, "/") == p.Namespace() {
			n++
		}
	}
	return n
}

// PEM mode: GitLab's keys come from a file. A rotated key is picked up by
// replacing the file and running `gitlab bootstrap`, without a restart; a
// token without the rights is refused.
func TestGitLabBootstrapWithPEMKeys(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	is, err := gitlabsim.NewIssuer()
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	dir := t.TempDir()
	keys := filepath.Join(dir, "gitlab-jwt.pem")
	writePEM := func() {
		t.Helper()
		p, err := is.PublicKeysPEM()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keys, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writePEM()
	cfg, addr := nodeConfig(t, dir, "node-1", "127.0.0.1", "", "")
	f, _ := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintf(f, "gitlab {\n  url = %q\n  jwt_validation_pubkeys_file = %q\n  audience = %q\n}\n", is.URL, keys, addr)
	f.Close()
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	res := initCluster(t, bin, addr)
	waitState(t, tr, bin, addr, "active")
	hc := &http.Client{Timeout: 30 * time.Second}
	rails := &gitlabsim.Rails{Addr: addr, HTTP: hc, Issuer: is}
	if err := rails.Login(); err != nil {
		t.Fatalf("Rails login with the PEM key: %v", err)
	}

	if err := is.Rotate(); err != nil {
		t.Fatal(err)
	}
	if err := rails.Login(); err == nil {
		t.Fatal("a key not yet in the PEM file was accepted")
	}
	writePEM()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(rails.Token), 0o600) // Rails' own token: not allowed to change its login
	if _, errOut, code := harness.Run(t, tr, nil, bin, "gitlab", "bootstrap", "--address", addr, "--token-file", tokenFile); code != 1 || !strings.Contains(errOut, "permission denied") {
		t.Fatalf("bootstrap with Rails' token: exit %d: %s", code, errOut)
	}
	os.WriteFile(tokenFile, []byte(res.RootToken), 0o600)
	out, errOut, code := harness.Run(t, tr, nil, bin, "gitlab", "bootstrap", "--address", addr, "--token-file", tokenFile)
	if code != 0 || !strings.Contains(out, "exists   sys/auth/gitlab_rails_jwt") {
		t.Fatalf("bootstrap: exit %d: %s %s", code, out, errOut)
	}
	if err := rails.Login(); err != nil {
		t.Fatalf("Rails login with the rotated key after bootstrap: %v", err)
	}
	n.Signal(t, syscall.SIGTERM, time.Minute)
}
