// Package runner tests the appliance with GitLab Runner's own Vault client
// (gitlab.com/gitlab-org/gitlab-runner/helpers/vault), the code a Runner
// job uses to fetch its secrets. It is a module of its own so that the
// Runner's dependencies never change the server's.
package runner

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-runner/helpers/vault"
	"gitlab.com/gitlab-org/gitlab-runner/helpers/vault/auth_methods"
	_ "gitlab.com/gitlab-org/gitlab-runner/helpers/vault/auth_methods/jwt"
	"gitlab.com/gitlab-org/gitlab-runner/helpers/vault/secret_engines"
	_ "gitlab.com/gitlab-org/gitlab-runner/helpers/vault/secret_engines/kv_v2"
	"gitlab.com/gitlab-org/gitlab-runner/helpers/vault/service"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/gitlabsim"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveBuild()
	os.Exit(code)
}

// The `vault:` keyword's view of a job: JWT login at a path, then an
// engine. Against the appliance the login path is GitLab's CEL role's.
type jwtAuth struct{ jwt string }

func (a jwtAuth) AuthName() string { return "jwt" }
func (a jwtAuth) AuthPath() string { return gitlabsim.PipelineMount + "/cel" }
func (a jwtAuth) AuthData() auth_methods.Data {
	return auth_methods.Data{"jwt": a.jwt, "role": gitlabsim.PipelineRole}
}

type kvEngine struct{}

func (kvEngine) EngineName() string { return "kv-v2" }
func (kvEngine) EnginePath() string { return gitlabsim.SecretsMount }

type secret struct{ name string }

func (s secret) SecretPath() string  { return gitlabsim.DataRoot + "/" + s.name }
func (s secret) SecretField() string { return "value" }

// gsmSecret is what GitLab sends the Runner for a `gitlab_secrets_manager`
// secret (EE::Ci::BuildRunnerPresenter#project_secrets_manager_payload):
// the server URL, inline auth (CEL login path with the namespace, role,
// the job's JWT), the engine with its namespaced path, the secret's path
// and field.
type gsmSecret struct {
	url, authPath, role, jwt string
	enginePath, path, field  string
}

// resolve does what the Runner's gitlab_secrets_manager resolver
// (helpers/secrets/resolvers/gitlab_secrets_manager) and its service
// (helpers/gitlab_secrets_manager/service) do, with the same helpers/vault
// calls; those two packages import the Runner's whole `common` package, so
// their dozen lines are repeated here rather than imported.
func resolve(s gsmSecret) (string, error) {
	client, err := vault.NewClient(s.url, "", vault.WithInlineAuth(&vault.InlineAuth{Path: s.authPath, JWT: s.jwt, Role: s.role}))
	if err != nil {
		return "", err
	}
	factory, err := secret_engines.GetFactory("kv-v2")
	if err != nil {
		return "", err
	}
	data, err := factory(client, s.enginePath).Get(s.path)
	if err != nil {
		return "", err
	}
	if data == nil {
		return "", errors.New("secret not found")
	}
	v, ok := data[s.field].(string)
	if !ok {
		return "", fmt.Errorf("field %q missing or not a string", s.field)
	}
	return v, nil
}

func TestRunnerReadsSecrets(t *testing.T) {
	tr := &harness.Transcript{}
	is, err := gitlabsim.NewIssuer()
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	n, addr, _, _ := gitlabsim.StartAppliance(t, tr, is)
	rails := &gitlabsim.Rails{Addr: addr, HTTP: &http.Client{Timeout: 30 * time.Second}, Issuer: is}
	p3 := gitlabsim.Project{Org: 1, Group: 2, ID: 3, Path: "acme/platform/project-3"}
	g2 := gitlabsim.Group{Org: 1, ID: 2}
	if err := rails.Provision(p3); err != nil {
		t.Fatal(err)
	}
	if err := rails.ProvisionGroup(g2); err != nil {
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
	if err := rails.CreateGroupSecret(g2, "DEPLOY_KEY", "v-deploy-4d1c", "*", true); err != nil {
		t.Fatal(err)
	}
	job := gitlabsim.Job{Project: p3, JobID: 4242, PipelineID: 99, Ref: "main", RefType: "branch", RefProtected: true, Environment: "production", UserID: 7}
	jwt, err := is.Sign(is.JobClaims(job, addr))
	if err != nil {
		t.Fatal(err)
	}

	// GitLab's payload: inline auth on every request, nothing stored.
	project := func(name string) gsmSecret {
		return gsmSecret{addr, p3.AuthPath(), gitlabsim.PipelineRole, jwt, p3.Namespace() + "/" + gitlabsim.SecretsMount, gitlabsim.DataRoot + "/" + name, "value"}
	}
	if got, err := resolve(project("DB_PASSWORD")); err != nil || got != "v-db-6b1e" {
		t.Fatalf("Runner resolved DB_PASSWORD: %q %v", got, err)
	}
	if _, err := resolve(project("STAGING_KEY")); err == nil {
		t.Fatal("the production job resolved a staging secret")
	}
	group := gsmSecret{addr, g2.AuthPath(), gitlabsim.PipelineRole, jwt, g2.Namespace() + "/" + gitlabsim.SecretsMount, gitlabsim.DataRoot + "/DEPLOY_KEY", "value"}
	if got, err := resolve(group); err != nil || got != "v-deploy-4d1c" {
		t.Fatalf("Runner resolved the group's DEPLOY_KEY on a protected ref: %q %v", got, err)
	}
	unprotected := job
	unprotected.RefProtected = false
	if group.jwt, err = is.Sign(is.JobClaims(unprotected, addr)); err != nil {
		t.Fatal(err)
	}
	if _, err := resolve(group); err == nil {
		t.Fatal("an unprotected ref resolved a group secret for protected refs")
	}

	// The `vault:` keyword's way: a login, then reads with the token.
	v, err := service.NewVault(addr, p3.Namespace(), jwtAuth{jwt})
	if err != nil {
		t.Fatalf("Runner login: %v", err)
	}
	if got, err := v.GetField(kvEngine{}, secret{"DB_PASSWORD"}); err != nil || got != "v-db-6b1e" {
		t.Fatalf("Runner read DB_PASSWORD: %v %v", got, err)
	}
	if got, err := v.GetField(kvEngine{}, secret{"STAGING_KEY"}); err == nil && got != nil {
		t.Fatal("the production job read a staging secret")
	}
	if err := v.Put(kvEngine{}, secret{"DB_PASSWORD"}, map[string]any{"value": "overwritten"}); err == nil {
		t.Fatal("the job wrote a secret")
	}

	// A token of another project gets nothing through the Runner either.
	other := job
	other.Project = gitlabsim.Project{Org: 1, Group: 2, ID: 4, Path: "acme/platform/project-4"}
	bad, _ := is.Sign(is.JobClaims(other, addr))
	if _, err := service.NewVault(addr, p3.Namespace(), jwtAuth{bad}); err == nil {
		t.Fatal("another project's job logged in")
	}
	s := project("DB_PASSWORD")
	s.jwt = bad
	if _, err := resolve(s); err == nil {
		t.Fatal("another project's job resolved a secret inline")
	}
	if code := n.Signal(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}
