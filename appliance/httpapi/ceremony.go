package httpapi

import (
	"errors"
	"net/http"
	"strings"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/appliance/filter"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
)

// OpenBao 2.4 serves its key ceremonies to anyone who can reach the API:
// sys/generate-root/* and the legacy sys/rekey/* and
// sys/rekey-recovery-key/* take no token at all (their keys are meant to
// be the authorization), so anybody could start or cancel the operators'
// attempt, and a quorum of recovery keys alone rotated the root key
// outside the appliance's own seal changes. The appliance wants a token
// with sudo on the ceremony's path on top of the keys, for every request
// of every ceremony (status reads, starts, updates, cancels), as newer
// OpenBao releases turn the unauthenticated forms off by default. Its own
// seal flows use none of these endpoints.
//
// ceremonyPrefixes are the ceremonies, as paths under /v1/sys/; each
// covers itself and everything below it.
var ceremonyPrefixes = []string{
	"generate-root",           // a new root token from recovery keys
	"generate-recovery-token", // OpenBao's recovery mode (not served)
	"rekey",                   // the root key (recovery keys, autoseal) and its backups
	"rekey-recovery-key",      // the recovery keys
	"rotate/root",             // the authenticated forms of the above (init, update, verify, backup)
	"rotate/recovery",         // recovery key rotation, authenticated form
}

// ceremonyPath reports whether r is a request to a key ceremony, and its
// ACL path (sys/...). Only the root namespace's sys/ needs the gate:
// OpenBao refuses every ceremony inside a namespace (restrictedSysAPIs),
// whether the namespace is in the path or in X-Vault-Namespace (which
// names the root only when it is empty or "/").
func ceremonyPath(r *http.Request) (string, bool) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/sys/")
	if !ok || strings.Trim(r.Header.Get("X-Vault-Namespace"), "/") != "" {
		return "", false
	}
	rest = strings.TrimSuffix(rest, "/")
	for _, c := range ceremonyPrefixes {
		if rest == c || strings.HasPrefix(rest, c+"/") {
			return "sys/" + rest, true
		}
	}
	return "", false
}

// errCeremonyDenied is the answer to a ceremony request without a token
// that has sudo on its path.
var errCeremonyDenied = errors.New("permission denied: key ceremonies (generate-root, rekey, recovery key rotation) need a token with the sudo capability on their path, on top of the keys")

// errCeremonyNotActive sends a ceremony to the active node, the only one
// that can check its token.
var errCeremonyNotActive = errors.New("key ceremonies run on the active node: send the request to the leader (see `gitlab-secrets-appliance status`)")

// ceremonyGate refuses every key ceremony request whose token lacks sudo
// on the ceremony's path (403), and every one that reaches a node that is
// not active (409; a standby cannot check tokens). Everything else passes.
func (h *API) ceremonyGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, ok := ceremonyPath(r)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		switch {
		case h.core.Sealed():
			writeError(w, http.StatusServiceUnavailable, errors.New("the node is sealed: key ceremonies need an unsealed active node"))
			return
		case h.n.State() != client.StateActive:
			writeError(w, http.StatusConflict, errCeremonyNotActive)
			return
		}
		if err := h.n.AuthorizeSudo(r.Context(), filter.RequestToken(r), path, errCeremonyDenied); err != nil {
			writeError(w, http.StatusForbidden, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}
