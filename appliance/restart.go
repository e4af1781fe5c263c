package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	vaulthttp "github.com/openbao/openbao/http"
	"github.com/openbao/openbao/vault"
)

// A restart is asked of one node over its API (a rolling restart or
// upgrade asks each node in turn): the node answers, then stops as on
// SIGTERM, and the process exits with a code of its own (see the CLI's
// exit codes) so that its supervisor (systemd's Restart=, runit) starts it
// again, on the binary now installed. It comes back sealed: the HSM
// unseals it, or it waits for shares.

// RestartPolicyPath is where a token needs sudo to restart a node.
const RestartPolicyPath = "sys/appliance/restart"

var (
	// ErrRestartUnauthorized refuses a restart without the right token.
	ErrRestartUnauthorized = errors.New("permission denied: the token needs the sudo capability on " + RestartPolicyPath)
	// ErrRestartActive refuses to restart the active node of a cluster
	// with other voters: its leadership goes first.
	ErrRestartActive = errors.New("this is the active node: move the leadership first (sys/step-down), or let `gitlab-secrets-appliance rolling-restart` do it")
	// ErrRestartSealed refuses a restart a sealed node cannot authorize.
	ErrRestartSealed = errors.New("this node is sealed and cannot check a token: restart it with its supervisor (systemctl restart gitlab-secrets-appliance, gitlab-ctl restart gitlab-secrets-appliance)")
)

// RestartRequested is closed once an authorized restart was asked for:
// the caller stops the node (the answer goes out first: Close waits for
// requests in flight) and exits for its supervisor to start it.
func (a *Appliance) RestartRequested() <-chan struct{} { return a.restart }

// requestRestart authorizes token and, if allowed, asks for the restart.
// OpenBao checks the token: on a standby the check is forwarded to the
// active node, as any request with a token.
func (a *Appliance) requestRestart(ctx context.Context, token string) error {
	if a.core.Sealed() {
		return ErrRestartSealed
	}
	caps, err := a.capabilitiesSelf(ctx, token, RestartPolicyPath)
	if err != nil {
		return err
	}
	if !slices.Contains(caps, "root") && !slices.Contains(caps, "sudo") {
		return ErrRestartUnauthorized
	}
	if a.state() == StateActive && !a.leaders.soleVoter.Load() {
		return ErrRestartActive
	}
	a.restartOnce.Do(func() {
		a.logger.Info("restart asked for: stopping; the supervisor starts the node again")
		close(a.restart)
	})
	return nil
}

// capabilitiesSelf asks OpenBao, through its HTTP handler (so that a
// standby forwards it), what token may do on path.
func (a *Appliance) capabilitiesSelf(ctx context.Context, token, path string) ([]string, error) {
	if token == "" {
		return nil, ErrRestartUnauthorized
	}
	body, _ := json.Marshal(map[string]any{"paths": []string{path}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://appliance.internal/v1/sys/capabilities-self", strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	req.RemoteAddr, req.RequestURI = "127.0.0.1:0", "/v1/sys/capabilities-self"
	req.Header.Set("X-Vault-Token", token)
	req.Header.Set("Content-Type", "application/json")
	rec := &recorder{header: http.Header{}, code: http.StatusOK}
	vaulthttp.Handler.Handler(&vault.HandlerProperties{Core: a.core}).ServeHTTP(rec, req)
	if rec.code == http.StatusForbidden || rec.code == http.StatusBadRequest {
		return nil, ErrRestartUnauthorized
	}
	if rec.code != http.StatusOK {
		return nil, errors.New("the token could not be checked now (" + http.StatusText(rec.code) + "): try again in a moment")
	}
	var out struct {
		Data map[string][]string `json:"data"`
	}
	if err := json.Unmarshal(rec.body.Bytes(), &out); err != nil {
		return nil, err
	}
	return out.Data[path], nil
}

func (a *Appliance) handleRestart(w http.ResponseWriter, r *http.Request) {
	err := a.requestRestart(r.Context(), r.Header.Get("X-Vault-Token"))
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, map[string]any{"node_id": a.cfg.NodeID, "restarting": true})
	case errors.Is(err, ErrRestartUnauthorized):
		writeError(w, http.StatusForbidden, err)
	case errors.Is(err, ErrRestartActive), errors.Is(err, ErrRestartSealed):
		writeError(w, http.StatusConflict, err)
	default:
		w.Header().Set("Retry-After", "2")
		writeError(w, http.StatusServiceUnavailable, err)
	}
}
