package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
)

// GitLab's secrets-permissions page lists a namespace's policies under a
// prefix with their text: LIST <namespace>/sys/policies/detailed/acl/users
// (SecretsManagerClient#list_policies(type: :users)). OpenBao 2.4.0 lists
// only all of them (sys/policies/detailed/acl) and answers the prefixed
// form 404 "unsupported path", which GitLab takes for "no policies". Later
// OpenBao (2.5, GH-1965) serves it; so does detailedPolicies, with that
// version's checks:
//
//   - the caller's token (or inline auth) must be allowed LIST on the
//     prefixed path: the request goes to OpenBao first, which checks the
//     ACL before it finds no such path; anything but "unsupported path"
//     (403, an inline auth failure, a standby's forward that the active
//     node served) is the answer as it is;
//   - the list is then OpenBao 2.4's own full detailed list, asked with the
//     caller's same credentials (so the caller must be allowed LIST on
//     sys/policies/detailed/acl too; GitLab Rails is), cut to the names
//     that begin with the prefix, as OpenBao 2.5 cuts it (in the root
//     namespace "root" stays, as there).
//
// key_info holds what 2.4 gives per policy, name and policy (2.5 adds
// version, cas_required, modified; GitLab reads policy only).
func (h *API) detailedPolicies(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		full, prefix, ok := h.detailedPolicyList(r)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		first := httptest.NewRecorder()
		next.ServeHTTP(first, r)
		if first.Code != http.StatusNotFound || !strings.Contains(first.Body.String(), "unsupported path") {
			copyRecorded(w, first)
			return
		}
		all := httptest.NewRecorder()
		next.ServeHTTP(all, full)
		if all.Code != http.StatusOK {
			copyRecorded(w, all)
			return
		}
		var resp map[string]json.RawMessage
		var data struct {
			Keys    []string                   `json:"keys"`
			KeyInfo map[string]json.RawMessage `json:"key_info"`
		}
		if json.Unmarshal(all.Body.Bytes(), &resp) != nil || json.Unmarshal(resp["data"], &data) != nil {
			copyRecorded(w, all)
			return
		}
		keys, info := []string{}, map[string]json.RawMessage{}
		for _, k := range data.Keys {
			if strings.HasPrefix(k, prefix) || k == "root" {
				keys = append(keys, k)
				if v, ok := data.KeyInfo[k]; ok {
					info[k] = v
				}
			}
		}
		if len(keys) == 0 {
			writeJSON(w, http.StatusNotFound, map[string][]string{"errors": {}}) // OpenBao's answer to an empty list
			return
		}
		resp["data"], _ = json.Marshal(map[string]any{"keys": keys, "key_info": info})
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, resp)
	})
}

// detailedPolicyList reports whether r lists sys/policies/detailed/acl/
// <prefix> (LIST, or GET with list=true) in a namespace this node
// resolves, and returns the same request for the whole list (no body, the
// same credentials) and the prefix as OpenBao reads it (with the trailing
// slash a list adds).
func (h *API) detailedPolicyList(r *http.Request) (*http.Request, string, bool) {
	list := r.Method == "LIST" || r.Method == http.MethodGet && strings.Contains(r.URL.RawQuery, "list") && r.URL.Query().Get("list") == "true"
	p, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	const base = "sys/policies/detailed/acl/"
	if !list || !ok || !strings.Contains(p, base) || h.core == nil || h.core.Sealed() {
		return nil, "", false
	}
	ns, rel := h.core.ResolveNamespaceFromRequest(r.Header.Get("X-Vault-Namespace"), p)
	prefix, ok := strings.CutPrefix(rel, base)
	if ns == nil || !ok || prefix == "" || !strings.HasSuffix(p, rel) {
		return nil, "", false
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	full := r.Clone(r.Context())
	full.Method, full.Body, full.ContentLength = http.MethodGet, http.NoBody, 0
	full.URL = &url.URL{Path: "/v1/" + strings.TrimSuffix(p, rel) + strings.TrimSuffix(base, "/"), RawQuery: "list=true"}
	full.RequestURI = full.URL.RequestURI()
	return full, prefix, true
}

// copyRecorded writes a recorded answer as it is.
func copyRecorded(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(bytes.Clone(rec.Body.Bytes()))
}
