// Package gitlabsim plays GitLab's part for the tests: an issuer that
// signs ID tokens and serves its keys on loopback as GitLab does
// (/oauth/discovery/keys, /.well-known/openid-configuration), and Rails'
// provisioning of a project's secrets manager through the plain HTTP API.
//
// Requests and CEL programs are rebuilt from GitLab's source, with one
// change (cel.go): GitLab's group pipeline program calls hex(environment),
// which OpenBao 2.4.0's CEL cannot evaluate for a string ("no such
// overload": the role is accepted, every login of a job with an
// environment fails), so groupPipelineProgram computes
// "%x".format([environment]), as GitLab's project program does. The group
// tests thus run that program, not GitLab's group program as written.
package gitlabsim

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/gitlab"
)

// Issuer signs tokens with RS256 and publishes its public keys.
type Issuer struct {
	URL string

	mu      sync.Mutex
	keys    []jose.JSONWebKey // published
	signing jose.JSONWebKey
	srv     *http.Server
}

// NewIssuer starts an issuer on a loopback port with one signing key.
func NewIssuer() (*Issuer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	is := &Issuer{URL: "http://" + l.Addr().String()}
	if err := is.Rotate(); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauth/discovery/keys", func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		set := jose.JSONWebKeySet{Keys: append([]jose.JSONWebKey(nil), is.keys...)}
		is.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(set)
	})
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                is.URL,
			"jwks_uri":                              is.URL + "/oauth/discovery/keys",
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
		})
	})
	is.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go is.srv.Serve(l)
	return is, nil
}

// Close stops serving keys.
func (is *Issuer) Close() { is.srv.Close() }

// Rotate makes a new signing key and publishes it beside the old ones, as
// GitLab does when its CI signing key is rotated.
func (is *Issuer) Rotate() error {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	// GitLab's kid: public_key.to_jwk[:kid], the RFC 7638 thumbprint.
	set, err := gitlab.KeySet([]crypto.PublicKey{&k.PublicKey})
	if err != nil {
		return err
	}
	kid := set.Keys[0].KeyID
	is.signing = jose.JSONWebKey{Key: k, KeyID: kid, Algorithm: "RS256", Use: "sig"}
	is.keys = append(is.keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"})
	return nil
}

// Retire stops publishing every key but the current one, as when an old
// GitLab signing key is withdrawn.
func (is *Issuer) Retire() {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys = is.keys[len(is.keys)-1:]
}

// PublicKeysPEM is every published key in PEM, as GitLab's signing key
// would be handed to the appliance in jwt_validation_pubkeys_file.
func (is *Issuer) PublicKeysPEM() (string, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	var out []byte
	for _, k := range is.keys {
		der, err := x509.MarshalPKIXPublicKey(k.Key)
		if err != nil {
			return "", err
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	}
	return string(out), nil
}

// Sign signs claims with the current key.
func (is *Issuer) Sign(claims map[string]any) (string, error) {
	is.mu.Lock()
	key := is.signing
	is.mu.Unlock()
	return sign(key, claims)
}

// SignWithUnknownKey signs with a key the issuer never published.
func (is *Issuer) SignWithUnknownKey(claims map[string]any) (string, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	return sign(jose.JSONWebKey{Key: k, KeyID: "key-unpublished", Algorithm: "RS256"}, claims)
}

func sign(key jose.JSONWebKey, claims map[string]any) (string, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", key.KeyID))
	if err != nil {
		return "", err
	}
	return jwt.Signed(s).Claims(claims).Serialize()
}

// Times fills iat, nbf and exp for a token valid for ttl from now; a
// negative ttl makes an expired token.
func Times(claims map[string]any, ttl time.Duration) map[string]any {
	now := time.Now()
	if ttl < 0 {
		now = now.Add(2 * ttl)
	}
	claims["iat"] = now.Unix()
	claims["nbf"] = now.Unix()
	claims["exp"] = now.Add(absDuration(ttl)).Unix()
	return claims
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// RailsClaims are the claims of GitLab Rails' privileged token
// (SecretsManagement JWT with scope "privileged").
func (is *Issuer) RailsClaims(aud string) map[string]any {
	return Times(map[string]any{
		"iss": is.URL, "aud": aud, "sub": "gitlab_secrets_manager",
		"secrets_manager_scope": "privileged", "user_id": "1", "correlation_id": "c0ffee",
		"jti": fmt.Sprintf("rails-%d", time.Now().UnixNano()),
	}, 5*time.Minute)
}

// Job describes a CI job whose ID token the issuer signs.
type Job struct {
	Project      Project
	JobID        int
	PipelineID   int
	Ref          string
	RefType      string // branch or tag
	RefProtected bool
	Environment  string // "" for none
	UserID       int
}

// JobClaims are GitLab's ID token claims for the job, for audience aud:
// Gitlab::Ci::JwtV2's plus what SecretsManagement::PipelineJwt adds
// (secrets_manager_scope "pipeline", project_group_ids).
func (is *Issuer) JobClaims(j Job, aud string) map[string]any {
	c := map[string]any{
		"iss": is.URL, "aud": aud,
		"sub":                   fmt.Sprintf("project_path:%s:ref_type:%s:ref:%s", j.Project.Path, j.RefType, j.Ref),
		"project_id":            fmt.Sprint(j.Project.ID),
		"project_path":          j.Project.Path,
		"namespace_id":          fmt.Sprint(j.Project.Group),
		"namespace_path":        j.Project.groupPath(),
		"job_id":                fmt.Sprint(j.JobID),
		"pipeline_id":           fmt.Sprint(j.PipelineID),
		"user_id":               fmt.Sprint(j.UserID),
		"user_login":            "developer",
		"ref":                   j.Ref,
		"ref_type":              j.RefType,
		"ref_protected":         fmt.Sprint(j.RefProtected),
		"secrets_manager_scope": "pipeline",
		"project_group_ids":     []string{fmt.Sprint(j.Project.Group)},
		"jti":                   fmt.Sprintf("job-%d-%d", j.JobID, time.Now().UnixNano()),
	}
	if j.Environment != "" {
		c["environment"] = j.Environment
		c["environment_protected"] = "true"
	}
	return Times(c, 5*time.Minute)
}
