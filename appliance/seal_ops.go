package appliance

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/openbao/openbao/helper/namespace"
	"github.com/openbao/openbao/sdk/v2/logical"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// SealChange asks for a change of the seal mechanisms.
type SealChange struct {
	Mechanism string   `json:"mechanism,omitempty"` // pkcs11 or shamir (add, remove)
	Shares    int      `json:"shares,omitempty"`    // new shares (rotate-shares, add shamir)
	Threshold int      `json:"threshold,omitempty"`
	PGPKeys   []string `json:"pgp_keys,omitempty"`
}

// SealChangeResult is what a change leaves: the enrolled mechanisms and,
// when new shares were made, the shares (shown once, like at init).
type SealChangeResult struct {
	Mechanisms      []string `json:"mechanisms"`
	Generation      uint32   `json:"generation"`
	UnsealShares    []string `json:"unseal_shares,omitempty"`
	UnsealThreshold int      `json:"unseal_threshold,omitempty"`
}

// SealPolicyPath is the ACL path that guards seal changes: a token needs
// the sudo capability on it (root tokens have it).
const SealPolicyPath = "sys/appliance/seal"

// Errors of seal changes.
var (
	ErrNotActive    = errors.New("seal changes run on the active node: send the command to the leader (see `status`)")
	ErrUnauthorized = errors.New("permission denied: the token needs the sudo capability on " + SealPolicyPath)
)

// RotateShares replaces the seal key and issues new Shamir shares; every
// earlier share is void. An enrolled HSM wraps the new key.
func (a *Appliance) RotateShares(ctx context.Context, c SealChange) (*SealChangeResult, error) {
	n, t := a.shareSplit(c)
	return a.changeSeal(ctx, func() ([]string, error) {
		return a.seal.RotateShares(ctx, n, t, c.PGPKeys, a.persistSeal)
	})
}

// AddMechanism enrolls pkcs11 (this node's configured HSM wraps the seal
// key) or shamir (new shares of the seal key).
func (a *Appliance) AddMechanism(ctx context.Context, c SealChange) (*SealChangeResult, error) {
	switch c.Mechanism {
	case seal.MechanismPKCS11:
		return a.changeSeal(ctx, func() ([]string, error) { return nil, a.seal.AddHSM(ctx, a.persistSeal) })
	case seal.MechanismShamir:
		n, t := a.shareSplit(c)
		return a.changeSeal(ctx, func() ([]string, error) { return a.seal.AddShamir(ctx, n, t, c.PGPKeys, a.persistSeal) })
	}
	return nil, fmt.Errorf("unknown mechanism %q: use pkcs11 or shamir", c.Mechanism)
}

// RemoveMechanism stops a mechanism from opening the cluster: the seal key
// is replaced, so what was removed opens nothing current. Removing the
// HSM issues new shares; the last mechanism cannot be removed.
func (a *Appliance) RemoveMechanism(ctx context.Context, c SealChange) (*SealChangeResult, error) {
	switch c.Mechanism {
	case seal.MechanismPKCS11:
		return a.changeSeal(ctx, func() ([]string, error) { return a.seal.RemoveHSM(ctx, c.PGPKeys, a.persistSeal) })
	case seal.MechanismShamir:
		return a.changeSeal(ctx, func() ([]string, error) { return nil, a.seal.RemoveShamir(ctx, a.persistSeal) })
	}
	return nil, fmt.Errorf("unknown mechanism %q: use pkcs11 or shamir", c.Mechanism)
}

// RewrapHSM wraps the seal key with the HSM key this node's config names
// now (after an HSM key change: new key_label, restart, rewrap).
func (a *Appliance) RewrapHSM(ctx context.Context) (*SealChangeResult, error) {
	return a.changeSeal(ctx, func() ([]string, error) { return nil, a.seal.AddHSM(ctx, a.persistSeal) })
}

func (a *Appliance) shareSplit(c SealChange) (int, int) {
	n, t := c.Shares, c.Threshold
	if n == 0 {
		n = DefaultShamirShares
		if a.cfg.Seal.Shamir != nil {
			n = a.cfg.Seal.Shamir.Shares
		}
	}
	if t == 0 {
		t = DefaultShamirThreshold
		if a.cfg.Seal.Shamir != nil {
			t = a.cfg.Seal.Shamir.Threshold
		}
		t = min(t, n)
	}
	return n, t
}

func (a *Appliance) changeSeal(ctx context.Context, change func() ([]string, error)) (*SealChangeResult, error) {
	if a.state() != StateActive {
		return nil, ErrNotActive
	}
	shares, err := change()
	if err != nil {
		return nil, err
	}
	st := a.seal.Status(ctx, false)
	res := &SealChangeResult{UnsealShares: shares, Generation: st.Generation}
	for _, m := range st.Mechanisms {
		if m.Enrolled {
			res.Mechanisms = append(res.Mechanisms, m.Type)
			if m.Type == seal.MechanismShamir && len(shares) > 0 {
				res.UnsealThreshold = m.Threshold
			}
		}
	}
	return res, nil
}

// authorizeSealChange checks that token may change the seal: sudo on
// SealPolicyPath, as OpenBao's own root-protected endpoints demand.
func (a *Appliance) authorizeSealChange(ctx context.Context, token string) error {
	if token == "" {
		return ErrUnauthorized
	}
	resp, err := a.core.HandleRequest(namespace.RootContext(ctx), &logical.Request{
		Operation:   logical.UpdateOperation,
		Path:        "sys/capabilities-self",
		ClientToken: token,
		Data:        map[string]interface{}{"paths": []string{SealPolicyPath}},
	})
	if err != nil || resp == nil || resp.IsError() {
		return ErrUnauthorized
	}
	caps, _ := resp.Data[SealPolicyPath].([]string)
	if slices.Contains(caps, "root") || slices.Contains(caps, "sudo") {
		return nil
	}
	return ErrUnauthorized
}
