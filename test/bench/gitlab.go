package main

import (
	"fmt"
	"sync"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/gitlabsim"
)

// GitLab-shaped requests alone, to read the cost of each (the burst mixes
// them): a job's JWT login at its project's pipeline_jwt CEL role, and a
// KV v2 read of a project secret with a job's token, in the project's
// namespace, as GitLab Runner sends them. Every request passes the
// appliance's request filter; these are the figures its cost shows in.

// jwtLogin is one job's login (no reads).
func jwtLogin(tokens []string) func(t *target, worker, i int) error {
	return func(t *target, worker, i int) error {
		_, err := gitlabsim.JobLogin(t.http, t.addr, burstProject, tokens[(worker*7919+i)%len(tokens)])
		return err
	}
}

// jobTokenCache holds one logged-in job token per target and worker.
type jobTokenCache struct {
	mu   sync.Mutex
	toks map[string]string
}

// jobRead reads one of the project's secrets with a job token (one login
// per worker, before its first read).
func jobRead(jwts []string, cache *jobTokenCache) func(t *target, worker, i int) error {
	return func(t *target, worker, i int) error {
		key := fmt.Sprintf("%s/%d", t.name, worker)
		cache.mu.Lock()
		tok := cache.toks[key]
		cache.mu.Unlock()
		if tok == "" {
			var err error
			if tok, err = gitlabsim.JobLogin(t.http, t.addr, burstProject, jwts[worker%len(jwts)]); err != nil {
				return err
			}
			cache.mu.Lock()
			cache.toks[key] = tok
			cache.mu.Unlock()
		}
		s := burstSecrets[i%len(burstSecrets)]
		var out struct {
			Data struct {
				Data map[string]string `json:"data"`
			} `json:"data"`
		}
		if err := gitlabsim.Call(t.http, t.addr, tok, "GET", burstProject.Namespace(), gitlabsim.SecretsMount+"/data/"+gitlabsim.DataRoot+"/"+s.name, nil, &out); err != nil {
			return err
		}
		if out.Data.Data["value"] == "" {
			return fmt.Errorf("empty secret %s", s.name)
		}
		return nil
	}
}
