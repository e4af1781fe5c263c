package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/openbao/openbao/sdk/v2/physical"
	"github.com/openbao/openbao/vault"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal/pkcs11"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/snapshot"
	"google.golang.org/protobuf/proto"
)

// newSeal builds the multi-unseal seal from the config: this node's HSM
// access (PIN read now, never kept in the config) and a view of the
// cluster's stored keys in local storage.
func (a *Appliance) newSeal() error {
	opts := seal.Options{
		Logger:       a.logger.Named("seal"),
		StoredHeader: a.storedSealHeader,
		HeaderFile:   filepath.Join(a.cfg.DataDir, datadir.SealHeaderFile),
		Persist:      a.persistSeal,
	}
	if p := a.cfg.Seal.PKCS11; p != nil {
		pin, err := readPIN(p)
		if err != nil {
			return err
		}
		opts.HSM = &pkcs11.Config{Library: p.Library, TokenLabel: p.TokenLabel, PIN: pin, KeyLabel: p.KeyLabel}
		if p.Slot != nil {
			slot := uint(*p.Slot)
			opts.HSM.Slot = &slot
		}
	}
	a.seal = seal.New(opts)
	return nil
}

// readPIN reads the HSM PIN. A PIN from pin_env is removed from the
// environment at once: nothing started later (or a core dump of the
// environment block) sees it.
func readPIN(p *config.PKCS11Seal) (string, error) {
	if p.PINEnv != "" {
		pin := os.Getenv(p.PINEnv)
		os.Unsetenv(p.PINEnv)
		if pin == "" {
			return "", fmt.Errorf("seal.pkcs11.pin_env: the variable %s is not set or empty", p.PINEnv)
		}
		return pin, nil
	}
	b, err := os.ReadFile(p.PINFile)
	if err != nil {
		return "", fmt.Errorf("seal.pkcs11.pin_file: cannot read %s: %w", p.PINFile, config.PathCause(err))
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
	h := snapshot.StoredKeysHeader(e.Value)
	if h == nil {
		return nil, errors.New("the stored keys are not a seal blob")
	}
	return h, nil
}

// unsealRetry is how often a sealed node tries again by itself: the HSM
// may come back, a joining node may have received its storage. The same
// tick checks, on the active node, that the stored keys carry the current
// seal header (a restored snapshot brings back older ones).
const unsealRetry = 2 * time.Second

// sealKeeper runs for the node's life. While sealed it unseals the node as
// soon as it can: at start by the HSM, after init with the new key, after
// Shamir shares were submitted; a node sealed later (by an operator, or by
// OpenBao itself) is unsealed again the same way, so it always takes
// shares. After an operator's sys/seal the seal forgets its keys and does
// not use the HSM until a restart: such a node unseals by shares only.
// While active, it re-encrypts stored keys that a snapshot restore
// brought back under an older seal generation.
func (a *Appliance) sealKeeper(ctx context.Context) {
	var lastErr string
	var keyMissing bool
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-timer.C:
		}
		timer.Reset(unsealRetry)
		if !a.core.Sealed() {
			lastErr = ""
			a.upgradeStoredKeys(ctx)
			a.checkCurrentKey(ctx, &keyMissing)
			continue
		}
		inited, _ := a.core.Initialized(ctx)
		if !inited {
			continue
		}
		// A node whose Raft data a disaster promotion replaced must not
		// unseal: it would lead or vote with its old configuration.
		if a.geo != nil {
			if reason := a.geo.Fence(ctx); reason != "" {
				lastErr = reason
				continue
			}
		}
		// The HSM is asked first, outside OpenBao's state lock (see
		// RecoverStoredKey): a hung token must not hang sys/health.
		err := a.seal.RecoverStoredKey(ctx)
		if err == nil {
			a.unsealMu.Lock()
			err = a.core.UnsealWithStoredKeys(ctx)
			a.unsealMu.Unlock()
		}
		switch {
		case err == nil && !a.core.Sealed():
			a.logger.Info("unsealed", "by", a.seal.LastUsed())
		case err != nil && err.Error() != lastErr && ctx.Err() == nil:
			lastErr = err.Error()
			if strings.Contains(err.Error(), seal.ErrLocked.Error()) {
				// Waiting for the HSM or for people: what a restart of a
				// Shamir node does every time; status says the same.
				a.logger.Info("sealed: "+sealedHint(err), "reason", err)
			} else {
				a.logger.Warn("sealed: "+sealedHint(err), "reason", err)
			}
		}
	}
}

func sealedHint(err error) string {
	// OpenBao's NonFatalError does not unwrap: match the message.
	if strings.Contains(err.Error(), seal.ErrLocked.Error()) {
		return "waiting for the HSM or for Shamir shares (`gitlab-secrets-appliance unseal`)"
	}
	return "unseal failed; retrying"
}

// kickUnseal wakes the seal keeper.
func (a *Appliance) kickUnseal() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// upgradeStoredKeys re-encrypts, on the active node, stored keys that carry
// an older seal generation than the current one. Until then the seal opens
// them only through the current generation's history, never with the
// mechanisms of their own time.
func (a *Appliance) upgradeStoredKeys(ctx context.Context) {
	stored, cur, older := a.seal.StoredOlder(ctx)
	if !older || a.state() != client.StateActive {
		return
	}
	up, ok := a.barrier.(interface{ UpgradeKeys(context.Context) error })
	if !ok {
		return
	}
	if err := up.UpgradeKeys(ctx); err != nil {
		a.logger.Error("re-encrypting the stored keys under the current seal generation failed; retrying", "stored_generation", stored, "generation", cur, "error", err)
		return
	}
	a.logger.Info("stored keys re-encrypted under the current seal generation (they came back from a restored snapshot)", "stored_generation", stored, "generation", cur)
}

// checkCurrentKey gets the current seal key of an unsealed node that
// lacks it from the HSM, or says once that shares are needed.
func (a *Appliance) checkCurrentKey(ctx context.Context, reported *bool) {
	if a.seal.HasCurrentKey(ctx) {
		*reported = false
		return
	}
	err := a.seal.RecoverCurrentKey(ctx)
	switch {
	case err == nil:
		a.logger.Info("the current seal generation's key was recovered with the HSM")
		*reported = false
	case !*reported:
		st := a.seal.Status(ctx, false)
		a.logger.Warn("the seal changed while this node was down and it unsealed with the older generation's keys: it serves, but cannot change the seal or seal snapshots until it has the new key; submit shares of the current generation with `gitlab-secrets-appliance unseal`",
			"generation", st.Generation, "reason", err)
		*reported = true
	}
}

// recoveryKeyPath is where OpenBao keeps its recovery key (vault's
// unexported recoveryKeyPath).
const recoveryKeyPath = "core/recovery-key"

// persistSeal re-encrypts OpenBao's stored keys and recovery key with
// encrypt and writes both in one Raft transaction: a crash leaves both
// under the old seal header or both under the new one. It runs on the
// active node only.
func (a *Appliance) persistSeal(ctx context.Context, encrypt seal.Encryptor) error {
	keys, err := a.barrier.GetStoredKeys(ctx)
	if err != nil {
		return fmt.Errorf("reading the stored keys: %w", err)
	}
	rk, err := a.barrier.RecoveryKey(ctx)
	if err != nil {
		return fmt.Errorf("reading the recovery key: %w", err)
	}
	plainKeys, err := json.Marshal(keys)
	if err != nil {
		return err
	}
	var entries []*physical.Entry
	for _, e := range []struct {
		path  string
		plain []byte
	}{{vault.StoredBarrierKeysPath, plainKeys}, {recoveryKeyPath, rk}} {
		blob, err := encrypt(ctx, e.plain)
		if err != nil {
			return fmt.Errorf("encrypting %s: %w", e.path, err)
		}
		v, err := proto.Marshal(blob)
		if err != nil {
			return err
		}
		entries = append(entries, &physical.Entry{Key: e.path, Value: v})
	}
	clear(plainKeys)
	tx, err := a.raft.BeginTx(ctx)
	if err != nil {
		return fmt.Errorf("starting the storage transaction: %w", err)
	}
	for _, e := range entries {
		if err := tx.Put(ctx, e); err != nil {
			tx.Rollback(ctx)
			return fmt.Errorf("writing %s: %w", e.Key, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("committing the storage transaction: %w", err)
	}
	// The core caches both entries; it must read the new ones.
	a.core.PhysicalAccess().Purge(ctx)
	return nil
}
