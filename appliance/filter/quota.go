package filter

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/openbao/openbao/helper/namespace"
	"github.com/openbao/openbao/vault/quotas"
)

// checkFormLoginQuota closes the role-based rate-limit quota bypass
// through form-encoded bodies (said fixed in OpenBao 2.6.4 and 2.7.1;
// not in the CHANGELOG read through 2.6.2): OpenBao 2.4.0 applies a
// rate-limit quota that names a role (sys/quotas/rate-limit with role) by
// resolving the login's role from its body before the handler, as JSON
// only; a body sent as application/x-www-form-urlencoded resolves no role,
// so the quota does not apply, while the handler parses the form and logs
// the client in at that role. Whoever may log in (a role_id and secret_id,
// a JWT) escapes the quota meant to throttle them.
//
// This row does not refuse the form: on a request to an auth mount that
// has a role-based quota (the same question OpenBao's quota wrapper asks,
// ResolveRoleForQuotas), it rewrites the form body into the JSON object
// OpenBao's own form parsing would give (one value: the string; several:
// joined with commas; http/handler.go parseFormRequest), so that the
// quota's role resolution reads it. Other requests pay one map lookup and
// a string comparison of their Content-Type.
func (f *requestFilter) checkFormLoginQuota(r *http.Request) (int, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return 0, nil
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" || !strings.Contains(ct, "x-www-form-urlencoded") {
		return 0, nil
	}
	if mt, _, _ := mime.ParseMediaType(ct); mt != "application/x-www-form-urlencoded" {
		return 0, nil
	}
	req, ok := f.resolve(r, "auth")
	if !ok || !strings.HasPrefix(req.path, "auth/") {
		return 0, nil
	}
	ctx := namespace.ContextWithNamespace(r.Context(), req.ns)
	mount := strings.TrimPrefix(f.core.MatchingMount(ctx, req.path), req.ns.Path)
	if mount == "" {
		return 0, nil
	}
	need, err := f.core.ResolveRoleForQuotas(&quotas.Request{Type: quotas.TypeRateLimit, Path: req.ns.Path + req.path, MountPath: mount, NamespacePath: req.ns.Path})
	if err != nil || !need {
		return 0, nil
	}
	body, err := io.ReadAll(r.Body)
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return http.StatusBadRequest, errors.New("the request body could not be read")
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return 0, nil // OpenBao refuses it
	}
	data := make(map[string]any, len(vals))
	for k, v := range vals {
		switch len(v) {
		case 0:
		case 1:
			data[k] = v[0]
		default:
			data[k] = strings.Join(v, ",")
		}
	}
	out, err := json.Marshal(data)
	if err != nil {
		return 0, nil
	}
	r.Body = io.NopCloser(bytes.NewReader(out))
	r.ContentLength = int64(len(out))
	r.Header.Set("Content-Length", strconv.Itoa(len(out)))
	r.Header.Set("Content-Type", "application/json")
	return 0, nil
}
