package gitlabsim

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Project is a GitLab project with a secrets manager. Its OpenBao
// namespace is org_<Org>/group_<Group>/project_<ID>.
type Project struct {
	Org, Group, ID int
	Path           string // GitLab full path, e.g. "acme/platform/api"
}

// Namespace is the project's OpenBao namespace path.
func (p Project) Namespace() string {
	return fmt.Sprintf("org_%d/group_%d/project_%d", p.Org, p.Group, p.ID)
}

func (p Project) groupPath() string {
	if i := strings.LastIndex(p.Path, "/"); i > 0 {
		return p.Path[:i]
	}
	return p.Path
}

// Names GitLab uses inside a project's namespace
// (SecretsManagement::SecretsManagers::PipelineHelper, UserHelper).
const (
	SecretsMount   = "secrets/kv"
	DataRoot       = "explicit"
	PipelineMount  = "pipeline_jwt"
	PipelineRole   = "all_pipelines"
	UserMount      = "user_jwt"
	UserRole       = "all_users"
	OwnerRoleID    = 50
	OwnerPolicyFmt = "users/roles/%d"
)

// APIError is an OpenBao error answer.
type APIError struct {
	Code   int
	Errors []string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.Code, strings.Join(e.Errors, "; "))
}

// Rails provisions through the appliance's API with plain HTTP calls, in
// the order GitLab Rails does, with the token of its privileged login.
type Rails struct {
	Addr   string // the appliance's API URL, also the audience of tokens
	HTTP   *http.Client
	Issuer *Issuer
	Token  string
}

// Call sends one API request in namespace ns ("" for root) with token.
func Call(hc *http.Client, addr, token, method, ns, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, addr+"/v1/"+path, rd)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	if ns != "" {
		req.Header.Set("X-Vault-Namespace", ns)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		e := &APIError{Code: resp.StatusCode}
		var parsed struct {
			Errors []string `json:"errors"`
		}
		if json.Unmarshal(raw, &parsed) == nil {
			e.Errors = parsed.Errors
		}
		return e
	}
	if out != nil && len(raw) > 0 {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func (r *Rails) call(method, ns, path string, body, out any) error {
	return Call(r.HTTP, r.Addr, r.Token, method, ns, path, body, out)
}

// Login is Rails' privileged login at auth/gitlab_rails_jwt (role app).
func (r *Rails) Login() error {
	jwt, err := r.Issuer.Sign(r.Issuer.RailsClaims(r.Addr))
	if err != nil {
		return err
	}
	tok, err := Login(r.HTTP, r.Addr, "", "gitlab_rails_jwt", "app", jwt)
	if err != nil {
		return err
	}
	r.Token = tok
	return nil
}

// Login logs in at auth/<mount>/login in namespace ns with a JWT and
// returns the client token.
func Login(hc *http.Client, addr, ns, mount, role, jwt string) (string, error) {
	var out struct {
		Auth *struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	if err := Call(hc, addr, "", "POST", ns, "auth/"+mount+"/login", map[string]string{"role": role, "jwt": jwt}, &out); err != nil {
		return "", err
	}
	if out.Auth == nil || out.Auth.ClientToken == "" {
		return "", fmt.Errorf("login at %s answered without a token", mount)
	}
	return out.Auth.ClientToken, nil
}

// Provision sets up a project's secrets manager as GitLab's
// ProjectSecretsManagers::ProvisionService does: namespaces, the KV v2
// store, the pipeline and user JWT mounts with their roles, the owner
// policy.
func (r *Rails) Provision(p Project) error {
	org := fmt.Sprintf("org_%d", p.Org)
	group := fmt.Sprintf("group_%d", p.Group)
	proj := fmt.Sprintf("project_%d", p.ID)
	ns := p.Namespace()
	steps := []struct {
		ns, path string
		body     any
		existsOK bool
	}{
		{"", "sys/namespaces/" + org, map[string]any{}, true},
		{org, "sys/namespaces/" + group, map[string]any{}, true},
		{org + "/" + group, "sys/namespaces/" + proj, map[string]any{}, true},
		{ns, "sys/mounts/" + SecretsMount, map[string]any{"type": "kv-v2"}, true},
		{ns, "sys/auth/" + PipelineMount, map[string]any{"type": "jwt"}, true},
		{ns, "auth/" + PipelineMount + "/config", map[string]any{"bound_issuer": r.Issuer.URL, "oidc_discovery_url": r.Issuer.URL}, false},
		{ns, "auth/" + PipelineMount + "/role/" + PipelineRole, r.pipelineRole(p), false},
		{ns, "sys/auth/" + UserMount, map[string]any{"type": "jwt"}, true},
		{ns, "auth/" + UserMount + "/config", map[string]any{"bound_issuer": r.Issuer.URL, "oidc_discovery_url": r.Issuer.URL}, false},
		{ns, "auth/" + UserMount + "/cel/role/" + UserRole, r.userRole(p), false},
		{ns, "sys/policies/acl/" + fmt.Sprintf(OwnerPolicyFmt, OwnerRoleID), map[string]any{"policy": ownerPolicy}, false},
	}
	for _, s := range steps {
		err := r.call("POST", s.ns, s.path, s.body, nil)
		if err != nil && !(s.existsOK && strings.Contains(err.Error(), "already")) {
			return fmt.Errorf("provisioning %s: %s: %w", ns, s.path, err)
		}
	}
	// A new KV v2 store upgrades itself before it takes writes.
	deadline := time.Now().Add(time.Minute)
	for r.call("GET", ns, SecretsMount+"/config", nil, nil) != nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("the KV v2 store of %s did not become ready", ns)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// pipelineRole is GitLab's all_pipelines role: the project's job tokens,
// policies picked by templating the token's claims. Two things are tighter
// than GitLab's own role, and say so: the subject must be this project's
// (bound with a glob), and branch policies need a protected ref.
func (r *Rails) pipelineRole(p Project) map[string]any {
	env := `{{ if and (ne nil (index . "environment")) (ne "" .environment) }}pipelines/env/{{ .environment | hex }}{{ end }}`
	branch := `{{ if and (eq "branch" .ref_type) (ne "" .ref) (eq "true" .ref_protected) }}pipelines/branch/{{ .ref | hex }}{{ end }}`
	combined := `{{ if and (eq "branch" .ref_type) (eq "true" .ref_protected) (ne nil (index . "environment")) (ne "" .environment) }}` +
		`pipelines/combined/env/{{ .environment | hex }}/branch/{{ .ref | hex }}{{ end }}`
	return map[string]any{
		"role_type":                      "jwt",
		"token_policies_template_claims": true,
		"token_policies":                 []string{"pipelines/global", env, branch, combined},
		"bound_claims_type":              "glob",
		"bound_claims": map[string]any{
			"project_id":            fmt.Sprint(p.ID),
			"secrets_manager_scope": "pipeline",
			"sub":                   "project_path:" + p.Path + ":*",
		},
		"claim_mappings": map[string]string{
			"correlation_id": "correlation_id", "user_id": "user_id", "project_id": "project_id",
			"namespace_id": "namespace_id", "job_id": "job_id", "pipeline_id": "pipeline_id",
			"ref": "ref", "environment": "environment",
		},
		"bound_audiences": []string{r.Addr},
		"user_claim":      "project_id",
		"token_type":      "service",
		"token_ttl":       300,
		"token_max_ttl":   900,
	}
}

// userRole is GitLab's all_users CEL role for people using the UI/API.
func (r *Rails) userRole(p Project) map[string]any {
	return map[string]any{
		"bound_audiences": []string{r.Addr},
		"cel_program": map[string]any{
			"variables": []map[string]string{
				{"name": "uid", "expression": `('user_id' in claims) ? string(claims['user_id']) : ""`},
				{"name": "rid", "expression": `('role_id' in claims) ? string(claims['role_id']) : ""`},
				{"name": "pid", "expression": `('project_id' in claims) ? string(claims['project_id']) : ""`},
				{"name": "expected_pid", "expression": fmt.Sprintf("%q", fmt.Sprint(p.ID))},
				{"name": "sub", "expression": `('sub' in claims) ? claims['sub'] : ""`},
				{"name": "scope", "expression": `('secrets_manager_scope' in claims) ? string(claims['secrets_manager_scope']) : ""`},
			},
			"expression": `sub == "" ? "missing subject" :
!sub.startsWith("user:") ? "invalid subject for user authentication" :
scope != "user" ? "invalid secrets_manager_scope" :
pid != expected_pid ? "token project_id does not match role base" :
uid == "" ? "missing user_id" :
pb.Auth{
  display_name: "gitlab-user:" + uid,
  alias: logical.Alias { name: "gitlab-user:" + uid },
  policies: ["users/direct/user_" + uid] + (rid != "" ? ["users/roles/" + rid] : []),
  metadata: {"project_id": pid, "user_id": uid}
}`,
		},
	}
}

const ownerPolicy = `
path "secrets/kv/data/explicit/*"     { capabilities = ["create", "update", "delete", "list"] }
path "secrets/kv/metadata/explicit/*" { capabilities = ["create", "update", "delete", "read", "list"] }
`

// CreateSecret stores a secret for pipelines scoped to an environment and
// a branch ("*" for any) and grants it in the matching pipeline policy, as
// GitLab's ProjectSecrets::CreateService does.
func (r *Rails) CreateSecret(p Project, name, value, env, branch string) error {
	ns := p.Namespace()
	path := SecretsMount + "/data/" + DataRoot + "/" + name
	if err := r.call("POST", ns, path, map[string]any{"data": map[string]string{"value": value}, "options": map[string]int{"cas": 0}}, nil); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	meta := map[string]any{"custom_metadata": map[string]string{"environment": env, "branch": branch}}
	if err := r.call("POST", ns, SecretsMount+"/metadata/"+DataRoot+"/"+name, meta, nil); err != nil {
		return fmt.Errorf("writing the metadata of %s: %w", name, err)
	}
	policy := PolicyName(env, branch)
	var cur struct {
		Data struct {
			Policy string `json:"policy"`
		} `json:"data"`
	}
	err := r.call("GET", ns, "sys/policies/acl/"+policy, nil, &cur)
	if ae, ok := err.(*APIError); err != nil && !(ok && ae.Code == 404) {
		return fmt.Errorf("reading policy %s: %w", policy, err)
	}
	body := cur.Data.Policy + fmt.Sprintf("\npath %q { capabilities = [\"read\"] }\n", path)
	return r.call("POST", ns, "sys/policies/acl/"+policy, map[string]string{"policy": body}, nil)
}

// PolicyName is GitLab's pipeline policy for a scope ("*": any).
func PolicyName(env, branch string) string {
	h := func(s string) string { return hex.EncodeToString([]byte(s)) }
	switch {
	case env != "*" && branch != "*":
		return "pipelines/combined/env/" + h(env) + "/branch/" + h(branch)
	case env != "*":
		return "pipelines/env/" + h(env)
	case branch != "*":
		return "pipelines/branch/" + h(branch)
	}
	return "pipelines/global"
}

// Deprovision removes a deleted project's namespace, and with it every
// mount, role, policy and secret of the project.
func (r *Rails) Deprovision(p Project) error {
	parent := fmt.Sprintf("org_%d/group_%d", p.Org, p.Group)
	if err := r.call("DELETE", parent, fmt.Sprintf("sys/namespaces/project_%d", p.ID), nil, nil); err != nil {
		return fmt.Errorf("deleting namespace %s: %w", p.Namespace(), err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		err := r.call("GET", parent, fmt.Sprintf("sys/namespaces/project_%d", p.ID), nil, nil)
		if ae, ok := err.(*APIError); ok && ae.Code == 404 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s still exists a minute after its deletion (%v)", p.Namespace(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
