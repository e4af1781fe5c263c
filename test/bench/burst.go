package main

import (
	"fmt"
	"net/http"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/gitlabsim"
)

// The CI burst: K concurrent jobs, each a JWT login with its ID token (at
// the project's pipeline_jwt CEL role, as GitLab provisions it) and three
// KV v2 reads, against the same provisioning (GitLab's requests, sent by
// gitlabsim with the root token: stock OpenBao has no Rails login) on
// both servers.

var burstProject = gitlabsim.Project{Org: 1, Group: 2, ID: 3, Path: "acme/platform/project-3"}

var burstSecrets = []struct{ name, env, branch string }{
	{"GLOBAL", "*", "*"}, {"PROD", "production", "*"}, {"MAIN", "*", "main"},
}

// provisionCI sets up project 3 as GitLab Rails would, with three secrets
// a production job on protected main may read.
func provisionCI(t *target, is *gitlabsim.Issuer) error {
	rails := &gitlabsim.Rails{Addr: t.addr, HTTP: t.http, Issuer: is, Token: t.token}
	if err := rails.Provision(burstProject); err != nil {
		return fmt.Errorf("%s: %w", t.name, err)
	}
	for _, s := range burstSecrets {
		if err := rails.CreateSecret(burstProject, s.name, "value-of-"+s.name, s.env, s.branch); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	return nil
}

// jobTokens signs n ID tokens of production jobs on protected main before
// a burst, as GitLab signs them before the jobs start.
func jobTokens(is *gitlabsim.Issuer, aud string, n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		jwt, err := is.Sign(is.JobClaims(gitlabsim.Job{
			Project: burstProject, JobID: 100_000 + i, PipelineID: i, Ref: "main", RefType: "branch",
			RefProtected: true, Environment: "production", UserID: 1,
		}, aud))
		if err != nil {
			return nil, err
		}
		out[i] = jwt
	}
	return out, nil
}

// ciJob returns the op for runLoad: one CI job with one of the tokens.
func ciJob(tokens []string) func(t *target, worker, i int) error {
	return func(t *target, worker, i int) error {
		return timedJob(t.http, t.addr, tokens[(worker*7919+i)%len(tokens)])
	}
}

func timedJob(hc *http.Client, addr, jwt string) error {
	ns := burstProject.Namespace()
	tok, err := gitlabsim.JobLogin(hc, addr, burstProject, jwt)
	if err != nil {
		return err
	}
	for _, s := range burstSecrets {
		var out struct {
			Data struct {
				Data map[string]string `json:"data"`
			} `json:"data"`
		}
		if err := gitlabsim.Call(hc, addr, tok, "GET", ns, gitlabsim.SecretsMount+"/data/"+gitlabsim.DataRoot+"/"+s.name, nil, &out); err != nil {
			return err
		}
		if out.Data.Data["value"] == "" {
			return fmt.Errorf("empty secret %s", s.name)
		}
	}
	return nil
}
