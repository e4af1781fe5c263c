// Package gitlab holds what the appliance sets up for GitLab Rails: the
// JWT auth mount GitLab Rails logs in with, its privileged role and the
// policy of that role. Bootstrap applies it, idempotently, through any
// Client: the in-process core right after init, or the API with an
// operator's token (`gitlab-secrets-appliance gitlab bootstrap`).
//
// Everything GitLab provisions after that (namespaces, KV mounts, the
// pipeline_jwt and user_jwt mounts and roles, policies, secrets) GitLab
// Rails does itself through the API with the privileged token.
package gitlab

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Names GitLab Rails expects (ee/lib/secrets_management/
// secrets_manager_client.rb: GITLAB_JWT_AUTH_PATH, DEFAULT_JWT_ROLE; the
// role as GitLab's OpenBao maintenance docs restore it).
const (
	AuthMount  = "gitlab_rails_jwt"
	RoleName   = "app"
	PolicyName = "secrets_manager"
	// Subject and scope claim of GitLab Rails' privileged tokens.
	Subject        = "gitlab_secrets_manager"
	ScopeClaim     = "secrets_manager_scope"
	PrivilegedRole = "privileged"
)

// Config is what the appliance knows of GitLab. Keys are verified offline,
// from a key set on the local network: GitLab's own, or the appliance's
// loopback endpoint serving a PEM file (KeysHandler).
type Config struct {
	// Issuer is GitLab's URL, the iss of its tokens.
	Issuer string
	// JWKSURL is the key set (GitLab's …/oauth/discovery/keys) and
	// JWKSCAPEM the CA bundle to trust for it. OpenBao fetches the set again
	// when a token names a key it does not know, so a rotated signing key
	// is picked up without a restart.
	JWKSURL   string
	JWKSCAPEM string
	// Audience is the aud GitLab Rails puts in its tokens: the appliance's
	// URL as GitLab knows it (gitlab.rb openbao['url']).
	Audience string
	// TokenTTL and TokenMaxTTL bound the tokens the privileged login gives.
	TokenTTL, TokenMaxTTL time.Duration
}

// Client is how Bootstrap reaches OpenBao, with some token's rights.
type Client interface {
	Read(ctx context.Context, path string) (map[string]any, error)
	Write(ctx context.Context, path string, data map[string]any) error
}

// Step is one thing Bootstrap did.
type Step struct {
	Path   string `json:"path"`
	Action string `json:"action"` // created, exists, written
}

// Bootstrap makes OpenBao's state match cfg: the auth mount (created if
// missing), its config, the privileged role and its policy (written every
// time, so a changed config or rotated PEM key takes effect). It is safe
// to repeat.
func Bootstrap(ctx context.Context, c Client, cfg Config) ([]Step, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	var steps []Step
	auths, err := c.Read(ctx, "sys/auth")
	if err != nil {
		return nil, fmt.Errorf("listing auth mounts: %w", err)
	}
	if _, ok := auths[AuthMount+"/"]; ok {
		steps = append(steps, Step{"sys/auth/" + AuthMount, "exists"})
	} else {
		if err := c.Write(ctx, "sys/auth/"+AuthMount, map[string]any{
			"type":        "jwt",
			"description": "GitLab Rails (secrets manager provisioning)",
		}); err != nil {
			return nil, fmt.Errorf("enabling the %s auth mount: %w", AuthMount, err)
		}
		steps = append(steps, Step{"sys/auth/" + AuthMount, "created"})
	}
	writes := []struct {
		path string
		data map[string]any
	}{
		{"sys/policies/acl/" + PolicyName, map[string]any{"policy": Policy}},
		{"auth/" + AuthMount + "/config", cfg.mountConfig()},
		{"auth/" + AuthMount + "/role/" + RoleName, cfg.role()},
	}
	for _, w := range writes {
		if err := c.Write(ctx, w.path, w.data); err != nil {
			return steps, fmt.Errorf("writing %s: %w", w.path, err)
		}
		steps = append(steps, Step{w.path, "written"})
	}
	return steps, nil
}

func (cfg Config) check() error {
	var errs []error
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("no issuer (GitLab's URL)"))
	}
	if cfg.JWKSURL == "" {
		errs = append(errs, errors.New("no JWKS URL"))
	}
	if cfg.Audience == "" {
		errs = append(errs, errors.New("no audience"))
	}
	return errors.Join(errs...)
}

func (cfg Config) mountConfig() map[string]any {
	// Clear what an earlier version or an operator may have set: exactly
	// one key source.
	return map[string]any{
		"bound_issuer":           cfg.Issuer,
		"jwks_url":               cfg.JWKSURL,
		"jwks_ca_pem":            cfg.JWKSCAPEM,
		"jwt_validation_pubkeys": []string{},
		"oidc_discovery_url":     "",
	}
}

func (cfg Config) role() map[string]any {
	return map[string]any{
		"role_type":       "jwt",
		"user_claim":      "user_id",
		"bound_subject":   Subject,
		"bound_audiences": []string{cfg.Audience},
		"bound_claims":    map[string]any{ScopeClaim: PrivilegedRole},
		"claim_mappings": map[string]string{
			"user_id": "user_id", "project_id": "project_id", "group_id": "group_id",
			"namespace_id": "namespace_id", "correlation_id": "correlation_id",
		},
		"token_policies": []string{PolicyName},
		"token_ttl":      int(cfg.TokenTTL.Seconds()),
		"token_max_ttl":  int(cfg.TokenMaxTTL.Seconds()),
	}
}

// Policy is what GitLab Rails may do. It grants, rather than denies: every
// namespace GitLab provisions (org_<o> and everything under it, where
// Rails creates mounts, auth mounts, CEL roles, policies and secrets) and,
// in the root namespace, creating and deleting those org_<o> namespaces.
// Nothing else of the root namespace: no policy, auth mount, token, token
// role, identity, mount, seal, storage, audit or sys/config change, so
// Rails' token cannot raise itself to an operator's rights. (Its login at
// auth/gitlab_rails_jwt/login needs no policy; OpenBao's default policy
// adds sys/capabilities-self and the token's own lookup and renewal.)
//
// OpenBao matches a policy path against the request's path with the
// namespace in front (a request in org_1 for sys/policies/acl/x is checked
// as org_1/sys/policies/acl/x), so "org_*" covers exactly what happens
// inside GitLab's namespaces, and the tokens Rails mints there are bound to
// them. Root-namespace mounts must not be named org_*: they would be
// GitLab's too.
var Policy = strings.TrimSpace(`
# GitLab Rails' privileged identity (auth/gitlab_rails_jwt/role/app).
# Everything inside GitLab's namespaces org_<o>/group_<g>/project_<p> and
# org_<o>/group_<g>/group_<g>: namespaces, secret engines, auth mounts and
# roles, policies, secrets. OpenBao itself refuses cluster endpoints (seal,
# storage, audit, raw, rotate, ...) inside a namespace.
path "org_*" {
  capabilities = ["create", "read", "update", "delete", "list", "sudo"]
}

# The root namespace: only GitLab's organisation namespaces themselves.
path "sys/namespaces/org_*" {
  capabilities = ["create", "read", "update", "delete"]
}
`)
