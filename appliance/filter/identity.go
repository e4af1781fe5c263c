package filter

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/openbao/openbao/sdk/v2/helper/consts"
)

// checkGroupRootPolicy closes CVE-2025-64761 (GHSA-7ff4-jw48-3436; OpenBao
// 2.5.0 GH-2143): OpenBao 2.4.0 refuses the policy "root" on an identity
// group only as written in lower case, keeps "Root" or "ROOT" as given,
// and a member's token then resolves it to the root policy. Whoever may
// write identity groups (not sudo) makes anyone root. This row refuses
// every spelling of root among a group's policies (a JSON list, or a
// comma-separated string as OpenBao also takes).
func (f *requestFilter) checkGroupRootPolicy(r *http.Request) (int, error) {
	req, ok := f.resolve(r, "group")
	if !ok || r.Method == http.MethodGet || r.Method == http.MethodDelete || r.Method == "LIST" {
		return 0, nil
	}
	if req.path != "identity/group" && !strings.HasPrefix(req.path, "identity/group/id/") && !strings.HasPrefix(req.path, "identity/group/name/") {
		return 0, nil
	}
	raw, form, err := bodyField(r, "policies")
	if err != nil {
		return http.StatusBadRequest, errors.New("the request body could not be read")
	}
	var policies []string
	if raw != nil {
		var one string
		if json.Unmarshal(raw, &policies) != nil && json.Unmarshal(raw, &one) == nil {
			form = one
		}
	}
	if form != "" {
		policies = append(policies, strings.Split(form, ",")...)
	}
	for _, p := range policies {
		if strings.EqualFold(strings.TrimSpace(p), "root") {
			return http.StatusBadRequest, errors.New(`policies cannot contain root, in any case (CVE-2025-64761)`)
		}
	}
	return 0, nil
}

// checkInlineAuthOperation closes GHSA-rh46-vc3j-w2w3 (OpenBao 2.6.2
// GH-3831): OpenBao 2.4.0 takes the operation of an inline login from the
// X-Vault-Inline-Auth-Operation header as given, so anyone, before any
// token, dispatches to an auth method an operation that no HTTP method
// maps to (internal ones: renew, revoke, rollback, alias-lookahead,
// resolve-role, ...). OpenBao 2.6.2 allows update only (the default when
// the header is absent, as GitLab sends it); so does this row.
func checkInlineAuthOperation(_ *requestFilter, r *http.Request) (int, error) {
	for _, op := range r.Header.Values(consts.InlineAuthOperationHeaderName) {
		if op != "update" {
			return http.StatusBadRequest, errors.New(consts.InlineAuthOperationHeaderName + ` may only be "update" (GHSA-rh46-vc3j-w2w3): leave it out`)
		}
	}
	return 0, nil
}

// oidcProviderRaw are the endpoints of the identity store's OIDC provider
// whose answers are raw bodies carrying secrets: an authorization code,
// an ID and access token, a user's claims.
var oidcProviderRaw = map[string]bool{"authorize": true, "token": true, "userinfo": true}

// checkOIDCProviderSecrets closes CVE-2025-62513 (OpenBao 2.4.3): 2.4.0's
// audit devices write a response's raw body (HTTPRawBody) unhashed, and
// the OIDC provider answers its authorize, token and userinfo endpoints
// with raw bodies holding codes, tokens and claims. GitLab does not use
// OpenBao as an OIDC provider: those three endpoints answer 404, in every
// namespace; its discovery document and keys (public) stay.
func checkOIDCProviderSecrets(_ *requestFilter, r *http.Request) (int, error) {
	p := strings.Trim(r.URL.Path, "/")
	if !hasSegment(p, "provider") {
		return 0, nil
	}
	segs := strings.Split(p, "/")
	n := len(segs)
	if n < 5 || !oidcProviderRaw[segs[n-1]] || segs[n-3] != "provider" || segs[n-4] != "oidc" || segs[n-5] != "identity" {
		return 0, nil
	}
	return http.StatusNotFound, fmt.Errorf("identity/oidc/provider/%s/%s is not served (CVE-2025-62513: OpenBao 2.4.0 writes its codes and tokens into audit logs in clear); the appliance is not an OIDC provider", segs[n-2], segs[n-1])
}

// checkAuditedInlineHeaders closes the other half of CVE-2026-46358
// (GHSA-q8cj-789h-vg24; OpenBao 2.5.4 GH-3076): for an inline-auth request
// 2.4.0 keeps, of all the request's headers, exactly the inline login's
// parameters (its password, its JWT), and an audit device writes any of
// them that is configured as an audited header, in clear when configured
// without hmac. This row refuses (400) configuring an X-Vault-Inline-Auth-*
// header as an audited header; the headers that 2.4.0 drops from those
// requests' audit lines cannot be brought back from in front of it (the
// advisories table says so).
func checkAuditedInlineHeaders(_ *requestFilter, r *http.Request) (int, error) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		return 0, nil
	}
	name, ok := strings.CutPrefix(strings.TrimSuffix(r.URL.Path, "/"), "/v1/sys/config/auditing/request-headers/")
	if !ok || !strings.HasPrefix(strings.ToLower(name), "x-vault-inline-auth-") {
		return 0, nil
	}
	return http.StatusBadRequest, errors.New("X-Vault-Inline-Auth-* headers carry inline logins' credentials and cannot be audited headers (CVE-2026-46358: OpenBao 2.4.0 keeps them on inline-auth requests)")
}
