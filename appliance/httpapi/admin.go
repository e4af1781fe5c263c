package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// adminPrefix is where the appliance's own endpoints live, beside
// OpenBao's /v1/. They carry what the bao API has no words for
// (multi-unseal, appliance status) and are what the CLI talks to.
const adminPrefix = "/appliance/v1/"

// The appliance API. Responses are JSON; errors are {"errors": ["..."]}
// like OpenBao's, with 400 for a refused request, 409 for a wrong state.
// The types named are package client's (the wire types, and the one
// client of this API).
//
//	GET  /appliance/v1/status  -> Status (no token needed, no secret in it)
//	GET  /appliance/v1/geo/peer -> PeerStatus, what the active node's Geo reconciler polls
//	POST /appliance/v1/geo/promote {"site":"B","dry_run":false} -> PromoteResult; sudo on sys/appliance/geo
//	POST /appliance/v1/init    {"shares":5,"threshold":3} -> InitResult, once
//	POST /appliance/v1/unseal  {"share":"..."} -> UnsealProgress;
//	                           409 on a node a Geo disaster promotion fenced;
//	                           {"reset":true,"share":"..."} discards the attempt
//	                           if the share is one of it (403 otherwise)
//
// Seal changes run on the active node in three steps (see package seal);
// each answers a seal.ChangeStatus. Starting and cancelling need an
// X-Vault-Token with sudo on sys/appliance/seal; the keys are the
// authorization of the other steps:
//
//	POST /appliance/v1/seal/rotate-shares {"shares":5,"threshold":3,"pgp_keys":[...],"authorize_with":"shares"}
//	POST /appliance/v1/seal/add           {"mechanism":"pkcs11"|"shamir", ...}
//	POST /appliance/v1/seal/remove        {"mechanism":"pkcs11"|"shamir"}
//	POST /appliance/v1/seal/rewrap-hsm    {}
//	POST /appliance/v1/seal/authorize     {"nonce":"...","key":"<a current share or recovery key>"} (a recovery key with the token)
//	POST /appliance/v1/seal/verify        {"nonce":"...","share":"<a new share>"}
//	POST /appliance/v1/seal/cancel        {"nonce":"..."}
//	GET  /appliance/v1/seal/change        -> the change in progress (no shares), or {"state":"none"}
//
// The GitLab bootstrap runs with the rights of the caller's token:
//
//	POST /appliance/v1/gitlab/bootstrap -> {"steps":[...]}
//
// A restart (rolling restarts and upgrades) needs sudo on
// sys/appliance/restart; the node answers, stops and exits for its
// supervisor to start it again (409 on the active node of a cluster with
// other voters, or a sealed node):
//
//	POST /appliance/v1/restart -> {"node_id":"...","restarting":true}
func (h *API) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+adminPrefix+"restart", h.handleRestart)
	mux.HandleFunc("GET "+adminPrefix+"status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, h.n.Status(r.Context()))
	})
	mux.HandleFunc("POST "+adminPrefix+"geo/promote", func(w http.ResponseWriter, r *http.Request) {
		var req client.PromoteRequest
		if !readJSON(w, r, &req) {
			return
		}
		res, err := h.n.GeoPromote(r.Context(), r.Header.Get("X-Vault-Token"), req)
		if err == nil {
			writeJSON(w, http.StatusOK, res)
			return
		}
		writeJSON(w, h.statusOf(err), struct {
			Errors []string `json:"errors"`
			client.PromoteResult
		}{[]string{err.Error()}, res})
	})
	mux.HandleFunc("GET "+adminPrefix+"geo/peer", func(w http.ResponseWriter, r *http.Request) {
		ps, err := h.n.GeoPeer(r.Context())
		if err != nil {
			writeError(w, http.StatusNotFound, err)
			return
		}
		writeJSON(w, http.StatusOK, ps)
	})
	mux.HandleFunc("POST "+adminPrefix+"init", func(w http.ResponseWriter, r *http.Request) {
		var req client.InitRequest
		if !readJSON(w, r, &req) {
			return
		}
		res, err := h.n.Init(r.Context(), req)
		if err != nil {
			writeError(w, h.statusOf(err), err)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST "+adminPrefix+"unseal", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Share string `json:"share"`
			Reset bool   `json:"reset"`
		}
		if !readJSON(w, r, &req) {
			return
		}
		if req.Reset {
			if err := h.n.ResetUnseal(r.Context(), req.Share); err != nil {
				writeError(w, h.statusOf(err), err)
				return
			}
			writeJSON(w, http.StatusOK, h.n.UnsealProgress(r.Context()))
			return
		}
		release, ok := h.keySlot(w, r)
		if !ok {
			return
		}
		defer release()
		p, err := h.n.Unseal(r.Context(), req.Share)
		if err != nil {
			writeJSON(w, h.statusOf(err), struct {
				Errors []string `json:"errors"`
				client.UnsealProgress
			}{[]string{err.Error()}, p})
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	for _, op := range []string{"rotate-shares", "add", "remove", "rewrap-hsm"} {
		mux.HandleFunc("POST "+adminPrefix+"seal/"+op, func(w http.ResponseWriter, r *http.Request) {
			var req client.SealChange
			if !readJSON(w, r, &req) {
				return
			}
			st, err := h.n.StartSealChange(r.Context(), r.Header.Get("X-Vault-Token"), op, req)
			h.writeChange(w, st, err)
		})
	}
	// authorize takes a current key ("key"), verify a new share ("share");
	// a recovery key comes with a token (see appliance.ErrRecoveryKeyNeedsToken).
	for step, do := range map[string]func(ctx context.Context, token, nonce, key string) (seal.ChangeStatus, error){
		"authorize": h.n.AuthorizeSealChange,
		"verify": func(ctx context.Context, _, nonce, share string) (seal.ChangeStatus, error) {
			return h.n.VerifySealChange(ctx, nonce, share)
		},
	} {
		mux.HandleFunc("POST "+adminPrefix+"seal/"+step, func(w http.ResponseWriter, r *http.Request) {
			var req struct {
				Nonce string `json:"nonce"`
				Key   string `json:"key"`
				Share string `json:"share"`
			}
			if !readJSON(w, r, &req) {
				return
			}
			release, ok := h.keySlot(w, r)
			if !ok {
				return
			}
			defer release()
			key := req.Key
			if key == "" {
				key = req.Share
			}
			st, err := do(r.Context(), r.Header.Get("X-Vault-Token"), req.Nonce, key)
			h.writeChange(w, st, err)
		})
	}
	mux.HandleFunc("POST "+adminPrefix+"seal/cancel", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Nonce string `json:"nonce"`
		}
		if !readJSON(w, r, &req) {
			return
		}
		if err := h.n.CancelSealChange(r.Context(), r.Header.Get("X-Vault-Token"), req.Nonce); err != nil {
			h.writeChange(w, seal.ChangeStatus{}, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"state": "cancelled"})
	})
	mux.HandleFunc("GET "+adminPrefix+"seal/change", func(w http.ResponseWriter, r *http.Request) {
		if st := h.n.PendingSealChange(); st != nil {
			writeJSON(w, http.StatusOK, st)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"state": "none"})
	})
	mux.HandleFunc("POST "+adminPrefix+"gitlab/bootstrap", func(w http.ResponseWriter, r *http.Request) {
		steps, err := h.n.BootstrapGitLab(r.Context(), r.Header.Get("X-Vault-Token"))
		if err != nil {
			writeError(w, h.bootstrapStatusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"steps": steps})
	})
	return mux
}

// writeChange answers a seal change step: the status (with the new shares,
// in the one answer that has them), or the error with the progress so far.
func (h *API) writeChange(w http.ResponseWriter, st seal.ChangeStatus, err error) {
	w.Header().Set("Cache-Control", "no-store")
	if err == nil {
		writeJSON(w, http.StatusOK, st)
		return
	}
	writeJSON(w, h.statusOf(err), struct {
		Errors []string `json:"errors"`
		seal.ChangeStatus
	}{[]string{err.Error()}, st})
}

// maxKeyAttempts bounds the unseal, authorize and verify attempts that
// run at once (after their bodies were read), so that a flood of them
// cannot crowd out the operators'; keyWait is how long one waits for a
// slot before it is told to retry.
const (
	maxKeyAttempts = 4
	keyWait        = 2 * time.Second
)

// keySlot takes a key attempt slot, or answers 503 with Retry-After.
func (h *API) keySlot(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	t := time.NewTimer(keyWait)
	defer t.Stop()
	select {
	case h.keySlots <- struct{}{}:
		return func() { <-h.keySlots }, true
	case <-t.C:
	case <-r.Context().Done():
	}
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, errors.New("too many unseal or seal change attempts at once: retry in a moment"))
	return nil, false
}

// WriteError answers err with code as the appliance's endpoints do:
// {"errors": ["..."]}, OpenBao's form.
func WriteError(w http.ResponseWriter, code int, err error) { writeError(w, code, err) }

func (h *API) handleRestart(w http.ResponseWriter, r *http.Request) {
	var req client.RestartRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("the request body is not a restart request (%v): send {} or {\"hand_over\": true}", err))
		return
	}
	handed, err := h.n.RequestRestart(r.Context(), r.Header.Get("X-Vault-Token"), req.HandOver)
	switch code := h.errs.restartStatusOf(err); {
	case err == nil:
		writeJSON(w, http.StatusOK, client.RestartResponse{NodeID: h.nodeID, Restarting: true, HandedOver: handed})
	case code != 0:
		writeError(w, code, err)
	default:
		w.Header().Set("Retry-After", "2")
		writeError(w, http.StatusServiceUnavailable, err)
	}
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err == nil && len(body) > 0 {
		err = json.Unmarshal(body, v)
	}
	if err != nil {
		// The body may hold a share: never echo it.
		writeError(w, http.StatusBadRequest, errors.New("the request body is not the JSON this endpoint takes"))
		return false
	}
	return true
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string][]string{"errors": {err.Error()}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
