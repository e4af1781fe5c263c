package filter

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/openbao/openbao/helper/namespace"
	"github.com/openbao/openbao/sdk/v2/helper/certutil"
	"github.com/openbao/openbao/sdk/v2/logical"
)

// checkCertRenewal closes CVE-2026-39388 (GHSA-7ccv-rp6m-rffr; OpenBao
// 2.5.3 GH-2932): a token of the cert auth method is renewed only with a
// client certificate that matches the login's, but 2.4.0 compares the
// subject key id and the authority key id with && where || was meant, so
// any other certificate that the mount accepts and that shares either id
// (every sibling from the same CA shares the authority key id) renews it:
// whoever holds the token, or may renew it by accessor, keeps it alive
// with a certificate of their own. OpenBao 2.5.3 requires the very
// certificate of the login.
//
// 2.4.0's cert login records that certificate in the token's metadata:
// serial_number, subject_key_id and authority_key_id (next to cert_name
// and common_name). This row refuses (403) a renewal of a cert token
// (auth/token/renew-self, auth/token/renew with the token in the body,
// auth/token/renew-accessor) whose presented certificate differs from the
// login's in any of the three, as 2.5.3 does; a renewed certificate (a new
// serial) is refused too, as in 2.5.3. sys/leases/renew does not renew
// tokens in 2.4.0 ("tokens cannot be renewed through this endpoint").
//
// Only requests that present a client certificate are looked at: without
// one, 2.4.0's cert renewal refuses by itself (or the mount has
// disable_binding, which 2.5.3 honours by not checking). GitLab presents
// none: its requests pay one map lookup. With a certificate: one token
// lookup in the core and a read of the auth mount table; for
// renew-accessor, an internal auth/token/lookup-accessor with the
// request's own token (audited as such), which must then be allowed: a
// token that may renew by accessor but not look up is refused while it
// presents a certificate (without one, nothing changes).
//
// A standby passes the request on: it is forwarded with its certificates
// and the active node's filter decides.
func (f *requestFilter) checkCertRenewal(r *http.Request) (int, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return 0, nil
	}
	req, ok := f.resolve(r, "renew-self", "renew", "renew-accessor")
	if !ok {
		return 0, nil
	}
	switch req.path {
	case "auth/token/renew-self", "auth/token/renew", "auth/token/renew-accessor":
	default:
		return 0, nil
	}
	if standby, err := f.core.Standby(); err != nil || standby {
		return 0, nil
	}
	ctx := namespace.ContextWithNamespace(r.Context(), req.ns)
	var path, nsID string
	var meta map[string]string
	switch req.path {
	case "auth/token/renew-self", "auth/token/renew":
		token := RequestToken(r)
		if req.path == "auth/token/renew" {
			var err error
			if token, err = bodyString(r, "token"); err != nil {
				return http.StatusBadRequest, errors.New(`"token" must be a string`)
			}
		}
		if token == "" {
			return 0, nil // OpenBao refuses it, or an inline login's token
		}
		if decoded, err := f.core.DecodeSSCToken(token); err == nil && decoded != "" {
			token = decoded
		}
		te, err := f.core.LookupToken(ctx, token)
		if err != nil || te == nil {
			return 0, nil // OpenBao answers it (not found, invalid)
		}
		path, nsID, meta = te.Path, te.NamespaceID, te.Meta
	case "auth/token/renew-accessor":
		accessor, err := bodyString(r, "accessor")
		if err != nil || accessor == "" {
			return 0, nil // OpenBao refuses it (checkAccessorNamespace: not a string)
		}
		resp, err := f.core.HandleRequest(ctx, &logical.Request{
			Operation:   logical.UpdateOperation,
			Path:        "auth/token/lookup-accessor",
			ClientToken: RequestToken(r),
			Data:        map[string]any{"accessor": accessor},
			Connection:  &logical.Connection{RemoteAddr: remoteHost(r), ConnState: r.TLS},
		})
		switch {
		case err != nil && strings.Contains(err.Error(), logical.ErrPermissionDenied.Error()):
			return http.StatusForbidden, errors.New("permission denied: renewing a token by accessor while presenting a client certificate needs auth/token/lookup-accessor too (CVE-2026-39388: the appliance checks that a cert token is renewed with its login's certificate); or send no client certificate")
		case err != nil || resp == nil || resp.IsError():
			return 0, nil // OpenBao answers it (no such accessor)
		}
		path, _ = resp.Data["path"].(string)
		nsID = idNamespace(accessor)
		meta = map[string]string{}
		switch m := resp.Data["meta"].(type) {
		case map[string]string:
			meta = m
		case map[string]any:
			for k, v := range m {
				meta[k], _ = v.(string)
			}
		}
	}
	if !f.isCertToken(path, nsID, meta) {
		return 0, nil
	}
	if certMatches(r.TLS.PeerCertificates[0], meta) {
		return 0, nil
	}
	return http.StatusForbidden, fmt.Errorf("permission denied: the client certificate is not the one this token logged in with (CVE-2026-39388): renew with the login's certificate (serial %s), or log in again", meta["serial_number"])
}

// isCertToken reports whether a token of path (auth/<mount>/login...) in
// namespace nsID came from a cert auth mount, as its metadata says
// (cheap) and the auth mount table confirms (a JWT role's claim mappings
// may name metadata as they like).
func (f *requestFilter) isCertToken(path, nsID string, meta map[string]string) bool {
	for _, k := range []string{"cert_name", "serial_number", "authority_key_id", "subject_key_id"} {
		if _, ok := meta[k]; !ok {
			return false
		}
	}
	auths, err := f.core.ListAuths()
	if err != nil {
		return false
	}
	for _, e := range auths {
		if e.Type == "cert" && e.NamespaceID == nsID && strings.HasPrefix(path, "auth/"+e.Path) {
			return true
		}
	}
	return false
}

// certMatches compares the presented certificate with the login's, as
// 2.4.0's cert login wrote it into the token's metadata.
func certMatches(c *x509.Certificate, meta map[string]string) bool {
	return c.SerialNumber != nil && meta["serial_number"] == c.SerialNumber.String() &&
		meta["subject_key_id"] == certutil.GetHexFormatted(c.SubjectKeyId, ":") &&
		meta["authority_key_id"] == certutil.GetHexFormatted(c.AuthorityKeyId, ":")
}

// remoteHost is the request's peer address without its port.
func remoteHost(r *http.Request) string {
	if i := strings.LastIndexByte(r.RemoteAddr, ':'); i > 0 {
		return strings.Trim(r.RemoteAddr[:i], "[]")
	}
	return r.RemoteAddr
}
