package httpapi

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// baoCompat answers the two bao API writes whose meaning multi-unseal
// changes, so `bao operator init` and `bao operator unseal` work against
// the appliance: sys/init enrolls every configured seal mechanism (as
// Node.Init), sys/unseal takes a Shamir share of the seal key (as
// Node.Unseal). sys/seal-status is OpenBao's answer with the appliance's
// Shamir progress in it. Everything else goes to OpenBao.
func (h *API) baoCompat(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /v1/sys/seal-status", h.sealStatusProgress(next))
	for _, m := range []string{"PUT", "POST"} {
		mux.HandleFunc(m+" /v1/sys/init", h.handleBaoInit)
		mux.HandleFunc(m+" /v1/sys/unseal", h.handleBaoUnseal)
		mux.Handle(m+" /v1/sys/seal", h.operatorSeal(next))
		for _, p := range fipsPGPPaths {
			mux.Handle(m+" "+p, fipsNoPGP(next))
		}
	}
	mux.Handle("/", next)
	return mux
}

// operatorSeal passes sys/seal to OpenBao and, if the node is sealed
// afterwards, makes the seal forget its keys and leave the HSM alone until
// a restart: an operator who seals a node means it, and it unseals again
// by Shamir shares only (see Node.OperatorSeal).
func (h *API) operatorSeal(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.n.OperatorSeal(func() { next.ServeHTTP(w, r) })
	})
}

// sealStatusProgress puts the appliance's unseal progress into OpenBao's
// sys/seal-status: shares go to the appliance's seal, never to OpenBao's
// core, whose own progress stays 0 (`bao status` showed operators none of
// their shares). t and n are the Shamir enrollment's, as sys/unseal
// answers them; nothing here asks the HSM.
func (h *API) sealStatusProgress(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{header: http.Header{}, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		var out map[string]any
		if submitted, threshold, shares := h.n.ShamirProgress(); rec.code == http.StatusOK && threshold > 0 && json.Unmarshal(rec.body.Bytes(), &out) == nil {
			if out["sealed"] != true {
				submitted = 0 // as OpenBao: no attempt on an unsealed node
			}
			out["progress"], out["t"] = submitted, threshold
			if shares > 0 {
				out["n"] = shares
			}
			if b, err := json.Marshal(out); err == nil {
				rec.body.Reset()
				rec.body.Write(append(b, '\n'))
			}
		}
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.code)
		w.Write(rec.body.Bytes())
	})
}

func (h *API) handleBaoInit(w http.ResponseWriter, r *http.Request) {
	var req struct {
		SecretShares      int      `json:"secret_shares"`
		SecretThreshold   int      `json:"secret_threshold"`
		PGPKeys           []string `json:"pgp_keys"`
		RecoveryShares    int      `json:"recovery_shares"`
		RecoveryThreshold int      `json:"recovery_threshold"`
		RecoveryPGPKeys   []string `json:"recovery_pgp_keys"`
		RootTokenPGPKey   string   `json:"root_token_pgp_key"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	if req.RootTokenPGPKey != "" {
		writeError(w, http.StatusBadRequest, errors.New("root_token_pgp_key is not supported by the appliance"))
		return
	}
	res, err := h.n.Init(r.Context(), client.InitRequest{
		Shares: req.SecretShares, Threshold: req.SecretThreshold, PGPKeys: req.PGPKeys,
		RecoveryShares: req.RecoveryShares, RecoveryThreshold: req.RecoveryThreshold, RecoveryPGPKeys: req.RecoveryPGPKeys,
	})
	if err != nil {
		writeError(w, h.statusOf(err), err)
		return
	}
	out := map[string]any{
		"keys": hexOf(res.UnsealShares), "keys_base64": nonNil(res.UnsealShares),
		"recovery_keys": hexOf(res.RecoveryKeys), "recovery_keys_base64": nonNil(res.RecoveryKeys),
		"root_token": res.RootToken,
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
}

func (h *API) handleBaoUnseal(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Key     string `json:"key"`
		Reset   bool   `json:"reset"`
		Migrate bool   `json:"migrate"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	switch {
	case req.Migrate:
		writeError(w, http.StatusBadRequest, errors.New("seal migration does not apply: the appliance changes seal mechanisms with `gitlab-secrets-appliance seal`"))
		return
	case req.Reset:
		// bao's `operator unseal -reset` sends no key: refused, as is
		// every reset that does not carry one of the attempt's shares.
		if err := h.n.ResetUnseal(r.Context(), req.Key); err != nil {
			writeError(w, h.statusOf(err), err)
			return
		}
	case req.Key == "":
		writeError(w, http.StatusBadRequest, errors.New("'key' must be specified in request body as JSON, or 'reset' set to true"))
		return
	default:
		release, ok := h.keySlot(w, r)
		if !ok {
			return
		}
		defer release()
		if _, err := h.n.Unseal(r.Context(), req.Key); err != nil {
			writeError(w, h.statusOf(err), err)
			return
		}
	}
	writeJSON(w, http.StatusOK, h.baoSealStatus(r))
}

// baoSealStatus is sys/seal-status's answer, with t, n and progress of
// the Shamir shares of the seal key.
func (h *API) baoSealStatus(r *http.Request) map[string]any {
	st := h.n.Status(r.Context())
	out := map[string]any{
		"type": seal.Type.String(), "initialized": st.Initialized, "sealed": st.Sealed,
		"t": 0, "n": 0, "progress": 0, "nonce": "", "version": st.OpenBaoVersion,
		"migration": false, "recovery_seal": true, "storage_type": "raft",
	}
	for _, m := range st.Seal.Mechanisms {
		if m.Type == seal.MechanismShamir {
			out["t"], out["n"], out["progress"] = m.Threshold, m.Shares, m.Progress
		}
	}
	return out
}

func hexOf(b64 []string) []string {
	out := []string{}
	for _, s := range b64 {
		if b, err := base64.StdEncoding.DecodeString(s); err == nil {
			out = append(out, hex.EncodeToString(b))
		}
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
