package gitlabsim

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Names GitLab uses inside a secrets manager's namespace
// (ee/app/models/secrets_management/secrets_managers/pipeline_helper.rb,
// user_helper.rb).
const (
	SecretsMount  = "secrets/kv"
	DataRoot      = "explicit"
	PipelineMount = "pipeline_jwt"
	PipelineRole  = "all_pipelines"
	UserMount     = "user_jwt"
	UserRole      = "all_users"
	// RailsMount and RailsRole: GitLab Rails' privileged login
	// (secrets_manager_client.rb GITLAB_JWT_AUTH_PATH, DEFAULT_JWT_ROLE).
	RailsMount = "gitlab_rails_jwt"
	RailsRole  = "app"
)

// Project is a GitLab project with a secrets manager. Its OpenBao
// namespace is org_<Org>/group_<Group>/project_<ID> (Group: the root
// group's ID).
type Project struct {
	Org, Group, ID int
	Path           string // GitLab full path, e.g. "acme/platform/api"
}

// Namespace is the project's OpenBao namespace path.
func (p Project) Namespace() string {
	return fmt.Sprintf("org_%d/group_%d/project_%d", p.Org, p.Group, p.ID)
}

// AuthPath is what GitLab hands the Runner as inline_auth.path
// (ProjectSecretsManagers::PipelineHelper#ci_auth_path).
func (p Project) AuthPath() string { return p.Namespace() + "/auth/" + PipelineMount + "/cel/login" }

func (p Project) groupPath() string {
	if i := strings.LastIndex(p.Path, "/"); i > 0 {
		return p.Path[:i]
	}
	return p.Path
}

// APIError is an OpenBao error answer.
type APIError struct {
	Code   int
	Errors []string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.Code, strings.Join(e.Errors, "; "))
}

// Request is one API call: namespace ns ("" for root) goes in the
// X-Vault-Namespace header; Rails puts it in the path instead.
type Request struct {
	Method, NS, Path string
	Token            string
	Inline           *InlineAuth
	Body, Out        any
}

// InlineAuth is OpenBao's one-request login (X-Vault-Inline-Auth-*), as
// GitLab Rails sends it on every call.
type InlineAuth struct{ Path, Role, JWT string }

// Do sends one API request to addr.
func Do(hc *http.Client, addr string, r Request) error {
	var rd io.Reader
	if r.Body != nil {
		b, err := json.Marshal(r.Body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	method, query := r.Method, ""
	if method == "LIST" {
		method, query = "GET", "?list=true"
	}
	req, err := http.NewRequest(method, addr+"/v1/"+r.Path+query, rd)
	if err != nil {
		return err
	}
	if r.Token != "" {
		req.Header.Set("X-Vault-Token", r.Token)
	}
	if r.NS != "" {
		req.Header.Set("X-Vault-Namespace", r.NS)
	}
	if a := r.Inline; a != nil {
		param := func(k, v string) string {
			b, _ := json.Marshal(map[string]string{"key": k, "value": v})
			return base64.RawURLEncoding.EncodeToString(b)
		}
		req.Header.Set("X-Vault-Inline-Auth-Path", a.Path)
		req.Header.Set("X-Vault-Inline-Auth-Parameter-token", param("jwt", a.JWT))
		if a.Role != "" {
			req.Header.Set("X-Vault-Inline-Auth-Parameter-role", param("role", a.Role))
		}
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
	if r.Out != nil && len(raw) > 0 {
		return json.Unmarshal(raw, r.Out)
	}
	return nil
}

// Call sends one API request in namespace ns ("" for root) with token.
func Call(hc *http.Client, addr, token, method, ns, path string, body, out any) error {
	return Do(hc, addr, Request{Method: method, NS: ns, Path: path, Token: token, Body: body, Out: out})
}

// Login logs in at auth/<mount>/login in namespace ns with a JWT and
// returns the client token.
func Login(hc *http.Client, addr, ns, mount, role, jwt string) (string, error) {
	return LoginAt(hc, addr, ns, "auth/"+mount+"/login", role, jwt)
}

// JobLogin is a CI job's login at its project's pipeline_jwt CEL role.
func JobLogin(hc *http.Client, addr string, p Project, jwt string) (string, error) {
	return LoginAt(hc, addr, p.Namespace(), "auth/"+PipelineMount+"/cel/login", PipelineRole, jwt)
}

// LoginAt logs in at path in namespace ns and returns the client token.
func LoginAt(hc *http.Client, addr, ns, path, role, jwt string) (string, error) {
	var out struct {
		Auth *struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	if err := Call(hc, addr, "", "POST", ns, path, map[string]string{"role": role, "jwt": jwt}, &out); err != nil {
		return "", err
	}
	if out.Auth == nil || out.Auth.ClientToken == "" {
		return "", fmt.Errorf("login at %s answered without a token", path)
	}
	return out.Auth.ClientToken, nil
}

// Rails plays GitLab Rails' SecretsManagerClient: plain HTTP, every call
// authenticated inline with a fresh privileged JWT at
// auth/gitlab_rails_jwt/login (role app), the namespace as a path prefix.
// With Token set (the stock-OpenBao bench, which has no Rails login), it
// sends that token instead.
type Rails struct {
	Addr   string // the appliance's API URL, also the audience of tokens
	HTTP   *http.Client
	Issuer *Issuer
	Token  string
}

func (r *Rails) call(method, ns, path string, body, out any) error {
	if ns != "" {
		path = ns + "/" + path
	}
	req := Request{Method: method, Path: path, Token: r.Token, Body: body, Out: out}
	if r.Token == "" {
		jwt, err := r.Issuer.Sign(r.Issuer.RailsClaims(r.Addr))
		if err != nil {
			return err
		}
		req.Inline = &InlineAuth{Path: "auth/" + RailsMount + "/login", Role: RailsRole, JWT: jwt}
	}
	return Do(r.HTTP, r.Addr, req)
}

// Login is an explicit privileged login (GitLab does one for
// sys/capabilities-self) and returns the token.
func (r *Rails) Login() (string, error) {
	jwt, err := r.Issuer.Sign(r.Issuer.RailsClaims(r.Addr))
	if err != nil {
		return "", err
	}
	return Login(r.HTTP, r.Addr, "", RailsMount, RailsRole, jwt)
}

// step is one provisioning call; existsOK tolerates "already in use".
type step struct {
	ns, path string
	body     any
	existsOK bool
}

func (r *Rails) run(steps []step) error {
	for _, s := range steps {
		err := r.call("POST", s.ns, s.path, s.body, nil)
		if err != nil && !(s.existsOK && strings.Contains(err.Error(), "already in use")) {
			return fmt.Errorf("%s: %s: %w", s.ns, s.path, err)
		}
	}
	return nil
}

// authSteps enable a JWT mount, point it at GitLab as OIDC issuer and
// write its CEL role (ProvisionService#enable_auth, update_jwt_cel_role).
func (r *Rails) authSteps(ns, mount, role string, program celProgram) []step {
	return []step{
		{ns, "sys/auth/" + mount, map[string]any{"type": "jwt"}, true},
		{ns, "auth/" + mount + "/config", map[string]any{"bound_issuer": r.Issuer.URL, "oidc_discovery_url": r.Issuer.URL}, false},
		{ns, "auth/" + mount + "/cel/role/" + role, map[string]any{
			"name": role, "expiration_leeway": 150, "not_before_leeway": 150, "clock_skew_leeway": 60,
			"cel_program": program, "bound_audiences": []string{r.Addr},
		}, false},
	}
}

// Provision sets up a project's secrets manager in the order of GitLab's
// ProjectSecretsManagers::ProvisionService: the three namespace levels,
// the KV v2 store, pipeline_jwt and user_jwt with their CEL roles, the
// default role policies. (GitLab also enables api_jwt, for tokens minted
// through its REST API; not played here.)
func (r *Rails) Provision(p Project) error {
	org, root, ns := fmt.Sprintf("org_%d", p.Org), fmt.Sprintf("org_%d/group_%d", p.Org, p.Group), p.Namespace()
	steps := []step{
		{"", "sys/namespaces/" + org, map[string]any{"custom_metadata": nil}, true},
		{org, fmt.Sprintf("sys/namespaces/group_%d", p.Group), map[string]any{"custom_metadata": nil}, true},
		{root, fmt.Sprintf("sys/namespaces/project_%d", p.ID), map[string]any{"custom_metadata": nil}, true},
		{ns, "sys/mounts/" + SecretsMount, map[string]any{"type": "kv-v2"}, true},
	}
	steps = append(steps, r.authSteps(ns, PipelineMount, PipelineRole, projectPipelineProgram(p.ID, r.Addr))...)
	steps = append(steps, r.authSteps(ns, UserMount, UserRole, userProgram("project_id", p.ID, r.Addr))...)
	steps = append(steps, r.defaultRolePolicies(ns, 50, 40, 30)...)
	if err := r.run(steps); err != nil {
		return fmt.Errorf("provisioning %s: %w", ns, err)
	}
	return r.waitKV(ns)
}

// defaultRolePolicies: what Owners, Maintainers and Developers may do on
// the secrets' metadata in the UI (users/roles/<access level>). The
// capabilities follow GitLab's description (DefaultRolePoliciesHelper);
// the exact path list is this simulation's.
func (r *Rails) defaultRolePolicies(ns string, levels ...int) []step {
	var out []step
	for _, level := range levels {
		caps := map[int][]string{
			50: {"create", "update", "delete", "read", "list"}, // Owner
			40: {"create", "update", "read", "list"},           // Maintainer
			30: {"create", "read", "list"},                     // Developer
		}[level]
		pol := aclPolicy{Path: map[string]aclPath{
			SecretsMount + "/data/" + DataRoot + "/*":              {Capabilities: without(caps, "read", "list")},
			SecretsMount + "/metadata/" + DataRoot + "/*":          {Capabilities: caps},
			SecretsMount + "/detailed-metadata/" + DataRoot + "/*": {Capabilities: caps},
		}}
		out = append(out, step{ns, fmt.Sprintf("sys/policies/acl/users/roles/%d", level), map[string]string{"policy": pol.String()}, false})
	}
	return out
}

func without(caps []string, drop ...string) []string {
	var out []string
	for _, c := range caps {
		if !strings.Contains(strings.Join(drop, ","), c) {
			out = append(out, c)
		}
	}
	return out
}

// waitKV waits for a new KV v2 store to finish its upgrade.
func (r *Rails) waitKV(ns string) error {
	deadline := time.Now().Add(time.Minute)
	for r.call("GET", ns, SecretsMount+"/config", nil, nil) != nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("the KV v2 store of %s did not become ready", ns)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// aclPolicy is GitLab's AclPolicy#to_openbao_attributes: JSON, not HCL.
type aclPolicy struct {
	Path map[string]aclPath `json:"path"`
}

type aclPath struct {
	Capabilities []string `json:"capabilities"`
}

func (p aclPolicy) String() string { b, _ := json.Marshal(p); return string(b) }

// CreateSecret stores a project secret for pipelines of an environment and
// a branch ("*": any) and grants it in the matching pipeline policy, as
// ProjectSecret#create does: the value (cas 0: new only) and its custom
// metadata first, then read on its data and metadata paths in the policy,
// so a failure in between fails closed.
func (r *Rails) CreateSecret(p Project, name, value, env, branch string) error {
	return r.createSecret(p.Namespace(), name, value, map[string]string{"environment": env, "branch": branch}, PolicyName(env, branch))
}

func (r *Rails) createSecret(ns, name, value string, meta map[string]string, policy string) error {
	data := SecretsMount + "/data/" + DataRoot + "/" + name
	metadata := SecretsMount + "/metadata/" + DataRoot + "/" + name
	if err := r.call("POST", ns, data, map[string]any{"data": map[string]string{"value": value}, "options": map[string]int{"cas": 0}}, nil); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := r.call("POST", ns, metadata, map[string]any{"custom_metadata": meta}, nil); err != nil {
		return fmt.Errorf("writing the metadata of %s: %w", name, err)
	}
	var cur struct {
		Data struct {
			Policy string `json:"policy"`
		} `json:"data"`
	}
	pol := aclPolicy{Path: map[string]aclPath{}}
	err := r.call("GET", ns, "sys/policies/acl/"+policy, nil, &cur)
	switch ae, ok := err.(*APIError); {
	case err == nil:
		if err := json.Unmarshal([]byte(cur.Data.Policy), &pol); err != nil {
			return fmt.Errorf("policy %s is not GitLab's JSON: %w", policy, err)
		}
	case !ok || ae.Code != 404:
		return fmt.Errorf("reading policy %s: %w", policy, err)
	}
	pol.Path[data] = aclPath{Capabilities: []string{"read"}}
	pol.Path[metadata] = aclPath{Capabilities: []string{"read"}}
	return r.call("POST", ns, "sys/policies/acl/"+policy, map[string]string{"policy": pol.String()}, nil)
}

func hexOf(s string) string { return hex.EncodeToString([]byte(s)) }

// PolicyName is GitLab's pipeline policy of a project secret's scope
// ("*": any): ProjectSecretsManagers::PipelineHelper#ci_policy_name.
func PolicyName(env, branch string) string {
	switch {
	case env != "*" && branch != "*":
		return "pipelines/combined/env/" + hexOf(env) + "/branch/" + hexOf(branch)
	case env != "*":
		return "pipelines/env/" + hexOf(env)
	case branch != "*":
		return "pipelines/branch/" + hexOf(branch)
	}
	return "pipelines/global"
}

// Deprovision removes a deleted project's namespace, and with it every
// mount, role, policy and secret of the project: GitLab disables the
// namespace and calls again while OpenBao answers "in-progress".
func (r *Rails) Deprovision(p Project) error {
	return r.disableNamespace(fmt.Sprintf("org_%d/group_%d", p.Org, p.Group), fmt.Sprintf("project_%d", p.ID))
}

func (r *Rails) disableNamespace(parent, child string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		var out struct {
			Data struct {
				Status string `json:"status"`
			} `json:"data"`
		}
		err := r.call("DELETE", parent, "sys/namespaces/"+child, nil, &out)
		if err != nil {
			return fmt.Errorf("deleting namespace %s/%s: %w", parent, child, err)
		}
		if out.Data.Status != "in-progress" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s/%s still being deleted after a minute", parent, child)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		err := r.call("GET", parent, "sys/namespaces/"+child, nil, nil)
		if ae, ok := err.(*APIError); ok && ae.Code == 404 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s/%s still exists after its deletion (%v)", parent, child, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PolicyList is GitLab's SecretsManagerClient#list_policies answer: the
// policies' names and, per name, OpenBao's details (GitLab reads policy).
type PolicyList struct {
	Keys    []string                  `json:"keys"`
	KeyInfo map[string]map[string]any `json:"key_info"`
}

// ListPolicies is list_policies(type: typ) in namespace ns, as GitLab
// sends it: LIST <ns>/sys/policies/detailed/acl/<typ> (GET ?list=true),
// the namespace in the path, inline auth.
func (r *Rails) ListPolicies(ns, typ string) (PolicyList, error) {
	var out struct {
		Data PolicyList `json:"data"`
	}
	err := r.call("LIST", ns, "sys/policies/detailed/acl/"+typ, nil, &out)
	return out.Data, err
}
