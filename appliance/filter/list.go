package filter

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/openbao/openbao/helper/namespace"
)

// checkListDeny closes GHSA-xp3c-3jw3-4vcr (OpenBao 2.6.0 GH-3389): for a
// LIST of P/, OpenBao 2.4.0 tries the glob rules on P before those on P/,
// so with
//
//	path "kv/metadata/*"         { capabilities = ["list"] }
//	path "kv/metadata/private/*" { capabilities = ["deny"] }
//
// LIST kv/metadata/private/ is allowed (the first rule matches P), while
// the policy syntax (most specific rule wins) and OpenBao 2.6 deny it.
// 2.4 decides: an exact rule on P/, an exact rule on P, the globs on P,
// the globs on P/; 2.6 swaps the last two. This row refuses a LIST that
// 2.4 allows through the globs on P while the globs on P/ do not grant
// list. OpenBao tells capabilities, not which rule matched, so that is
// read from four answers of core.Capabilities (which decides as a LIST
// does): P/ (2.4's decision), P (an exact rule on P, else the globs on
// P), P<NUL> (the globs on P alone: a NUL names no real path or rule) and
// P/<NUL> (the globs on P/ alone). 2.4's decision came from the globs on P
// when it equals the answers for P and P<NUL>. (An exact rule on P or P/
// that grants exactly what the globs on P grant cannot be told apart:
// such a LIST is refused, where 2.6 would allow it.)
//
// Cost: four capability evaluations (a token lookup and the policies from
// cache, each) per LIST that carries a token (X-Vault-Token or a bearer
// token) and that 2.4 allows; other requests, and inline-auth LISTs (all
// of GitLab Rails'), pay nothing. Inline-auth LISTs are not checked: their
// token exists only inside OpenBao's handling of the request.
func (f *requestFilter) checkListDeny(r *http.Request) (int, error) {
	list := r.Method == "LIST" || r.Method == http.MethodGet && strings.Contains(r.URL.RawQuery, "list") && r.URL.Query().Get("list") == "true"
	token := RequestToken(r)
	if !list || token == "" {
		return 0, nil
	}
	req, ok := f.resolve(r)
	if !ok || req.path == "" {
		return 0, nil
	}
	ctx := namespace.ContextWithNamespace(r.Context(), req.ns)
	caps := func(path string) []string {
		c, err := f.core.Capabilities(ctx, token, path)
		if err != nil {
			return nil
		}
		return c
	}
	p := req.path
	decision := caps(p + "/")
	if !slices.Contains(decision, "list") {
		return 0, nil // OpenBao denies it (or the token is root)
	}
	if !slices.Equal(decision, caps(p)) || !slices.Equal(decision, caps(p+"\x00")) {
		return 0, nil // an exact rule decided, as in 2.6
	}
	if slices.Contains(caps(p+"/\x00"), "list") {
		return 0, nil // the most specific globs, on P/, grant list too
	}
	return http.StatusForbidden, errors.New("permission denied: a more specific rule of the token's policies denies listing this path (GHSA-xp3c-3jw3-4vcr)")
}
