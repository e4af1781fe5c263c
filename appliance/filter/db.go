package filter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/openbao/openbao/helper/namespace"
	"github.com/openbao/openbao/sdk/v2/logical"
)

// checkPostgresRevocation closes CVE-2026-39946 (GHSA-6vgr-cp5c-ffx3;
// OpenBao 2.5.3 GH-2931): when a role of the database engine has no
// revocation_statements, 2.4.0's PostgreSQL plugin revokes a dynamic user
// with SQL of its own, into which it pastes the names of the schemas the
// user holds column privileges in, unquoted. A dynamic user who may create
// a schema names it so that the revocation, run as the connection's
// (administrative) user, breaks (the user outlives its lease) or runs SQL
// of the user's choosing. The plugin is compiled in; its SQL cannot be
// reached from the request path, the role's statements can: this row
// refuses (400) a write of <database mount>/roles/<name> that leaves the
// role without revocation_statements when its connection (db_name) uses
// the PostgreSQL plugin. A role with its own revocation_statements (the
// workaround OpenBao's advisory gives) runs only those.
//
// The connection's plugin, and for an update without db_name or without
// revocation_statements the stored role, are read inside the core with
// the request's own token (internal reads of <mount>/config/<db_name> and
// <mount>/roles/<name>, audited as such). When that token may not read
// them (or the request is an inline login, whose token exists only inside
// OpenBao), the write is refused with the same fix: give
// revocation_statements. Only writes to <mount>/roles/<name> of a
// database mount are looked at: GitLab writes none.
func (f *requestFilter) checkPostgresRevocation(r *http.Request) (int, error) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut && r.Method != http.MethodPatch {
		return 0, nil
	}
	req, ok := f.resolve(r, "roles")
	if !ok {
		return 0, nil
	}
	i := strings.LastIndex(req.path, "/roles/")
	if i < 0 || strings.Contains(req.path[i+len("/roles/"):], "/") {
		return 0, nil
	}
	mount, name := req.path[:i+1], req.path[i+len("/roles/"):]
	ctx := namespace.ContextWithNamespace(r.Context(), req.ns)
	if !f.isMountOfType(ctx, req.ns, req.path, mount, "database") {
		return 0, nil
	}
	if standby, err := f.core.Standby(); err != nil || standby {
		return 0, nil // forwarded: the active node's filter decides
	}
	raw, form, err := bodyField(r, "revocation_statements")
	if err != nil {
		return http.StatusBadRequest, errors.New("the request body could not be read")
	}
	if form != "" || statementsGiven(raw) {
		return 0, nil
	}
	dbName, err := bodyString(r, "db_name")
	if err != nil {
		return 0, nil // OpenBao refuses it
	}
	refuse := func(why string) (int, error) {
		return http.StatusBadRequest, fmt.Errorf("%s: PostgreSQL's default revocation pastes schema names into SQL unquoted (CVE-2026-39946): give the role revocation_statements, for example [\"REASSIGN OWNED BY \\\"{{name}}\\\" TO CURRENT_USER; DROP OWNED BY \\\"{{name}}\\\"; DROP ROLE IF EXISTS \\\"{{name}}\\\";\"]", why)
	}
	token := RequestToken(r)
	read := func(path string) (map[string]any, bool) {
		if token == "" {
			return nil, false
		}
		resp, err := f.core.HandleRequest(ctx, &logical.Request{Operation: logical.ReadOperation, Path: path, ClientToken: token})
		if err != nil || resp != nil && resp.IsError() {
			return nil, false
		}
		if resp == nil {
			return map[string]any{}, true // none stored
		}
		return resp.Data, true
	}
	if r.Method == http.MethodPatch || dbName == "" {
		role, ok := read(mount + "roles/" + name)
		if !ok {
			return refuse(fmt.Sprintf("the role %s without revocation_statements, and the stored role cannot be read with this token to check it", name))
		}
		if stmts, _ := role["revocation_statements"].([]string); len(stmts) > 0 {
			return 0, nil // the stored ones stay
		}
		if dbName == "" {
			dbName, _ = role["db_name"].(string)
		}
		if dbName == "" {
			return 0, nil // OpenBao refuses a role without db_name
		}
	}
	conn, ok := read(mount + "config/" + dbName)
	if !ok {
		return refuse(fmt.Sprintf("the role %s without revocation_statements, and the connection %s cannot be read with this token to check its plugin", name, dbName))
	}
	if plugin, _ := conn["plugin_name"].(string); strings.Contains(strings.ToLower(plugin), "postgres") {
		return refuse(fmt.Sprintf("the role %s has no revocation_statements and its connection %s uses %s", name, dbName, plugin))
	}
	return 0, nil
}

// statementsGiven reports whether raw (a JSON list of strings, or one
// string, as OpenBao takes statements) holds a statement.
func statementsGiven(raw json.RawMessage) bool {
	if raw == nil {
		return false
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		for _, s := range list {
			if strings.TrimSpace(s) != "" {
				return true
			}
		}
		return false
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return strings.TrimSpace(one) != ""
	}
	return len(bytes.TrimSpace(raw)) > 0 // OpenBao refuses it
}

// isMountOfType reports whether path (relative to ns) is served by a
// mount of type typ at mount (relative to ns, with a trailing slash).
func (f *requestFilter) isMountOfType(ctx context.Context, ns *namespace.Namespace, path, mount, typ string) bool {
	if strings.TrimPrefix(f.core.MatchingMount(ctx, path), ns.Path) != mount {
		return false
	}
	mounts, err := f.core.ListMounts()
	if err != nil {
		return false
	}
	for _, e := range mounts {
		if e.NamespaceID == ns.ID && e.Path == mount {
			return e.Type == typ
		}
	}
	return false
}
