package filter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/openbao/openbao/helper/namespace"
)

// The namespace rows of the filter. GitLab gives every project its own
// OpenBao namespace (org_<id>/group_<id>/project_<id>); OpenBao 2.4.0 lets
// a request made in one namespace act, in some places, on another one's
// tokens, leases or on the namespace itself. Each check below resolves the
// request's namespace as the core does (X-Vault-Namespace, then the
// longest namespace prefix of the path) and compares it with the
// namespace that the token accessor, the lease id or the namespace name
// points at. Each costs nothing but a few string comparisons unless the
// path is one of those few endpoints; then one namespace lookup in
// memory, and a parse of the (already buffered, size-checked) body.

// nsRequest is a request as the core resolves it: its namespace and the
// path relative to that namespace (no /v1/, no trailing slash).
type nsRequest struct {
	ns   *namespace.Namespace
	path string
}

// resolve resolves r's namespace if the path (after any namespace prefix)
// could end in one of suffixes (no suffixes: any path); ok is false
// otherwise, and when this node
// cannot resolve namespaces (sealed, or no core): a standby forwards the
// request, and the active node's filter decides.
func (f *requestFilter) resolve(r *http.Request, suffixes ...string) (nsRequest, bool) {
	p, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok {
		return nsRequest{}, false
	}
	p = strings.TrimSuffix(p, "/")
	found := len(suffixes) == 0
	for _, s := range suffixes {
		if hasSegment(p, s) {
			found = true
			break
		}
	}
	if !found || f.core == nil || f.core.Sealed() {
		return nsRequest{}, false
	}
	ns, rel := f.core.ResolveNamespaceFromRequest(r.Header.Get("X-Vault-Namespace"), p)
	if ns == nil {
		return nsRequest{}, false
	}
	return nsRequest{ns: ns, path: strings.TrimSuffix(rel, "/")}, true
}

// hasSegment reports whether seg is one of p's /-separated segments,
// without allocating (every request passes here).
func hasSegment(p, seg string) bool {
	for p != "" {
		i := strings.Index(p, seg)
		if i < 0 {
			return false
		}
		end := i + len(seg)
		if (i == 0 || p[i-1] == '/') && (end == len(p) || p[end] == '/') {
			return true
		}
		p = p[i+1:]
	}
	return false
}

// idNamespace is the id of the namespace that a token accessor or lease id
// belongs to: the suffix after its last dot, or the root namespace's when
// it has none (OpenBao's own reading, namespace.SplitIDFromString).
func idNamespace(id string) string {
	if _, nsID := namespace.SplitIDFromString(id); nsID != "" {
		return nsID
	}
	return namespace.RootNamespaceID
}

// accessorPaths take a token accessor in the body.
var accessorPaths = map[string]bool{
	"auth/token/lookup-accessor": true,
	"auth/token/renew-accessor":  true,
	"auth/token/revoke-accessor": true,
}

// checkAccessorNamespace closes CVE-2026-40264: OpenBao 2.4.0 looks a
// token up by accessor in the accessor's namespace, whatever namespace the
// request was made (and its ACL checked) in, so whoever may use these
// endpoints in their own namespace renews, revokes or reads tokens of any
// other. OpenBao 2.5.3 refuses an accessor of another namespace; so does
// this row.
func (f *requestFilter) checkAccessorNamespace(r *http.Request) (int, error) {
	req, ok := f.resolve(r, "lookup-accessor", "renew-accessor", "revoke-accessor")
	if !ok || !accessorPaths[req.path] {
		return 0, nil
	}
	accessor, err := bodyString(r, "accessor")
	if err != nil || accessor == "" {
		return http.StatusBadRequest, errors.New(`the request needs "accessor" as a string`)
	}
	if idNamespace(accessor) != req.ns.ID {
		return http.StatusForbidden, errors.New("permission denied: the token accessor belongs to another namespace (CVE-2026-40264): send the request in the accessor's namespace")
	}
	return 0, nil
}

// checkLeaseNamespace closes GHSA-c36x-h252-g9x2: OpenBao 2.4.0 sends
// sys/leases/{lookup,renew,revoke} with lease_id in the body to the
// lease's namespace and checks the token's ACL there, but not the path
// form sys/leases/revoke/<lease id>: its ACL is checked in the request's
// namespace and the lease revoked in its own, so a tenant allowed
// sys/leases/revoke/* revokes any leaked lease of another tenant. OpenBao
// 2.5.5 routes the path form as the body form; this row refuses a path
// form whose lease (the body's lease_id first, as OpenBao reads it) is of
// another namespace, and a lease_id or token that is not a string (2.4.0
// asserts it is one).
func (f *requestFilter) checkLeaseNamespace(r *http.Request) (int, error) {
	req, ok := f.resolve(r, "leases", "lookup", "renew", "revoke", "revoke-orphan")
	if !ok {
		return 0, nil
	}
	switch req.path {
	case "sys/leases/lookup", "sys/leases/renew", "sys/leases/revoke", "sys/leases/revoke-force":
		if _, err := bodyString(r, "lease_id"); err != nil {
			return http.StatusBadRequest, errors.New(`"lease_id" must be a string`)
		}
		return 0, nil
	case "auth/token/lookup", "auth/token/renew", "auth/token/revoke", "auth/token/revoke-orphan":
		if _, err := bodyString(r, "token"); err != nil {
			return http.StatusBadRequest, errors.New(`"token" must be a string`)
		}
		return 0, nil
	}
	var inPath string
	for _, p := range []string{"sys/leases/renew/", "sys/leases/revoke/"} {
		if rest, ok := strings.CutPrefix(req.path, p); ok {
			inPath = rest
		}
	}
	if inPath == "" {
		return 0, nil
	}
	lease, err := bodyString(r, "lease_id")
	if err != nil {
		return http.StatusBadRequest, errors.New(`"lease_id" must be a string`)
	}
	if lease == "" {
		lease = inPath
	}
	if idNamespace(lease) != req.ns.ID {
		return http.StatusForbidden, errors.New("permission denied: the lease belongs to another namespace (GHSA-c36x-h252-g9x2): send lease_id in the body of sys/leases/renew or sys/leases/revoke, which OpenBao checks in the lease's namespace")
	}
	return 0, nil
}

// bodyString reads field from r's body, JSON or a form as OpenBao parses
// them, and puts the body back. A missing field is "", a field that is not
// a string an error. The body was capped and buffered by checkBody.
func bodyString(r *http.Request, field string) (string, error) {
	raw, form, err := bodyField(r, field)
	if err != nil || raw == nil {
		return form, err
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%s is not a string", field)
	}
	return s, nil
}

// bodyField reads field from r's body and puts the body back: raw is its
// JSON (nil when absent, null, or the body is a form), form its value in a
// form body.
func bodyField(r *http.Request, field string) (raw json.RawMessage, form string, err error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, "", nil
	}
	body, err := io.ReadAll(r.Body)
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return nil, "", err
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/x-www-form-urlencoded" {
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, "", nil // OpenBao refuses it
		}
		return nil, vals.Get(field), nil
	}
	var m map[string]json.RawMessage
	if len(bytes.TrimSpace(body)) == 0 || json.Unmarshal(body, &m) != nil {
		return nil, "", nil // not a JSON object: OpenBao refuses it
	}
	if raw = m[field]; string(raw) == "null" {
		raw = nil
	}
	return raw, "", nil
}
