package appliance

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/openbao/openbao/helper/namespace"
	"github.com/openbao/openbao/vault"
)

// InitRequest says how to split the root key at init. Zero values take the
// config's seal.shamir defaults.
type InitRequest struct {
	Shares    int `json:"shares"`
	Threshold int `json:"threshold"`
}

// InitResult is handed out exactly once, at init. Shares are the operators'
// unseal shares (base64); RootToken is the initial root token.
type InitResult struct {
	Shares    []string `json:"unseal_shares"`
	Threshold int      `json:"unseal_threshold"`
	RootToken string   `json:"root_token"`
}

// Init initializes a new cluster on this node: it creates the barrier, the
// root key and its Shamir shares, and bootstraps Raft with this node as
// the only voter. The node stays sealed.
func (a *Appliance) Init(ctx context.Context, req InitRequest) (*InitResult, error) {
	if req.Shares == 0 {
		req.Shares = a.cfg.Seal.Shamir.Shares
	}
	if req.Threshold == 0 {
		req.Threshold = min(a.cfg.Seal.Shamir.Threshold, req.Shares)
	}
	if req.Shares < 1 || req.Shares > 255 || req.Threshold < 1 || req.Threshold > req.Shares {
		return nil, fmt.Errorf("invalid share split %d of %d: use 1 <= threshold <= shares <= 255", req.Threshold, req.Shares)
	}
	if req.Shares > 1 && req.Threshold == 1 {
		return nil, fmt.Errorf("threshold 1 of %d shares would let any single share unseal: use a threshold of at least 2", req.Shares)
	}
	inited, err := a.core.Initialized(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot read the cluster's state: %w", err)
	}
	if inited {
		return nil, ErrAlreadyInitialized
	}
	ctx = namespace.RootContext(ctx)
	res, err := a.core.Initialize(ctx, &vault.InitParams{
		BarrierConfig: &vault.SealConfig{
			Type:            "shamir",
			SecretShares:    req.Shares,
			SecretThreshold: req.Threshold,
			StoredShares:    1,
		},
	})
	if err != nil {
		if strings.Contains(err.Error(), "already initialized") {
			return nil, ErrAlreadyInitialized
		}
		return nil, fmt.Errorf("init failed: %w", err)
	}
	out := &InitResult{Threshold: req.Threshold, RootToken: res.RootToken}
	for _, s := range res.SecretShares {
		out.Shares = append(out.Shares, base64.StdEncoding.EncodeToString(s))
	}
	a.logger.Info("cluster initialized", "shares", req.Shares, "threshold", req.Threshold)
	return out, nil
}

// Errors from Unseal. Each says what to do; none carries the share.
var (
	ErrMalformedShare = errors.New("the share is malformed: paste it exactly as init printed it (base64 or hex)")
	ErrDuplicateShare = errors.New("this share was already submitted in this unseal attempt: submit a different operator's share")
	ErrWrongShares    = errors.New("the submitted shares do not unseal this cluster: one is wrong, corrupted or from another cluster; progress was reset, start again with correct shares")
)

// UnsealProgress is where an unseal attempt stands after a share.
type UnsealProgress struct {
	Sealed    bool `json:"sealed"`
	Progress  int  `json:"progress"`
	Threshold int  `json:"threshold"`
}

// Unseal submits one operator share. A wrong, malformed or duplicate share
// is refused with its own error and changes nothing but, for a wrong share
// that completes the threshold, the progress (which starts over).
func (a *Appliance) Unseal(ctx context.Context, share string) (UnsealProgress, error) {
	key, err := decodeShare(share)
	if err != nil {
		return a.unsealProgress(ctx), err
	}
	if !a.core.Sealed() {
		return a.unsealProgress(ctx), nil
	}
	inited, err := a.core.Initialized(ctx)
	if err != nil {
		return UnsealProgress{Sealed: true}, fmt.Errorf("cannot read the cluster's state: %w", err)
	}
	if !inited {
		return UnsealProgress{Sealed: true}, ErrNotInitialized
	}
	before, _ := a.core.SecretProgress(true)
	unsealed, err := a.core.Unseal(key)
	if err != nil {
		var ik *vault.ErrInvalidKey
		msg := err.Error()
		switch {
		case errors.As(err, &ik) && (strings.Contains(msg, "shorter than") || strings.Contains(msg, "longer than")):
			return a.unsealProgress(ctx), ErrMalformedShare
		case errors.As(err, &ik), strings.Contains(msg, "message authentication failed"),
			strings.Contains(msg, "decrypt"), strings.Contains(msg, "stored keys"):
			// The core has dropped the submitted shares already.
			a.logger.Warn("unseal failed: the combined shares did not open the root key; progress reset")
			return a.unsealProgress(ctx), ErrWrongShares
		}
		return a.unsealProgress(ctx), fmt.Errorf("unseal failed: %w", err)
	}
	p := a.unsealProgress(ctx)
	if !unsealed && p.Progress == before {
		return p, ErrDuplicateShare
	}
	if unsealed {
		a.logger.Info("unsealed with operator shares")
	}
	return p, nil
}

// ResetUnseal discards the shares submitted so far.
func (a *Appliance) ResetUnseal() { a.core.ResetUnsealProcess() }

func (a *Appliance) unsealProgress(ctx context.Context) UnsealProgress {
	p := UnsealProgress{Sealed: a.core.Sealed()}
	if p.Sealed {
		p.Progress, _ = a.core.SecretProgress(true)
	}
	if conf, err := a.core.SealAccess().BarrierConfig(ctx); err == nil && conf != nil {
		p.Threshold = conf.SecretThreshold
	}
	return p
}

// decodeShare accepts a share as init printed it (base64) or in hex, as
// the bao CLI does.
func decodeShare(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, ErrMalformedShare
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	if b, err := hex.DecodeString(s); err == nil {
		return b, nil
	}
	return nil, ErrMalformedShare
}

// WaitUnsealed polls until the node is unsealed and knows its role
// (active or standby), or ctx ends.
func (a *Appliance) WaitUnsealed(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if !a.core.Sealed() {
			if st := a.Status(ctx); st.State == StateActive || st.State == StateStandby {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the node to unseal: %w", ctx.Err())
		case <-t.C:
		}
	}
}
