package filter

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/openbao/openbao/helper/namespace"
	"github.com/openbao/openbao/vault"
)

// checkTemplateSubstitutions closes GHSA-59w7-v8rr-pr4p (OpenBao 2.6.0
// GH-3401): 2.4.0 substitutes identity template values into ACL policy
// paths (and PKI roles' allowed_domains and allowed_uri_sans) as they
// are, so a value holding "*" or "+" (a glob, a segment wildcard) or "/"
// widens the path past what the policy's author meant. Where the value
// comes from whoever logs in (a JWT claim mapped into alias metadata, such
// as a branch name, which may be "+"; a certificate's common name; an
// approle's custom role_id), that user reads what the policy gives every
// other user. OpenBao 2.6 refuses such a value when the policy is used,
// unless the policy opts in (allow_wildcards_in_substitutions,
// allow_slashes_in_substitutions; PKI: allow_globs_in_substitutions).
// (2.6 refuses them for every name and metadata; values that identity
// writers set, not logins, pass here: see userShaped.)
//
// The value is substituted inside the core, after the filter; the policy
// is written through it. This row refuses (400) a write of an ACL policy
// (sys/policies/acl/<name>, sys/policy/<name>) that templates a value
// users may shape, unless the write carries 2.6's opt-in options, both
// true (2.4.0 cannot refuse one character and allow another, so the
// opt-in is for all of them); likewise a PKI role whose templated
// allowed_domains or allowed_uri_sans do, unless
// allow_globs_in_substitutions is true. Values shaped at login are an
// alias's name (but a userpass mount's: usernames are [A-Za-z0-9_.@-])
// and an alias's metadata; the rest (ids, entity and group names and
// metadata, custom_metadata) only identity writers set, and passes. GitLab's
// policies are not templated (test/gitlabsim): they pay a strings.Contains
// on the policy text. 2.4.0 ignores the opt-in options (a warning); 2.6
// reads them, so a policy written with them keeps working after an
// upgrade. Policies stored before the appliance are not checked: read
// them (LIST sys/policies/acl) for "{{".
func (f *requestFilter) checkTemplateSubstitutions(r *http.Request) (int, error) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut && r.Method != http.MethodPatch {
		return 0, nil
	}
	req, ok := f.resolve(r, "policy", "acl", "roles")
	if !ok {
		return 0, nil
	}
	ctx := namespace.ContextWithNamespace(r.Context(), req.ns)
	switch {
	case strings.HasPrefix(req.path, "sys/policies/acl/") || strings.HasPrefix(req.path, "sys/policy/"):
		return f.checkPolicyTemplates(ctx, r, req)
	case strings.Contains(req.path, "/roles/"):
		i := strings.LastIndex(req.path, "/roles/")
		if strings.Contains(req.path[i+len("/roles/"):], "/") || !f.isMountOfType(ctx, req.ns, req.path, req.path[:i+1], "pki") {
			return 0, nil
		}
		return f.checkPKITemplates(r, req)
	}
	return 0, nil
}

func (f *requestFilter) checkPolicyTemplates(ctx context.Context, r *http.Request, req nsRequest) (int, error) {
	text, err := bodyString(r, "policy")
	if err == nil && text == "" && strings.HasPrefix(req.path, "sys/policy/") {
		text, err = bodyString(r, "rules")
	}
	if err != nil || text == "" {
		return 0, nil // OpenBao refuses it
	}
	if dec, err := base64.StdEncoding.DecodeString(text); err == nil {
		text = string(dec) // as OpenBao reads it
	}
	if !strings.Contains(text, "{{") {
		return 0, nil
	}
	pol, err := vault.ParseACLPolicy(req.ns, text)
	if err != nil {
		return 0, nil // OpenBao refuses it
	}
	if boolField(r, "allow_wildcards_in_substitutions") && boolField(r, "allow_slashes_in_substitutions") {
		return 0, nil
	}
	for _, p := range pol.Paths {
		if d := f.userShaped(p.Path, req.ns); d != "" {
			return http.StatusBadRequest, fmt.Errorf(`the policy's path %q templates {{%s}}, a value users may shape: OpenBao 2.4.0 substitutes it unchecked, and a "*", "+" or "/" in it widens the path (GHSA-59w7-v8rr-pr4p). Template on identity.entity.id or an alias's id (or a userpass alias's name); or, if no user can choose that value, set allow_wildcards_in_substitutions and allow_slashes_in_substitutions to true (OpenBao 2.6's options)`, p.Path, d)
		}
	}
	return 0, nil
}

func (f *requestFilter) checkPKITemplates(r *http.Request, req nsRequest) (int, error) {
	if boolField(r, "allow_globs_in_substitutions") {
		return 0, nil
	}
	for _, c := range [][2]string{{"allowed_domains_template", "allowed_domains"}, {"allowed_uri_sans_template", "allowed_uri_sans"}} {
		if !boolField(r, c[0]) {
			continue
		}
		raw, form, err := bodyField(r, c[1])
		if err != nil {
			return http.StatusBadRequest, errors.New("the request body could not be read")
		}
		values := []string{form}
		if raw != nil {
			var list []string
			var one string
			if json.Unmarshal(raw, &list) == nil {
				values = list
			} else if json.Unmarshal(raw, &one) == nil {
				values = []string{one}
			}
		}
		for _, v := range values {
			if d := f.userShaped(v, req.ns); d != "" {
				return http.StatusBadRequest, fmt.Errorf(`%s %q templates {{%s}}, a value users may shape: OpenBao 2.4.0 substitutes it unchecked, and a "*" in it widens what the role issues (GHSA-59w7-v8rr-pr4p). Template on identity.entity.id or an alias's id (or a userpass alias's name); or, if no user can choose that value, set allow_globs_in_substitutions to true (OpenBao 2.6's option)`, c[1], v, d)
			}
		}
	}
	return 0, nil
}

// userShaped returns the first identity template directive in s whose
// value is shaped at login, by whoever logs in: an alias's name (but a
// userpass alias's) and an alias's metadata (which auth methods fill from
// claims, certificates, ...); "" if none. Values only identity writers
// set pass: ids, entity and group names and metadata, an alias's
// custom_metadata (a login names its new entity entity_<uuid>). OpenBao's
// own default policy templates identity.entity.name and
// identity.entity.id.
func (f *requestFilter) userShaped(s string, ns *namespace.Namespace) string {
	for _, piece := range strings.Split(s, "{{")[1:] {
		d, _, ok := strings.Cut(piece, "}}")
		if !ok {
			continue
		}
		d = strings.TrimSpace(d)
		rest, ok := strings.CutPrefix(d, "identity.entity.aliases.")
		if !ok {
			continue
		}
		acc, field, _ := strings.Cut(rest, ".")
		switch {
		case field == "name" && !f.isAuthOfType(acc, ns, "userpass"), field == "metadata", strings.HasPrefix(field, "metadata."):
			return d
		}
	}
	return ""
}

// isAuthOfType reports whether the auth mount with accessor acc, in ns,
// is of type typ.
func (f *requestFilter) isAuthOfType(acc string, ns *namespace.Namespace, typ string) bool {
	auths, err := f.core.ListAuths()
	if err != nil {
		return false
	}
	for _, e := range auths {
		if e.Accessor == acc && e.NamespaceID == ns.ID {
			return e.Type == typ
		}
	}
	return false
}

// boolField reads a boolean option of the body as OpenBao does (true, or
// a string it parses as true).
func boolField(r *http.Request, field string) bool {
	raw, form, err := bodyField(r, field)
	if err != nil {
		return false
	}
	if raw != nil {
		var b bool
		if json.Unmarshal(raw, &b) == nil {
			return b
		}
		_ = json.Unmarshal(raw, &form)
	}
	switch strings.ToLower(strings.TrimSpace(form)) {
	case "1", "t", "true":
		return true
	}
	return false
}
