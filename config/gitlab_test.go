package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/testpki"
)

// The gitlab block in HCL and in the JSON form Omnibus renders, in both
// key modes, with its defaults.
func TestGitLabBlockHCLAndJSON(t *testing.T) {
	dir := t.TempDir()
	keys := testpki.WritePublicKey(t, dir)
	data := filepath.Join(dir, "data")
	cases := map[string]struct {
		file, src string
		check     func(g *GitLab) bool
	}{
		"jwks hcl": {"a.hcl", `node_id = "n1"
data_dir = "` + data + `"
gitlab {
  url      = "https://gitlab.example.com"
  jwks_url = "https://gitlab.example.com/oauth/discovery/keys"
  audience = "https://gitlab.example.com:8200"
}`, func(g *GitLab) bool {
			return g.JWKSURL == "https://gitlab.example.com/oauth/discovery/keys" && g.TokenTTL == "5m" && g.TokenMaxTTL == "15m" && g.KeysAddress == ""
		}},
		"pem json": {"a.json", `{"node_id": "n1", "data_dir": "` + data + `",
  "gitlab": {"url": "https://gitlab.example.com", "jwt_validation_pubkeys_file": "` + keys + `",
             "audience": "https://gitlab.example.com:8200", "token_ttl": "2m", "token_max_ttl": "10m"}}`,
			func(g *GitLab) bool {
				return g.PublicKeysFile == keys && g.KeysAddress == DefaultGitLabKeysAddress && g.TokenTTL == "2m" && g.TokenMaxTTL == "10m"
			}},
		"pem json own address": {"a.json", `{"node_id": "n1", "data_dir": "` + data + `",
  "gitlab": {"url": "https://gitlab.example.com", "jwt_validation_pubkeys_file": "` + keys + `",
             "pubkeys_jwks_address": "127.0.0.1:9207", "audience": "https://gitlab.example.com:8200"}}`,
			func(g *GitLab) bool { return g.KeysAddress == "127.0.0.1:9207" }},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := Parse([]byte(tc.src), tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if c.GitLab == nil || !tc.check(c.GitLab) {
				t.Fatalf("gitlab block: %+v", c.GitLab)
			}
			gc, err := c.GitLab.BootstrapConfig()
			if err != nil {
				t.Fatal(err)
			}
			if c.GitLab.PublicKeysFile != "" && gc.JWKSURL != "http://"+c.GitLab.KeysAddress+"/oauth/discovery/keys" {
				t.Fatalf("PEM mode points the mount at %q", gc.JWKSURL)
			}
		})
	}
}

func TestBadGitLabBlocks(t *testing.T) {
	dir := t.TempDir()
	keys := testpki.WritePublicKey(t, dir)
	base := "node_id = \"n1\"\ndata_dir = \"" + filepath.Join(dir, "data") + "\"\n"
	block := func(body string) string {
		return base + "gitlab {\n url = \"https://g.example.com\"\n audience = \"https://gsa.example.com:8200\"\n" + body + "\n}"
	}
	for name, tc := range map[string]struct{ src, key, want string }{
		"both key sources":       {block("jwks_url = \"https://g.example.com/k\"\n jwt_validation_pubkeys_file = \"" + keys + "\""), "gitlab.jwt_validation_pubkeys_file", "not both"},
		"keys address off lo":    {block("jwt_validation_pubkeys_file = \"" + keys + "\"\n pubkeys_jwks_address = \"0.0.0.0:8207\""), "gitlab.pubkeys_jwks_address", "not a loopback IP address"},
		"keys address with jwks": {block("jwks_url = \"https://g.example.com/k\"\n pubkeys_jwks_address = \"127.0.0.1:8207\""), "gitlab.pubkeys_jwks_address", "only used with jwt_validation_pubkeys_file"},
		"missing keys file":      {block("jwt_validation_pubkeys_file = \"/nonexistent.pem\""), "gitlab.jwt_validation_pubkeys_file", "cannot read /nonexistent.pem"},
		"jwks url not a url":     {block("jwks_url = \"gitlab/keys\""), "gitlab.jwks_url", "is not a URL"},
		"missing url":            {base + "gitlab {\n audience = \"https://a.example.com:8200\"\n jwks_url = \"https://g.example.com/k\"\n}", "gitlab.url", "missing"},
		"issuer with slash":      {base + "gitlab {\n url = \"https://g.example.com/\"\n audience = \"https://a.example.com:8200\"\n jwks_url = \"https://g.example.com/k\"\n}", "gitlab.url", "ends in /"},
		"bad ttl":                {block("jwks_url = \"https://g.example.com/k\"\n token_ttl = \"soon\""), "gitlab.token_ttl", "not a positive duration"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src), "c.hcl")
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("want a *ConfigError, got %v", err)
			}
			for _, p := range ce.Problems {
				if p.Key == tc.key && strings.Contains(p.Message, tc.want) {
					return
				}
			}
			t.Fatalf("no problem %s: ...%s...; got:\n%v", tc.key, tc.want, err)
		})
	}
}
