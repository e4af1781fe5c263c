package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/gitlab"
)

// Defaults for the tokens of GitLab Rails' privileged login, and for where
// the appliance serves a PEM keys file to its own OpenBao.
const (
	DefaultGitLabTokenTTL    = "5m"
	DefaultGitLabTokenMaxTTL = "15m"
	DefaultGitLabKeysAddress = "127.0.0.1:8207"
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
	// The appliance serves the file as a JWKS on KeysAddress (loopback,
	// plain HTTP, read afresh at every fetch) and points the mount there,
	// so a replaced file takes effect at the next token with a new key.
	// Every node of a cluster needs the file and the same KeysAddress: the
	// mount's config is the cluster's.
	PublicKeysFile string `hcl:"jwt_validation_pubkeys_file,optional"`
	KeysAddress    string `hcl:"pubkeys_jwks_address,optional"`
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
	if g.PublicKeysFile != "" && g.KeysAddress == "" {
		g.KeysAddress = DefaultGitLabKeysAddress
	}
}

func (g *GitLab) validate(v *validator) {
	if g.URL == "" {
		v.add("gitlab.url", "missing; set GitLab's external URL, the issuer of its tokens")
	} else {
		gitlabURL(v, "gitlab.url", g.URL)
		if strings.HasSuffix(g.URL, "/") {
			v.add("gitlab.url", "%q ends in /: OpenBao compares it with the iss of GitLab's tokens exactly, which has none", g.URL)
		}
	}
	switch {
	case g.JWKSURL == "" && g.PublicKeysFile == "":
		v.add("gitlab", "no keys: set jwks_url (GitLab's /oauth/discovery/keys on the local network) or jwt_validation_pubkeys_file")
	case g.JWKSURL != "" && g.PublicKeysFile != "":
		v.add("gitlab.jwt_validation_pubkeys_file", "set either jwks_url or jwt_validation_pubkeys_file, not both")
	case g.JWKSURL != "":
		gitlabURL(v, "gitlab.jwks_url", g.JWKSURL)
	default:
		if v.readable("gitlab.jwt_validation_pubkeys_file", g.PublicKeysFile) {
			if _, err := readPublicKeys(g.PublicKeysFile); err != nil {
				v.add("gitlab.jwt_validation_pubkeys_file", "%v", err)
			}
		}
	}
	if g.KeysAddress != "" {
		if g.PublicKeysFile == "" {
			v.add("gitlab.pubkeys_jwks_address", "only used with jwt_validation_pubkeys_file")
		} else if v.hostPort("gitlab.pubkeys_jwks_address", g.KeysAddress) {
			host, _, _ := net.SplitHostPort(g.KeysAddress)
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				v.add("gitlab.pubkeys_jwks_address", "%q is not a loopback IP address such as 127.0.0.1:8207: the key set is for this node's own OpenBao only", g.KeysAddress)
			}
		}
	}
	if g.JWKSCAFile != "" && v.readable("gitlab.jwks_ca_file", g.JWKSCAFile) {
		if _, err := ReadCAPool(g.JWKSCAFile); err != nil {
			v.add("gitlab.jwks_ca_file", "%v", err)
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

// gitlabURL checks an http(s) URL of GitLab's, whose port may be implied.
func gitlabURL(v *validator, key, raw string) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "":
		v.add(key, "%q is not a URL such as \"https://gitlab.example.com\"", raw)
	case u.Scheme != "http" && u.Scheme != "https":
		v.add(key, "%q has scheme %q; use http or https", raw, u.Scheme)
	}
}

// readPublicKeys checks the PEM public keys (or certificates) of a file.
func readPublicKeys(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	keys, err := gitlab.ParsePublicKeys(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", file, err)
	}
	return len(keys), nil
}

// BootstrapConfig is the bootstrap's view of the config, files read now.
func (g *GitLab) BootstrapConfig() (gitlab.Config, error) {
	ttl, _ := time.ParseDuration(g.TokenTTL)
	maxTTL, _ := time.ParseDuration(g.TokenMaxTTL)
	c := gitlab.Config{Issuer: g.URL, JWKSURL: g.JWKSURL, Audience: g.Audience, TokenTTL: ttl, TokenMaxTTL: maxTTL}
	if g.JWKSCAFile != "" {
		b, err := os.ReadFile(g.JWKSCAFile)
		if err != nil {
			return c, fmt.Errorf("gitlab.jwks_ca_file: %w", PathCause(err))
		}
		c.JWKSCAPEM = string(b)
	}
	if g.PublicKeysFile != "" {
		// Checked now so that a bad file fails here with its reason rather
		// than in OpenBao's fetch of the key set.
		if _, err := readPublicKeys(g.PublicKeysFile); err != nil {
			return c, fmt.Errorf("gitlab.jwt_validation_pubkeys_file: %w", err)
		}
		c.JWKSURL = "http://" + g.KeysAddress + gitlab.KeysPath
	}
	return c, nil
}
