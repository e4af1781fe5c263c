package gitlabsim

import "fmt"

// The CEL programs GitLab Rails writes to the JWT auth mounts of a secrets
// manager's namespace (auth/<mount>/cel/role/<role>), rebuilt here from
// GitLab's source with one change (below). Sources, in
// gitlab-org/gitlab ee/app/models/secrets_management/:
//   - project_secrets_managers/pipeline_helper.rb  pipeline_auth_cel_program
//   - group_secrets_managers/pipeline_helper.rb    pipeline_auth_cel_program
//     (with the unprotected_* policies its spec describes)
//   - group_secrets_managers/user_helper.rb and the project one:
//     user_auth_cel_program
//
// The change: GitLab's group program calls hex(environment), which
// OpenBao 2.4.0's CEL cannot evaluate for a string. OpenBao accepts the
// role, but every login of a job with an environment claim then fails with
// "no such overload", so GitLab's group program as written does not work
// against 2.4.0. groupPipelineProgram computes "%x".format([environment])
// instead (what GitLab's project program uses), which gives the same hex
// string.

type celVar struct {
	Name       string `json:"name"`
	Expression string `json:"expression"`
}

type celProgram struct {
	Variables  []celVar `json:"variables"`
	Expression string   `json:"expression"`
}

// claimAs is variable v holding string claim c, "" when it is absent.
func claimAs(v, c string) celVar {
	return celVar{v, fmt.Sprintf(`('%s' in claims) ? string(claims['%s']) : ""`, c, c)}
}

func claim(name string) celVar { return claimAs(name, name) }

func literal(name, value string) celVar { return celVar{name, fmt.Sprintf("%q", value)} }

// projectPipelineProgram: a project's jobs. Policies pipelines/global,
// pipelines/env/<hex>, pipelines/branch/<hex>, pipelines/combined/env/<hex>/branch/<hex>.
func projectPipelineProgram(projectID int, aud string) celProgram {
	return celProgram{
		Variables: []celVar{
			literal("expected_pid", fmt.Sprint(projectID)),
			claimAs("pid", "project_id"),
			claimAs("uid", "user_id"),
			claim("aud"),
			literal("expected_aud", aud),
			{"sub", `('sub' in claims) ? claims['sub'] : ""`},
			claimAs("scope", "secrets_manager_scope"),
			claim("correlation_id"), claim("namespace_id"), claim("ref_type"), claim("ref"), claim("environment"),
			{"env_hex", `environment != "" ? "%x".format([environment]) : ""`},
			{"ref_hex", `ref != "" ? "%x".format([ref]) : ""`},
			{"global_policy", `"pipelines/global"`},
			{"env_policy", `environment != "" ? "pipelines/env/" + env_hex : ""`},
			{"branch_policy", `ref_type == "branch" && ref != "" ? "pipelines/branch/" + ref_hex : ""`},
			{"combined_policy", `ref_type == "branch" && ref != "" && environment != "" ? "pipelines/combined/env/" + env_hex + "/branch/" + ref_hex : ""`},
			claim("pipeline_id"), claim("job_id"),
		},
		Expression: `sub == "" ? "missing subject" :
!sub.startsWith("project_path:") ? "invalid subject for pipeline authentication" :
scope == "" ? "missing secrets_manager_scope" :
scope != "pipeline" ? "invalid secrets_manager_scope" :
pid == "" ? "missing project_id" :
pid != expected_pid ? "token project_id does not match project" :
uid == "" ? "missing user_id" :
aud == "" ? "missing audience" :
aud != expected_aud ? "audience validation failed" :
pb.Auth{
  display_name: "pipeline:" + pid,
  alias: logical.Alias { name: "pipeline:" + pid },
  policies: [global_policy] + (env_policy != "" ? [env_policy] : []) + (branch_policy != "" ? [branch_policy] : []) + (combined_policy != "" ? [combined_policy] : []),
  metadata: {
    "correlation_id": correlation_id, "user_id": uid, "project_id": pid,
    "namespace_id": namespace_id, "pipeline_id": pipeline_id, "job_id": job_id
  }
}`,
	}
}

// groupPipelineProgram: jobs of the group's projects (project_group_ids
// names the group). Policies by ref protection, not branch:
// pipelines/combined/<protected|unprotected>/<global|env/<hex>>; a job on a
// protected ref gets the unprotected ones too.
func groupPipelineProgram(groupID int, aud string) celProgram {
	return celProgram{
		Variables: []celVar{
			literal("expected_gid", fmt.Sprint(groupID)),
			{"project_gids", `('project_group_ids' in claims) ? claims['project_group_ids'] : []`},
			claimAs("uid", "user_id"),
			claimAs("pid", "project_id"),
			{"aud", `('aud' in claims) ? claims['aud'] : ""`},
			literal("expected_aud", aud),
			{"sub", `('sub' in claims) ? claims['sub'] : ""`},
			claimAs("scope", "secrets_manager_scope"),
			claim("correlation_id"),
			{"ref_protected", `('ref_protected' in claims) ? string(claims['ref_protected']) : "false"`},
			claim("environment"),
			{"protection_level", `ref_protected == "true" ? "protected" : "unprotected"`},
			{"env_hex", `environment != "" ? "%x".format([environment]) : ""`},
			{"global_policy", `"pipelines/combined/" + protection_level + "/global"`},
			{"env_policy", `environment != "" ? "pipelines/combined/" + protection_level + "/env/" + env_hex : ""`},
			{"unprotected_global_policy", `protection_level == "protected" ? "pipelines/combined/unprotected/global" : ""`},
			{"unprotected_env_policy", `protection_level == "protected" && environment != "" ? "pipelines/combined/unprotected/env/" + env_hex : ""`},
		},
		Expression: `sub == "" ? "missing subject" :
!sub.startsWith("project_path:") ? "invalid subject for pipeline authentication" :
scope == "" ? "missing secrets_manager_scope" :
scope != "pipeline" ? "invalid secrets_manager_scope" :
pid == "" ? "missing project_id" :
uid == "" ? "missing user_id" :
aud == "" ? "missing audience" :
aud != expected_aud ? "audience validation failed" :
project_gids.size() == 0 ? "missing project_group_ids claim" :
!project_gids.exists(g, string(g) == expected_gid) ? "project does not belong to group" :
pb.Auth{
  display_name: "pipeline:" + pid,
  alias: logical.Alias { name: "pipeline:" + pid },
  policies: [global_policy] + (env_policy != "" ? [env_policy] : []) +
    (unprotected_global_policy != "" ? [unprotected_global_policy] : []) +
    (unprotected_env_policy != "" ? [unprotected_env_policy] : []),
  metadata: {"correlation_id": correlation_id, "user_id": uid, "project_id": pid, "group_id": expected_gid}
}`,
	}
}

// userProgram: people working on secrets in the UI (ProjectUserJwt,
// GroupUserJwt). idClaim is project_id or group_id, id the expected value.
func userProgram(idClaim string, id int, aud string) celProgram {
	return celProgram{
		Variables: []celVar{
			literal("base", "users"),
			claimAs("uid", "user_id"),
			{"mrid", `('member_role_id' in claims && claims['member_role_id'] != null) ? string(claims['member_role_id']) : ""`},
			claimAs("rid", "role_id"),
			literal("expected_id", fmt.Sprint(id)),
			claimAs("id", idClaim),
			{"grps", `('groups' in claims) ? claims['groups'] : []`},
			{"who", `uid != "" ? "gitlab-user:" + uid : "gitlab-user:anonymous"`},
			{"aud", `('aud' in claims) ? claims['aud'] : ""`},
			literal("expected_aud", aud),
			{"sub", `('sub' in claims) ? claims['sub'] : ""`},
			claimAs("scope", "secrets_manager_scope"),
			claim("correlation_id"),
		},
		Expression: fmt.Sprintf(`sub == "" ? "missing subject" :
!sub.startsWith("user:") ? "invalid subject for user authentication" :
scope == "" ? "missing secrets_manager_scope" :
scope != "user" ? "invalid secrets_manager_scope" :
id == "" ? "missing %[1]s" :
id != expected_id ? "token %[1]s does not match" :
aud == "" ? "missing audience" :
aud != expected_aud ? "audience validation failed" :
uid == "" ? "missing user_id" :
pb.Auth{
  display_name: who,
  alias: logical.Alias { name: who },
  policies:
    (uid  != "" ? [base + "/direct/user_" + uid] : []) +
    (mrid != "" ? [base + "/direct/member_role_" + mrid] : []) +
    grps.map(g, base + "/direct/group_" + string(g)) +
    (rid  != "" ? [base + "/roles/" + rid] : []),
  metadata: {"correlation_id": correlation_id, "%[1]s": id, "user_id": uid}
}`, idClaim),
	}
}
