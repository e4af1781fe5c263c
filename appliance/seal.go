package appliance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	wrapping "github.com/openbao/go-kms-wrapping/v2"
	"github.com/openbao/openbao/vault"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
	"google.golang.org/protobuf/proto"
)

// newSeal builds the multi-unseal seal from the config: this node's HSM
// access (PIN read now, never kept in the config) and a view of the
// cluster's stored keys in local storage.
func (a *Appliance) newSeal() error {
	opts := seal.Options{Logger: a.logger.Named("seal"), StoredHeader: a.storedSealHeader}
	if p := a.cfg.Seal.PKCS11; p != nil {
		pin, err := readPIN(p)
		if err != nil {
			return err
		}
		opts.HSM = &seal.PKCS11Config{Library: p.Library, TokenLabel: p.TokenLabel, PIN: pin, KeyLabel: p.KeyLabel}
		if p.Slot != nil {
			slot := uint(*p.Slot)
			opts.HSM.Slot = &slot
		}
	}
	a.seal = seal.New(opts)
	return nil
}

func readPIN(p *PKCS11Seal) (string, error) {
	if p.PINEnv != "" {
		pin := os.Getenv(p.PINEnv)
		if pin == "" {
			return "", fmt.Errorf("seal.pkcs11.pin_env: the variable %s is not set or empty", p.PINEnv)
		}
		return pin, nil
	}
	b, err := os.ReadFile(p.PINFile)
	if err != nil {
		return "", fmt.Errorf("seal.pkcs11.pin_file: cannot read %s: %w", p.PINFile, unwrapPathError(err))
	}
	pin := strings.TrimRight(string(b), "\r\n")
	if pin == "" {
		return "", fmt.Errorf("seal.pkcs11.pin_file: %s is empty", p.PINFile)
	}
	return pin, nil
}

// storedSealHeader reads the seal header of OpenBao's stored keys from
// local Raft storage (readable while sealed); nil if there are none yet.
func (a *Appliance) storedSealHeader(ctx context.Context) ([]byte, error) {
	e, err := a.raft.Get(ctx, vault.StoredBarrierKeysPath)
	if err != nil || e == nil {
		return nil, err
	}
	blob := &wrapping.BlobInfo{}
	if err := proto.Unmarshal(e.Value, blob); err != nil || blob.KeyInfo == nil {
		return nil, errors.New("the stored keys are not a seal blob")
	}
	return blob.KeyInfo.WrappedKey, nil
}

// unsealRetry is how often a sealed node tries again by itself: the HSM
// may come back, a joining node may have received its storage.
const unsealRetry = 2 * time.Second

// unsealLoop unseals the node with the seal's key as soon as it can: at
// start by the HSM, after init with the new key, after Shamir shares were
// submitted. It ends once the node is unsealed, like OpenBao's own: a node
// sealed later through the API stays sealed until restarted or unsealed
// with shares.
func (a *Appliance) unsealLoop(ctx context.Context) {
	var lastErr string
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-timer.C:
		}
		if !a.core.Sealed() {
			return
		}
		if inited, _ := a.core.Initialized(ctx); inited {
			err := a.core.UnsealWithStoredKeys(ctx)
			switch {
			case err == nil && !a.core.Sealed():
				a.logger.Info("unsealed", "by", a.seal.LastUsed())
				return
			case err != nil && err.Error() != lastErr:
				lastErr = err.Error()
				a.logger.Warn("sealed: "+sealedHint(err), "reason", err)
			}
		}
		timer.Reset(unsealRetry)
	}
}

func sealedHint(err error) string {
	// OpenBao's NonFatalError does not unwrap: match the message.
	if strings.Contains(err.Error(), seal.ErrLocked.Error()) {
		return "waiting for the HSM or for Shamir shares (`gitlab-secrets-appliance unseal`)"
	}
	return "unseal failed; retrying"
}

// kickUnseal wakes the unseal loop.
func (a *Appliance) kickUnseal() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// persistSeal re-encrypts OpenBao's recovery key and stored keys under the
// seal's current header. It runs on the active node only.
func (a *Appliance) persistSeal(ctx context.Context) error {
	keys, err := a.barrier.GetStoredKeys(ctx)
	if err != nil {
		return fmt.Errorf("reading the stored keys: %w", err)
	}
	rk, err := a.barrier.RecoveryKey(ctx)
	if err != nil {
		return fmt.Errorf("reading the recovery key: %w", err)
	}
	if err := a.barrier.SetRecoveryKey(ctx, rk); err != nil {
		return fmt.Errorf("writing the recovery key: %w", err)
	}
	if err := a.barrier.SetStoredKeys(ctx, keys); err != nil {
		return fmt.Errorf("writing the stored keys: %w", err)
	}
	return nil
}
