// Package filter closes, in front of the embedded OpenBao 2.4.0, the
// advisories later OpenBao releases closed (see filterRules and
// docs/security/advisories.md): every API request, and every request a
// standby forwards, passes its table of rows before OpenBao sees it.
package filter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	vaulthttp "github.com/openbao/openbao/http"
	"github.com/openbao/openbao/vault"
)

// The request filter closes, in front of the embedded OpenBao 2.4.0,
// what later OpenBao releases closed by default and cannot be had here by
// upgrading (the module proxy serves no newer OpenBao commit). Every API
// request (/v1/ and /appliance/v1/) goes through it first; so does every
// request a standby forwards to the active node. Each rule names the
// advisory it closes; docs/security/advisories.md lists them with their
// tests. A refused request never reaches OpenBao.
var filterRules = []filterRule{
	{
		advisory: "CVE-2026-3605 (HCSEC-2026-05; OpenBao 2.5.3 GH-2910)",
		what:     "path traversal: a . or .. segment in the path or namespace, percent-encoded or not, reaches OpenBao's router after Go's path cleaning and slips past ACL paths",
		check:    checkDotSegments,
	},
	{
		advisory: "CVE-2026-3605 (hardening)",
		what:     "an empty segment (//) inside the path: a non-canonical path that ACL paths do not expect (but in a PKI mount's OCSP GET, whose base64 request may hold //, the reason OpenBao 2.5 keeps them)",
		check:    checkEmptySegments,
	},
	{
		advisory: "CVE-2026-3605 (hardening)",
		what:     "a path or namespace that is not valid UTF-8: OpenBao matches paths and policies as strings",
		check:    checkUTF8,
	},
	{
		advisory: "CVE-2026-45808",
		what:     "the legacy lease endpoints sys/revoke, sys/revoke-prefix, sys/revoke-force and sys/renew (sys/leases/* remain)",
		check:    (*requestFilter).checkLegacyLeases,
	},
	{
		advisory: "CVE-2025-59043 (GHSA-g46h-2rq9-gw5m; OpenBao 2.4.1), CVE-2025-6203 (HCSEC-2025-24)",
		what:     "request bodies: capped at the listener's max_request_size before anything reads them, and JSON whose decoded form would be out of proportion to its size (nesting, object entries, array elements, string length, values in all) refused before OpenBao parses it (unauthenticated, and for every request)",
		check:    (*requestFilter).checkBody,
	},
	// The rows below read the body that checkBody buffered (ns.go).
	{
		advisory: "CVE-2026-40264 (GHSA-p49j-v9wc-wg57; OpenBao 2.5.3 GH-2934)",
		what:     "auth/token/{lookup,renew,revoke}-accessor with the accessor of a token of another namespace: 2.4.0 acts on it in the accessor's namespace after checking the ACL in the request's (the accessor's namespace is its suffix; the request's as the core resolves it)",
		check:    (*requestFilter).checkAccessorNamespace,
	},
	{
		advisory: "GHSA-c36x-h252-g9x2 (OpenBao 2.5.5 GH-3307)",
		what:     "sys/leases/{renew,revoke}/<lease id> with a lease of another namespace: 2.4.0 checks the ACL in the request's namespace and revokes in the lease's (the body forms are checked in the lease's namespace and pass); lease_id or token that is not a string",
		check:    (*requestFilter).checkLeaseNamespace,
	},
	{
		advisory: "CVE-2026-39388 (GHSA-7ccv-rp6m-rffr; OpenBao 2.5.3 GH-2932)",
		what:     "a cert auth token renewed (renew-self, renew, renew-accessor) with a client certificate other than its login's: 2.4.0 accepts any sibling from the same CA (cert.go; requests presenting a certificate only)",
		check:    (*requestFilter).checkCertRenewal,
	},
	{
		advisory: "CVE-2026-39946 (GHSA-6vgr-cp5c-ffx3; OpenBao 2.5.3 GH-2931)",
		what:     "a database role left without revocation_statements whose connection uses the PostgreSQL plugin: 2.4.0's default revocation pastes the user's schema names into SQL unquoted (db.go)",
		check:    (*requestFilter).checkPostgresRevocation,
	},
	{
		advisory: "GHSA-59w7-v8rr-pr4p (OpenBao 2.6.0 GH-3401)",
		what:     "an ACL policy (or a PKI role's allowed_domains, allowed_uri_sans) templating a value users may shape (names, metadata) without 2.6's opt-in options: 2.4.0 substitutes a *, + or / in it unchecked and the path widens (template.go)",
		check:    (*requestFilter).checkTemplateSubstitutions,
	},
	{
		advisory: "CVE-2025-64761 (GHSA-7ff4-jw48-3436; OpenBao 2.5.0 GH-2143)",
		what:     "an identity group written with the policy root spelt in another case (Root, ROOT): 2.4.0 keeps it and a member's token resolves it to the root policy (identity.go)",
		check:    (*requestFilter).checkGroupRootPolicy,
	},
	{
		advisory: "GHSA-rh46-vc3j-w2w3 (OpenBao 2.6.2 GH-3831)",
		what:     "an inline login whose X-Vault-Inline-Auth-Operation is not update: 2.4.0 dispatches any operation, internal ones included, to the auth method, before any token (identity.go)",
		check:    checkInlineAuthOperation,
	},
	{
		advisory: "CVE-2026-46358 (GHSA-q8cj-789h-vg24; OpenBao 2.5.4 GH-3076)",
		what:     "an X-Vault-Inline-Auth-* header configured as an audited header: 2.4.0 keeps exactly those headers (the inline login's credentials) on inline-auth requests, and the audit device writes them (identity.go)",
		check:    checkAuditedInlineHeaders,
	},
	{
		advisory: "CVE-2025-62513 (GHSA-ghfh-fmx4-26h8; OpenBao 2.4.3 GH-2002)",
		what:     "the identity OIDC provider's authorize, token and userinfo endpoints, whose raw-body answers (codes, tokens, claims) 2.4.0's audit devices log unhashed (identity.go)",
		check:    checkOIDCProviderSecrets,
	},
	{
		advisory: "GHSA-8w8f-r2xv-4q4j",
		what:     "a Transit RSA key created with derived=true, which 2.4.0 accepts and cannot operate (plugins.go)",
		check:    checkTransitDerivedRSA,
	},
	{
		advisory: "GHSA-7q7g-x6vg-xpc3, GHSA-cpj3-3r2f-xj59 (OpenBao 2.5.2)",
		what:     "jwt/oidc: a role with callback_mode direct (a victim's login polled by an attacker), and a direct callback carrying the provider's error, which 2.4.0 reflects into HTML (plugins.go)",
		check:    checkOIDCDirectCallback,
	},
	{
		advisory: "GHSA-xp3c-3jw3-4vcr (OpenBao 2.6.0 GH-3389)",
		what:     "a LIST of P/ that a glob rule on P allows and a more specific glob rule on P/ denies: 2.4.0 checks P first (list.go; LISTs with a token only)",
		check:    (*requestFilter).checkListDeny,
	},
	{
		advisory: "role-based rate-limit quota bypass through form-encoded bodies (OpenBao 2.6.4, 2.7.1)",
		what:     "a form-encoded body on an auth mount with a role-based quota: 2.4.0 resolves the quota's role from JSON only; the form is rewritten into the JSON OpenBao's form parsing gives, and the quota applies (quota.go; nothing refused)",
		check:    (*requestFilter).checkFormLoginQuota,
	},
}

// filterRule is one row of the filter: the advisory it closes, what it
// refuses, and the check (nil: pass; else the status and the reason).
type filterRule struct {
	advisory string
	what     string
	check    func(f *requestFilter, r *http.Request) (int, error)
}

// JSON limits, as Vault 1.20 sets its listeners' defaults (max_json_*),
// with a total beside them: a GitLab request is a few hundred values.
const (
	maxJSONDepth        = 300
	maxJSONStringBytes  = 1 << 20
	maxJSONObjectKeys   = 10000
	maxJSONArrayItems   = 10000
	maxJSONValues       = 100000
	maxRequestBodyBytes = vaulthttp.DefaultMaxRequestSize
)

// rawBodyPaths take a body OpenBao does not parse (a Raft snapshot to
// restore, sudo only): neither capped nor scanned.
var rawBodyPaths = map[string]bool{
	"/v1/sys/storage/raft/snapshot":       true,
	"/v1/sys/storage/raft/snapshot-force": true,
}

// requestFilter applies filterRules in order. core is nil in unit tests
// of the rows that need none.
type requestFilter struct {
	core    *vault.Core
	maxBody int64
}

// Wrap wraps next (the listener's whole mux, or the cluster's handler of
// forwarded requests) with filterRules, which ask core what they need
// (namespaces, tokens, mounts, capabilities).
func Wrap(core *vault.Core, next http.Handler) http.Handler {
	f := &requestFilter{core: core, maxBody: maxRequestBodyBytes}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, rule := range filterRules {
			if code, err := rule.check(f, r); err != nil {
				if code == http.StatusRequestEntityTooLarge {
					w.Header().Set("Connection", "close") // the rest of the body is not read
				}
				writeError(w, code, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// segments of the request's decoded path (and namespace header, which
// OpenBao puts in front of it).
func pathParts(r *http.Request) [][]string {
	out := [][]string{strings.Split(r.URL.Path, "/")}
	if ns := r.Header.Get("X-Vault-Namespace"); ns != "" {
		out = append(out, strings.Split(ns, "/"))
	}
	return out
}

func checkDotSegments(_ *requestFilter, r *http.Request) (int, error) {
	for _, segs := range pathParts(r) {
		for _, s := range segs {
			if s == "." || s == ".." {
				return http.StatusBadRequest, errors.New(`the request path or namespace has a "." or ".." segment (refused since CVE-2026-3605): send the canonical path`)
			}
		}
	}
	return 0, nil
}

// checkEmptySegments refuses an empty segment inside the path, but after
// an ocsp segment: a PKI mount's OCSP GET carries a base64 request, in
// which "//" may occur (the reason OpenBao 2.5 keeps empty segments).
func checkEmptySegments(_ *requestFilter, r *http.Request) (int, error) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	p = strings.TrimSuffix(p, "/") // a trailing slash is how OpenBao lists
	for _, s := range strings.Split(p, "/") {
		switch s {
		case "ocsp", "unified-ocsp":
			return 0, nil
		case "":
			if p == "" {
				return 0, nil
			}
			return http.StatusBadRequest, errors.New(`the request path has an empty segment ("//"): send the canonical path`)
		}
	}
	return 0, nil
}

func checkUTF8(_ *requestFilter, r *http.Request) (int, error) {
	if !utf8.ValidString(r.URL.Path) || !utf8.ValidString(r.Header.Get("X-Vault-Namespace")) {
		return http.StatusBadRequest, errors.New("the request path or namespace is not valid UTF-8")
	}
	return 0, nil
}

// legacyLeaseEndpoints are the sys/ paths OpenBao kept from Vault 0.x for
// leases; sys/leases/renew, sys/leases/revoke, ... do the same and stay.
var legacyLeaseEndpoints = map[string]bool{"revoke": true, "revoke-prefix": true, "revoke-force": true, "renew": true}

// checkLegacyLeases refuses sys/<legacy>[/...] in the root namespace, in
// the namespace of the X-Vault-Namespace header, or after a path prefix
// that the core resolves as a namespace. A standby cannot resolve
// namespaces: it forwards such a request, and the active node's filter
// decides.
func (f *requestFilter) checkLegacyLeases(r *http.Request) (int, error) {
	p, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok {
		return 0, nil
	}
	segs := strings.Split(p, "/")
	for i := 0; i+1 < len(segs); i++ {
		if segs[i] != "sys" || !legacyLeaseEndpoints[segs[i+1]] {
			continue
		}
		if i == 0 || f.isNamespace(r, strings.Join(segs[:i], "/")+"/") {
			return http.StatusNotFound, fmt.Errorf("sys/%s is not served (CVE-2026-45808): use sys/leases/%s", segs[i+1], segs[i+1])
		}
	}
	return 0, nil
}

// isNamespace reports whether prefix (with a trailing slash) is exactly a
// namespace's path, as the core resolves the request.
func (f *requestFilter) isNamespace(r *http.Request, prefix string) bool {
	if f.core == nil || f.core.Sealed() {
		return false
	}
	ns, trimmed := f.core.ResolveNamespaceFromRequest(r.Header.Get("X-Vault-Namespace"), prefix+"sys/")
	return ns != nil && trimmed == "sys/"
}

// checkBody caps the body and scans it as JSON within the limits. A body
// that is not JSON passes as it is (a form, or something OpenBao refuses);
// a body over a limit is refused before anything parses it. The body read
// is put back for the handlers after the filter.
func (f *requestFilter) checkBody(r *http.Request) (int, error) {
	if r.Body == nil || r.Body == http.NoBody || rawBodyPaths[r.URL.Path] {
		return 0, nil
	}
	if r.ContentLength > f.maxBody {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("the request body is %d bytes, over the limit of %d (max_request_size; CVE-2025-59043)", r.ContentLength, f.maxBody)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, f.maxBody+1))
	r.Body.Close()
	if err != nil {
		return http.StatusBadRequest, errors.New("the request body could not be read")
	}
	if int64(len(body)) > f.maxBody {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("the request body is over the limit of %d bytes (max_request_size; CVE-2025-59043)", f.maxBody)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err := checkJSON(body); errors.Is(err, errJSONString) {
		return http.StatusRequestEntityTooLarge, err
	} else if err != nil {
		return http.StatusBadRequest, err
	}
	return 0, nil
}

// errJSONLimit marks a JSON body over one of the limits; errJSONString,
// one with a string over its limit (413: no stored value could hold it).
var (
	errJSONLimit  = errors.New("the JSON request body is over a limit (CVE-2025-59043, CVE-2025-6203)")
	errJSONString = fmt.Errorf("%w: a string is too large", errJSONLimit)
)

// checkJSON scans the first JSON value in body without building it and
// returns the first limit it exceeds, naming it. A syntax error ends the
// scan without an error: whoever parses the body refuses it.
func checkJSON(body []byte) error {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' && trimmed[0] != '[' && trimmed[0] != '"' {
		return nil // not JSON we need to look into (a form, a number)
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	type level struct {
		object bool
		n      int // entries (objects: keys) so far
		key    bool
	}
	var stack []level
	values := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		// In an object, every other string is a key.
		isKey := false
		if n := len(stack); n > 0 && stack[n-1].object {
			if d, ok := tok.(json.Delim); !ok || d != '}' {
				stack[n-1].key = !stack[n-1].key
				isKey = stack[n-1].key
			}
		}
		if s, ok := tok.(string); ok && len(s) > maxJSONStringBytes {
			return fmt.Errorf("%w: %d bytes, over max_json_string_value_length %d", errJSONString, len(s), maxJSONStringBytes)
		}
		if isKey {
			top := &stack[len(stack)-1]
			if top.n++; top.n > maxJSONObjectKeys {
				return fmt.Errorf("%w: an object with more than %d entries (max_json_object_entry_count)", errJSONLimit, maxJSONObjectKeys)
			}
			continue
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				return nil
			}
			continue
		}
		if values++; values > maxJSONValues {
			return fmt.Errorf("%w: more than %d values in all", errJSONLimit, maxJSONValues)
		}
		if n := len(stack); n > 0 && !stack[n-1].object {
			if stack[n-1].n++; stack[n-1].n > maxJSONArrayItems {
				return fmt.Errorf("%w: an array with more than %d elements (max_json_array_element_count)", errJSONLimit, maxJSONArrayItems)
			}
		}
		if d, ok := tok.(json.Delim); ok {
			if stack = append(stack, level{object: d == '{'}); len(stack) > maxJSONDepth {
				return fmt.Errorf("%w: nested deeper than %d (max_json_depth)", errJSONLimit, maxJSONDepth)
			}
			continue
		}
		if len(stack) == 0 {
			return nil // a scalar on its own
		}
	}
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string][]string{"errors": {err.Error()}})
}

// RequestToken is the token a request carries: X-Vault-Token, or an
// Authorization bearer token, as OpenBao reads them.
func RequestToken(r *http.Request) string {
	if t := r.Header.Get("X-Vault-Token"); t != "" {
		return t
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}
