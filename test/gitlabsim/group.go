package gitlabsim

import "fmt"

// Group is a GitLab group with a secrets manager; a top-level group's
// namespace is org_<Org>/group_<ID>/group_<ID>
// (GroupSecretsManager#full_group_namespace_path).
type Group struct {
	Org, ID int
}

// Namespace is the group's OpenBao namespace path.
func (g Group) Namespace() string { return fmt.Sprintf("org_%d/group_%d/group_%d", g.Org, g.ID, g.ID) }

// AuthPath is the group's inline_auth.path for the Runner.
func (g Group) AuthPath() string { return g.Namespace() + "/auth/" + PipelineMount + "/cel/login" }

// ProvisionGroup sets up a top-level group's secrets manager as
// GroupSecretsManagers::ProvisionService does: namespaces, KV v2, the
// pipeline_jwt CEL role for its projects' jobs, user_jwt, the Owner
// policy (groups grant Owners only).
func (r *Rails) ProvisionGroup(g Group) error {
	org, root, ns := fmt.Sprintf("org_%d", g.Org), fmt.Sprintf("org_%d/group_%d", g.Org, g.ID), g.Namespace()
	steps := []step{
		{"", "sys/namespaces/" + org, map[string]any{"custom_metadata": nil}, true},
		{org, fmt.Sprintf("sys/namespaces/group_%d", g.ID), map[string]any{"custom_metadata": nil}, true},
		{root, fmt.Sprintf("sys/namespaces/group_%d", g.ID), map[string]any{"custom_metadata": nil}, true},
		{ns, "sys/mounts/" + SecretsMount, map[string]any{"type": "kv-v2"}, true},
	}
	steps = append(steps, r.authSteps(ns, PipelineMount, PipelineRole, groupPipelineProgram(g.ID, r.Addr))...)
	steps = append(steps, r.authSteps(ns, UserMount, UserRole, userProgram("group_id", g.ID, r.Addr))...)
	steps = append(steps, r.defaultRolePolicies(ns, 50)...)
	if err := r.run(steps); err != nil {
		return fmt.Errorf("provisioning %s: %w", ns, err)
	}
	return r.waitKV(ns)
}

// CreateGroupSecret stores a group secret for jobs of an environment ("*":
// any) on protected refs only, or on any ref, in the policy
// GroupSecretsManagers::PipelineHelper#ci_policy_name_for_environment names.
func (r *Rails) CreateGroupSecret(g Group, name, value, env string, protected bool) error {
	return r.createSecret(g.Namespace(), name, value,
		map[string]string{"environment": env, "protected": fmt.Sprint(protected)}, GroupPolicyName(env, protected))
}

// GroupPolicyName is pipelines/combined/<protected|unprotected>/<global|env/<hex>>.
func GroupPolicyName(env string, protected bool) string {
	level := "unprotected"
	if protected {
		level = "protected"
	}
	if env == "*" {
		return "pipelines/combined/" + level + "/global"
	}
	return "pipelines/combined/" + level + "/env/" + hexOf(env)
}
