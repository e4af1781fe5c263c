// Package runner tests the appliance with GitLab Runner's own Vault client
// (gitlab.com/gitlab-org/gitlab-runner/helpers/vault), the code a Runner
// job uses to fetch its secrets. It is a module of its own so that the
// Runner's dependencies never change the server's.
package runner

import (
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-runner/helpers/vault"
	"gitlab.com/gitlab-org/gitlab-runner/helpers/vault/auth_methods"
	"gitlab.com/gitlab-org/gitlab-runner/helpers/vault/service"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/gitlabsim"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveBuild()
	os.Exit(code)
}

// What a job's `secrets:` entry gives the Runner: auth, engine, secret.
type jwtAuth struct{ jwt string }

func (a jwtAuth) AuthName() string { return "jwt" }
func (a jwtAuth) AuthPath() string { return gitlabsim.PipelineMount }
func (a jwtAuth) AuthData() auth_methods.Data {
	return auth_methods.Data{"jwt": a.jwt, "role": gitlabsim.PipelineRole}
}

type kvEngine struct{}

func (kvEngine) EngineName() string { return "kv-v2" }
func (kvEngine) EnginePath() string { return gitlabsim.SecretsMount }

type secret struct{ name string }

func (s secret) SecretPath() string  { return gitlabsim.DataRoot + "/" + s.name }
func (s secret) SecretField() string { return "value" }

func TestRunnerReadsSecrets(t *testing.T) {
	tr := &harness.Transcript{}
	is, err := gitlabsim.NewIssuer()
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	n, addr, _, _ := gitlabsim.StartAppliance(t, tr, is)
	rails := &gitlabsim.Rails{Addr: addr, HTTP: &http.Client{Timeout: 30 * time.Second}, Issuer: is}
	if err := rails.Login(); err != nil {
		t.Fatal(err)
	}
	p3 := gitlabsim.Project{Org: 1, Group: 2, ID: 3, Path: "acme/platform/project-3"}
	if err := rails.Provision(p3); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string][3]string{
		"DB_PASSWORD": {"v-db-6b1e", "production", "*"},
		"STAGING_KEY": {"v-staging-70a2", "staging", "*"},
	} {
		if err := rails.CreateSecret(p3, name, s[0], s[1], s[2]); err != nil {
			t.Fatal(err)
		}
	}
	job := gitlabsim.Job{Project: p3, JobID: 4242, PipelineID: 99, Ref: "main", RefType: "branch", RefProtected: true, Environment: "production", UserID: 7}
	jwt, err := is.Sign(is.JobClaims(job, addr))
	if err != nil {
		t.Fatal(err)
	}

	// The Runner's service: JWT login, then the KV v2 engine reads a field.
	v, err := service.NewVault(addr, p3.Namespace(), jwtAuth{jwt})
	if err != nil {
		t.Fatalf("Runner login: %v", err)
	}
	got, err := v.GetField(kvEngine{}, secret{"DB_PASSWORD"})
	if err != nil || got != "v-db-6b1e" {
		t.Fatalf("Runner read DB_PASSWORD: %v %v", got, err)
	}
	if got, err := v.GetField(kvEngine{}, secret{"STAGING_KEY"}); err == nil && got != nil {
		t.Fatal("the production job read a staging secret")
	}
	if err := v.Put(kvEngine{}, secret{"DB_PASSWORD"}, map[string]any{"value": "overwritten"}); err == nil {
		t.Fatal("the job wrote a secret")
	}

	// Inline auth: no login call, the JWT rides on each request. GitLab
	// hands the Runner namespace-qualified paths (ci_auth_path,
	// ci_secrets_mount_full_path): the client's clone for inline auth does
	// not carry a namespace header.
	c, err := vault.NewClient(addr, "", vault.WithInlineAuth(&vault.InlineAuth{
		Path: p3.Namespace() + "/auth/" + gitlabsim.PipelineMount + "/login", JWT: jwt, Role: gitlabsim.PipelineRole,
	}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Read(p3.Namespace() + "/" + gitlabsim.SecretsMount + "/data/" + gitlabsim.DataRoot + "/DB_PASSWORD")
	if err != nil {
		t.Fatalf("inline-auth read: %v", err)
	}
	data, _ := res.Data()["data"].(map[string]any)
	if data["value"] != "v-db-6b1e" {
		t.Fatalf("inline-auth read returned %v", data)
	}
	if _, err := c.Read(p3.Namespace() + "/" + gitlabsim.SecretsMount + "/data/" + gitlabsim.DataRoot + "/STAGING_KEY"); err == nil {
		t.Fatal("inline auth read a staging secret")
	}

	// A token of another project gets nothing through the Runner either.
	other := job
	other.Project = gitlabsim.Project{Org: 1, Group: 2, ID: 4, Path: "acme/platform/project-4"}
	bad, _ := is.Sign(is.JobClaims(other, addr))
	if _, err := service.NewVault(addr, p3.Namespace(), jwtAuth{bad}); err == nil {
		t.Fatal("another project's job logged in")
	}
	if code := n.Signal(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}
