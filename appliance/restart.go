package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"time"

	vaulthttp "github.com/openbao/openbao/http"
	"github.com/openbao/openbao/vault"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
)

// A restart is asked of one node over its API (a rolling restart or
// upgrade asks each node in turn): the node answers, then stops as on
// SIGTERM, and the process exits with a code of its own (see the CLI's
// exit codes) so that its supervisor (systemd's Restart=, runit) starts it
// again, on the binary now installed. It comes back sealed: the HSM
// unseals it, or it waits for shares.
//
// The active node of a cluster with other voters refuses, unless the
// request asks it to hand its leadership over first (hand_over): it then
// uses hashicorp/raft's leadership transfer, not sys/step-down. After a
// step-down OpenBao's core sleeps 10 s before it contends again
// (vault.manualStepDownSleepPeriod), and that sleep cannot be
// interrupted: the node's stop (its seal waits for the standby loop) took
// the rest of those 10 s. After a lost leadership the loop sleeps 1 s.

// RestartPolicyPath is where a token needs sudo to restart a node.
const RestartPolicyPath = "sys/appliance/restart"

var (
	// ErrRestartUnauthorized refuses a restart without the right token.
	ErrRestartUnauthorized = errors.New("permission denied: the token needs the sudo capability on " + RestartPolicyPath)
	// ErrRestartActive refuses to restart the active node of a cluster
	// with other voters: its leadership goes first.
	ErrRestartActive = errors.New("this is the active node: ask with {\"hand_over\": true} (it hands its leadership over first), or let `gitlab-secrets-appliance rolling-restart` do it")
	// ErrRestartSealed refuses a restart a sealed node cannot authorize.
	ErrRestartSealed = errors.New("this node is sealed and cannot check a token: restart it with its supervisor (systemctl restart gitlab-secrets-appliance, gitlab-ctl restart gitlab-secrets-appliance)")
)

// handOverTimeout bounds a hand-over: hashicorp/raft gives the transfer
// one election timeout, then the new leader's core takes the HA lock.
const handOverTimeout = 30 * time.Second

// RestartRequested is closed once an authorized restart was asked for:
// the caller stops the node (the answer goes out first: Close waits for
// requests in flight) and exits for its supervisor to start it.
func (a *Appliance) RestartRequested() <-chan struct{} { return a.restart }

// requestRestart authorizes token and, if allowed, asks for the restart.
// OpenBao checks the token: on a standby the check is forwarded to the
// active node, as any request with a token.
func (a *Appliance) requestRestart(ctx context.Context, token string, handOver bool) (handedOver bool, err error) {
	if a.core.Sealed() {
		return false, ErrRestartSealed
	}
	caps, err := a.capabilitiesSelf(ctx, token, RestartPolicyPath)
	if err != nil {
		return false, err
	}
	if !slices.Contains(caps, "root") && !slices.Contains(caps, "sudo") {
		return false, ErrRestartUnauthorized
	}
	if a.state() == client.StateActive && !a.leaders.SoleVoter() {
		if !handOver {
			return false, ErrRestartActive
		}
		if err := a.handOver(ctx); err != nil {
			return false, err
		}
		handedOver = true
	}
	a.restartOnce.Do(func() {
		a.logger.Info("restart asked for: stopping; the supervisor starts the node again")
		close(a.restart)
	})
	return handedOver, nil
}

// handOver moves the leadership off this node with hashicorp/raft's
// transfer (to the most caught-up voter) and waits until this node's
// core stands by and knows the new active node: writes go on there
// while this node stops.
func (a *Appliance) handOver(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, handOverTimeout)
	defer cancel()
	r := a.raftH.Current()
	if r == nil {
		return errors.New("handing the leadership over: Raft is not running: try again in a moment")
	}
	a.logger.Info("restart asked for on the active node: handing the leadership over (Raft leadership transfer)")
	done := make(chan error, 1)
	go func() { done <- r.LeadershipTransfer().Error() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("handing the leadership over: %v: try again in a moment", err)
		}
	case <-ctx.Done():
		return errors.New("handing the leadership over: the Raft transfer did not end in time: try again in a moment")
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for a.state() != client.StateStandby {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return errors.New("the leadership moved, but no other node became the active node in time: try again in a moment")
		}
	}
	_, leader, _, _ := a.core.Leader()
	a.logger.Info("leadership handed over", "active_node", leader)
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
	rec := httptest.NewRecorder()
	vaulthttp.Handler.Handler(&vault.HandlerProperties{Core: a.core}).ServeHTTP(rec, req)
	if rec.Code == http.StatusForbidden || rec.Code == http.StatusBadRequest {
		return nil, ErrRestartUnauthorized
	}
	if rec.Code != http.StatusOK {
		return nil, errors.New("the token could not be checked now (" + http.StatusText(rec.Code) + "): try again in a moment")
	}
	var out struct {
		Data map[string][]string `json:"data"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		return nil, err
	}
	return out.Data[path], nil
}
