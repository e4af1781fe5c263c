package appliance

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/gitlab"
)

// Defaults for the tokens of GitLab Rails' privileged login.
const (
	DefaultGitLabTokenTTL    = "5m"
	DefaultGitLabTokenMaxTTL = "15m"
)

// GitLab says how GitLab Rails logs in: the appliance sets up the
// gitlab_rails_jwt auth mount, its privileged role and policy at init and
// on `gitlab-secrets-appliance gitlab bootstrap`. Keys are verified
// offline, from GitLab's JWKS on the local network or from a PEM file.
type GitLab struct {
	// URL is GitLab's external URL, the issuer of its tokens.
	URL string `hcl:"url,optional"`
	// JWKSURL is GitLab's key set, e.g. https://gitlab.example.com/oauth/discovery/keys,
	// trusted with JWKSCAFile (PEM) if GitLab's certificate is from a private CA.
	JWKSURL    string `hcl:"jwks_url,optional"`
	JWKSCAFile string `hcl:"jwks_ca_file,optional"`
	// PublicKeysFile instead of JWKSURL: GitLab's signing public keys, PEM.
	PublicKeysFile string `hcl:"jwt_validation_pubkeys_file,optional"`
	// Audience is the aud of GitLab Rails' tokens: the appliance's URL as
	// configured in GitLab (gitlab.rb openbao['url']).
	Audience    string `hcl:"audience,optional"`
	TokenTTL    string `hcl:"token_ttl,optional"`
	TokenMaxTTL string `hcl:"token_max_ttl,optional"`
}

func (g *GitLab) applyDefaults() {
	if g.TokenTTL == "" {
		g.TokenTTL = DefaultGitLabTokenTTL
	}
	if g.TokenMaxTTL == "" {
		g.TokenMaxTTL = DefaultGitLabTokenMaxTTL
	}
}

func (g *GitLab) validate(v *validator) {
	if g.URL == "" {
		v.add("gitlab.url", "missing; set GitLab's external URL, the issuer of its tokens")
	} else {
		v.url("gitlab.url", g.URL, "http", "https")
	}
	switch {
	case g.JWKSURL == "" && g.PublicKeysFile == "":
		v.add("gitlab", "no keys: set jwks_url (GitLab's /oauth/discovery/keys on the local network) or jwt_validation_pubkeys_file")
	case g.JWKSURL != "" && g.PublicKeysFile != "":
		v.add("gitlab.jwt_validation_pubkeys_file", "set either jwks_url or jwt_validation_pubkeys_file, not both")
	case g.JWKSURL != "":
		v.url("gitlab.jwks_url", g.JWKSURL, "http", "https")
	default:
		if v.readable("gitlab.jwt_validation_pubkeys_file", g.PublicKeysFile) {
			if _, err := readPublicKeys(g.PublicKeysFile); err != nil {
				v.add("gitlab.jwt_validation_pubkeys_file", "%v", err)
			}
		}
	}
	if g.JWKSCAFile != "" && v.readable("gitlab.jwks_ca_file", g.JWKSCAFile) {
		b, _ := os.ReadFile(g.JWKSCAFile)
		if !x509.NewCertPool().AppendCertsFromPEM(b) {
			v.add("gitlab.jwks_ca_file", "%s holds no PEM certificate", g.JWKSCAFile)
		}
	}
	if g.Audience == "" {
		v.add("gitlab.audience", "missing; set the appliance URL GitLab is configured with (gitlab.rb openbao['url'])")
	}
	ttl, err1 := time.ParseDuration(g.TokenTTL)
	maxTTL, err2 := time.ParseDuration(g.TokenMaxTTL)
	switch {
	case err1 != nil || ttl <= 0:
		v.add("gitlab.token_ttl", "%q is not a positive duration such as \"5m\"", g.TokenTTL)
	case err2 != nil || maxTTL <= 0:
		v.add("gitlab.token_max_ttl", "%q is not a positive duration such as \"15m\"", g.TokenMaxTTL)
	case ttl > maxTTL:
		v.add("gitlab.token_ttl", "%s is longer than token_max_ttl %s", ttl, maxTTL)
	}
}

// readPublicKeys reads the PEM public keys (or certificates) of a file.
func readPublicKeys(file string) ([]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var keys []string
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE":
			keys = append(keys, strings.TrimSpace(string(pem.EncodeToMemory(block))))
		default:
			return nil, fmt.Errorf("%s holds a %q block: only public keys belong here, never a private key", file, block.Type)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s holds no PEM public key", file)
	}
	return keys, nil
}

// gitlabConfig is the bootstrap's view of the config, files read now.
func (g *GitLab) gitlabConfig() (gitlab.Config, error) {
	ttl, _ := time.ParseDuration(g.TokenTTL)
	maxTTL, _ := time.ParseDuration(g.TokenMaxTTL)
	c := gitlab.Config{Issuer: g.URL, JWKSURL: g.JWKSURL, Audience: g.Audience, TokenTTL: ttl, TokenMaxTTL: maxTTL}
	if g.JWKSCAFile != "" {
		b, err := os.ReadFile(g.JWKSCAFile)
		if err != nil {
			return c, fmt.Errorf("gitlab.jwks_ca_file: %w", unwrapPathError(err))
		}
		c.JWKSCAPEM = string(b)
	}
	if g.PublicKeysFile != "" {
		keys, err := readPublicKeys(g.PublicKeysFile)
		if err != nil {
			return c, fmt.Errorf("gitlab.jwt_validation_pubkeys_file: %w", err)
		}
		c.PublicKeysPEM = keys
	}
	return c, nil
}
