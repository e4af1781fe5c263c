package appliance

import (
	"context"
	"errors"
	"fmt"

	"github.com/openbao/openbao/helper/namespace"
	"github.com/openbao/openbao/sdk/v2/logical"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/fips"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// SealPolicyPath is the ACL path that guards starting and cancelling seal
// changes: a token needs the sudo capability on it (root tokens have it).
// A token alone never changes the seal.
const SealPolicyPath = "sys/appliance/seal"

// Errors of seal changes.
var (
	ErrNotActive    = errors.New("seal changes run on the active node: send the command to the leader (see `status`)")
	ErrUnauthorized = errors.New("permission denied: the token needs the sudo capability on " + SealPolicyPath)
)

// StartSealChange checks token and begins the change named by op
// (rotate-shares, add, remove, rewrap-hsm). Nothing changes until a quorum
// authorizes it.
func (a *Appliance) StartSealChange(ctx context.Context, token, op string, c client.SealChange) (seal.ChangeStatus, error) {
	auth, err := a.authorizeSealChange(ctx, token)
	a.audit(ctx, "sys/appliance/seal/"+op, auth, map[string]any{"mechanism": c.Mechanism, "shares": c.Shares, "threshold": c.Threshold, "authorize_with": c.AuthorizeWith}, nil, err)
	if err != nil {
		return seal.ChangeStatus{}, err
	}
	if a.state() != client.StateActive {
		return seal.ChangeStatus{}, ErrNotActive
	}
	req, err := a.changeRequest(ctx, op, c)
	if err != nil {
		return seal.ChangeStatus{}, err
	}
	req.RequestedBy = auth.DisplayName
	st, err := a.seal.StartChange(ctx, req, a.recoveryQuorum(ctx))
	a.audit(ctx, "sys/appliance/seal/"+op, auth, nil, &st, err)
	return st, err
}

// ErrRecoveryKeyNeedsToken refuses a recovery key submitted without a
// token with sudo on SealPolicyPath. A share is checked on its own (the
// header lists the digests of the shares it issued), so a forged one
// changes nothing; a recovery key can only be checked with a quorum of
// them, and a wrong one among them discards the holders' progress: so
// whoever submits one must hold the token that may start the change.
var ErrRecoveryKeyNeedsToken = fmt.Errorf("%w: recovery keys cannot be checked one by one, so each one submitted for a seal change comes with that token", ErrUnauthorized)

// AuthorizeSealChange submits one current share or recovery key for the
// change named by nonce. Once the quorum is in, the answer carries the new
// shares (the only time they are shown), or the change is committed. A
// change authorized by recovery keys also takes token (see
// ErrRecoveryKeyNeedsToken); one authorized by shares ignores it.
func (a *Appliance) AuthorizeSealChange(ctx context.Context, token, nonce, key string) (seal.ChangeStatus, error) {
	if a.state() != client.StateActive {
		return seal.ChangeStatus{}, ErrNotActive
	}
	var auth *logical.Auth
	if p := a.seal.PendingChange(); p != nil && p.AuthorizeWith == seal.AuthorizeRecoveryKeys {
		var err error
		if auth, err = a.authorizeSudo(ctx, token, SealPolicyPath, ErrRecoveryKeyNeedsToken); err != nil {
			a.audit(ctx, "sys/appliance/seal/authorize", auth, nil, nil, err)
			return seal.ChangeStatus{}, err
		}
	}
	st, err := a.seal.AuthorizeChange(ctx, nonce, key)
	a.audit(ctx, "sys/appliance/seal/authorize", auth, nil, &st, err)
	return st, err
}

// VerifySealChange gives one of the new shares back. Once a quorum of
// them is in, the change is committed.
func (a *Appliance) VerifySealChange(ctx context.Context, nonce, share string) (seal.ChangeStatus, error) {
	if a.state() != client.StateActive {
		return seal.ChangeStatus{}, ErrNotActive
	}
	st, err := a.seal.VerifyChange(ctx, nonce, share)
	a.audit(ctx, "sys/appliance/seal/verify", nil, nil, &st, err)
	return st, err
}

// CancelSealChange ends the change in progress; nothing changes.
func (a *Appliance) CancelSealChange(ctx context.Context, token, nonce string) error {
	auth, err := a.authorizeSealChange(ctx, token)
	if err == nil {
		err = a.seal.CancelChange(nonce)
	}
	a.audit(ctx, "sys/appliance/seal/cancel", auth, nil, nil, err)
	return err
}

// PendingSealChange is the seal change in progress on this node, or nil.
func (a *Appliance) PendingSealChange() *seal.ChangeStatus { return a.seal.PendingChange() }

// changeRequest turns an API request into the seal's, with the config's
// split where none is given. Out-of-range numbers are refused by name.
func (a *Appliance) changeRequest(ctx context.Context, op string, c client.SealChange) (seal.ChangeRequest, error) {
	req := seal.ChangeRequest{PGPKeys: c.PGPKeys, AuthorizeWith: c.AuthorizeWith}
	if err := fips.CheckPGP("pgp_keys", c.PGPKeys); err != nil {
		return req, err
	}
	switch {
	case op == "rotate-shares":
		req.Operation = seal.RotateShares
	case op == "rewrap-hsm":
		req.Operation = seal.RewrapHSM
	case op == "add" && c.Mechanism == seal.MechanismPKCS11:
		req.Operation = seal.AddHSM
	case op == "add" && c.Mechanism == seal.MechanismShamir:
		req.Operation = seal.AddShamir
	case op == "remove" && c.Mechanism == seal.MechanismPKCS11:
		req.Operation = seal.RemoveHSM
	case op == "remove" && c.Mechanism == seal.MechanismShamir:
		req.Operation = seal.RemoveShamir
	case op == "add" || op == "remove":
		return req, fmt.Errorf("unknown mechanism %q: use pkcs11 or shamir", c.Mechanism)
	default:
		return req, fmt.Errorf("unknown seal change %q", op)
	}
	if c.Shares < 0 || c.Shares > 255 {
		return req, fmt.Errorf("shares %d: use 1 to 255 (0 takes the config's seal.shamir.shares)", c.Shares)
	}
	if c.Threshold < 0 {
		return req, fmt.Errorf("threshold %d: use 1 or more (0 takes the config's seal.shamir.threshold)", c.Threshold)
	}
	switch req.Operation {
	case seal.RotateShares, seal.AddShamir, seal.RemoveHSM:
		n, t := config.DefaultShamirShares, config.DefaultShamirThreshold
		if sh := a.cfg.Seal.Shamir; sh != nil {
			n, t = sh.Shares, sh.Threshold
		}
		if req.Operation == seal.RemoveHSM {
			// Removing the HSM keeps the cluster's split by default.
			for _, m := range a.seal.Status(ctx, false).Mechanisms {
				if m.Type == seal.MechanismShamir && m.Enrolled {
					n, t = m.Shares, m.Threshold
				}
			}
		}
		if c.Shares != 0 {
			n = c.Shares
			if c.Threshold == 0 {
				t = min(t, n)
			}
		}
		if c.Threshold != 0 {
			t = c.Threshold
		}
		req.Shares, req.Threshold = n, t
	}
	return req, nil
}

// recoveryQuorum lets OpenBao's recovery keys authorize a seal change.
func (a *Appliance) recoveryQuorum(ctx context.Context) *seal.RecoveryKeys {
	cfg, err := a.barrier.RecoveryConfig(ctx)
	if err != nil || cfg == nil || cfg.SecretThreshold < 1 {
		return nil
	}
	return &seal.RecoveryKeys{Threshold: cfg.SecretThreshold, Verify: a.barrier.VerifyRecoveryKey}
}

// authorizeSealChange checks that token has sudo on SealPolicyPath.
func (a *Appliance) authorizeSealChange(ctx context.Context, token string) (*logical.Auth, error) {
	return a.authorizeSudo(ctx, token, SealPolicyPath, ErrUnauthorized)
}

// audit records a seal operation in OpenBao's audit devices, like any
// request: the token HMACed, never a share or key (st is logged without
// its shares).
func (a *Appliance) audit(ctx context.Context, path string, auth *logical.Auth, data map[string]any, st *seal.ChangeStatus, opErr error) {
	var resp map[string]any
	if st != nil {
		resp = map[string]any{
			"operation": string(st.Operation), "state": st.State, "progress": st.Progress, "threshold": st.Threshold,
			"generation": st.Generation, "new_generation": st.NewGeneration, "new_shares": len(st.Shares),
			"mechanisms": st.Mechanisms, "requested_by": st.RequestedBy,
		}
	}
	a.auditOp(ctx, path, auth, data, resp, opErr)
}

// auditOp records an appliance operation (a seal change, a Geo
// switchover) in OpenBao's audit devices like any request, the token
// HMACed: the request with data, or its response with resp if not nil.
func (a *Appliance) auditOp(ctx context.Context, path string, auth *logical.Auth, data, resp map[string]any, opErr error) {
	ctx = namespace.RootContext(ctx)
	req := &logical.Request{Operation: logical.UpdateOperation, Path: path, Data: data}
	if auth != nil {
		req.ClientToken, req.ClientTokenAccessor = auth.ClientToken, auth.Accessor
	}
	in := &logical.LogInput{Request: req, Auth: auth, OuterErr: opErr}
	if resp == nil {
		if err := a.core.AuditLogger().AuditRequest(ctx, in); err != nil {
			a.logger.Error("audit log of an appliance operation failed", "path", path, "error", err)
		}
		return
	}
	in.Response = &logical.Response{Data: resp}
	if err := a.core.AuditLogger().AuditResponse(ctx, in); err != nil {
		a.logger.Error("audit log of an appliance operation failed", "path", path, "error", err)
	}
}
