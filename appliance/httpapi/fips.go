package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/fips"
)

// fipsNoPGP guards OpenBao's own endpoints that encrypt to PGP keys
// (generate-root's pgp_key, rekey's pgp_keys) in FIPS mode: a request that
// names PGP keys is refused with 400, any other passes to next unchanged.
func fipsNoPGP(next http.Handler) http.Handler {
	if !fips.Enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("reading the request: %w", err))
			return
		}
		var req struct {
			PGPKey  string   `json:"pgp_key"`
			PGPKeys []string `json:"pgp_keys"`
		}
		json.Unmarshal(body, &req) // what does not parse, OpenBao refuses itself
		err = fips.CheckPGP("pgp_keys", req.PGPKeys)
		if req.PGPKey != "" {
			err = fips.CheckPGP("pgp_key", []string{req.PGPKey})
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

// fipsPGPPaths are OpenBao's endpoints fipsNoPGP guards.
var fipsPGPPaths = []string{
	"/v1/sys/generate-root",
	"/v1/sys/generate-root/attempt",
	"/v1/sys/generate-recovery-token/attempt",
	"/v1/sys/rekey/init",
	"/v1/sys/rekey-recovery-key/init",
	"/v1/sys/rotate/root/init",
	"/v1/sys/rotate/recovery/init",
}
