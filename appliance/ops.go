package appliance

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/openbao/openbao/helper/namespace"
	"github.com/openbao/openbao/vault"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo/reconciler"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/atomicfile"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// Defaults for OpenBao's recovery keys (needed for generate-root).
const (
	DefaultRecoveryShares    = 5
	DefaultRecoveryThreshold = 3
)

// ErrInitRunning refuses an init while another runs on this node.
var ErrInitRunning = errors.New("an init is already running on this node: wait for its answer (the shares and root token are printed once, to whoever started it)")

// Init initializes a new cluster on this node: the seal key with every
// configured mechanism enrolled at once, the barrier and root key, Raft
// with this node as the only voter. The node then unseals itself with the
// new key. One init at a time; the answer (the one-time secrets) comes
// back as soon as they exist: the GitLab bootstrap runs afterwards, in the
// background (Status says how it went).
func (a *Appliance) Init(ctx context.Context, req client.InitRequest) (*client.InitResult, error) {
	if !a.initMu.TryLock() {
		return nil, ErrInitRunning
	}
	defer a.initMu.Unlock()
	spec, rs, rt, err := a.initSpec(req)
	if err != nil {
		return nil, err
	}
	if err := a.interruptedInit(); err != nil {
		return nil, err
	}
	inited, err := a.core.Initialized(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot read the cluster's state: %w", err)
	}
	if inited {
		return nil, ErrAlreadyInitialized
	}
	if err := a.checkNoInterruptedInit(); err != nil {
		return nil, err
	}
	// The marker stands until the answer is ready: a node killed before
	// that (whatever OpenBao had written) says so at its next start
	// instead of looking initialized with shares nobody ever saw.
	marker := filepath.Join(a.cfg.DataDir, datadir.InitMarker)
	if err := atomicfile.WriteFile(marker, []byte(time.Now().UTC().Format(time.RFC3339Nano)+"\n"), 0o600, -1, -1); err != nil {
		return nil, fmt.Errorf("init failed: %w", err)
	}
	a.initRunning.Store(true)
	defer a.initRunning.Store(false)
	shares, err := a.seal.Initialize(ctx, spec)
	if err != nil {
		atomicfile.Remove(marker)
		return nil, fmt.Errorf("init failed: %w", err)
	}
	res, err := a.core.Initialize(namespace.RootContext(ctx), &vault.InitParams{
		BarrierConfig: &vault.SealConfig{Type: seal.Type.String(), SecretShares: 1, SecretThreshold: 1, StoredShares: 1},
		RecoveryConfig: &vault.SealConfig{
			SecretShares: rs, SecretThreshold: rt, PGPKeys: req.RecoveryPGPKeys,
		},
	})
	if err == nil {
		if rerr := removeInitMarker(marker); rerr != nil {
			// The marker standing means "the answer never left this
			// node": status and init advise deleting the Raft data on
			// that word. An answer given beside a marker that stays would
			// make that advice destroy a cluster in use, so it is
			// withheld: nobody holds this cluster's keys, and the advice
			// is true.
			a.logger.Error("init finished but its marker could not be removed: its answer is withheld", "path", marker, "error", rerr)
			return nil, fmt.Errorf("init failed: its marker %s could not be removed (%v), so its answer (shares, recovery keys, root token) was withheld: "+
				"a node whose marker stands calls itself an interrupted init and advises deleting its data, which must never happen to a cluster in use. "+
				"Nobody holds this cluster's keys: fix the data dir, stop this node, delete %s and %s, start it again and run init",
				marker, rerr, filepath.Join(a.cfg.DataDir, "raft"), filepath.Join(a.cfg.DataDir, "vault.db"))
		}
	} else if has, herr := a.raft.HasState(); herr == nil && !has {
		atomicfile.Remove(marker) // nothing was written: a clean refusal
	}
	if err != nil {
		a.seal.ForgetInit()
		if errors.Is(err, vault.ErrAlreadyInit) || strings.Contains(err.Error(), "already initialized") {
			return nil, ErrAlreadyInitialized
		}
		if ierr := a.interruptedInitAdvice(); ierr != nil {
			return nil, fmt.Errorf("init failed: %w; %w", err, ierr)
		}
		return nil, fmt.Errorf("init failed: %w", err)
	}
	out := &client.InitResult{
		UnsealShares: shares, RecoveryThreshold: rt, RootToken: res.RootToken,
	}
	if spec.Shamir {
		out.UnsealThreshold = spec.Threshold
	}
	if spec.HSM {
		out.Mechanisms = append(out.Mechanisms, seal.MechanismPKCS11)
	}
	if spec.Shamir {
		out.Mechanisms = append(out.Mechanisms, seal.MechanismShamir)
	}
	for _, k := range res.RecoveryShares {
		out.RecoveryKeys = append(out.RecoveryKeys, base64.StdEncoding.EncodeToString(k))
	}
	a.logger.Info("cluster initialized", "mechanisms", out.Mechanisms, "recovery_keys", rs)
	a.kickUnseal()
	if a.config().GitLab != nil {
		out.GitLabBootstrap = client.BootstrapRunning
		a.startBootstrapAfterInit(res.RootToken)
	}
	return out, nil
}

// initSpec checks an init request's numbers, each by its name, and fills
// in the defaults.
func (a *Appliance) initSpec(req client.InitRequest) (spec seal.InitSpec, rs, rt int, err error) {
	spec = seal.InitSpec{HSM: a.cfg.Seal.PKCS11 != nil, Shamir: a.cfg.Seal.Shamir != nil, PGPKeys: req.PGPKeys}
	if err := checkInitFIPS(req); err != nil {
		return spec, 0, 0, err
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"shares", req.Shares}, {"threshold", req.Threshold}, {"recovery_shares", req.RecoveryShares}, {"recovery_threshold", req.RecoveryThreshold}} {
		if f.v < 0 || f.v > 255 {
			return spec, 0, 0, fmt.Errorf("%s %d: use 1 to 255 (0 takes the default)", f.name, f.v)
		}
	}
	if spec.Shamir {
		spec.Shares, spec.Threshold = req.Shares, req.Threshold
		if spec.Shares == 0 {
			spec.Shares = a.cfg.Seal.Shamir.Shares
		}
		if spec.Threshold == 0 {
			spec.Threshold = min(a.cfg.Seal.Shamir.Threshold, spec.Shares)
		}
		if err := seal.CheckSplit(spec.Shares, spec.Threshold); err != nil {
			return spec, 0, 0, err
		}
	} else if req.Shares != 0 || req.Threshold != 0 {
		return spec, 0, 0, errors.New("shares were asked for but the config has no seal \"shamir\" block")
	}
	rs, rt = req.RecoveryShares, req.RecoveryThreshold
	if rs == 0 {
		rs = DefaultRecoveryShares
	}
	if rt == 0 {
		rt = min(DefaultRecoveryThreshold, rs)
	}
	if rt > rs || rs > 1 && rt == 1 {
		return spec, 0, 0, fmt.Errorf("recovery_threshold %d of %d recovery keys: use 2 to %d (or 1 of 1)", rt, rs, rs)
	}
	return spec, rs, rt, nil
}

// checkNoInterruptedInit refuses an init on a node that is not
// initialized but has Raft state, with what that state is. Without the
// marker of an interrupted init nothing says the state is disposable: the
// node may have joined a cluster, or lost its vault.db while its Raft log
// holds its data (a start refuses that one; see startCheck). Only the
// marker's case (interruptedInit) advises deleting it.
func (a *Appliance) checkNoInterruptedInit() error {
	has, err := a.raft.HasState()
	if err != nil || !has {
		return nil
	}
	if conf, err := a.raft.GetConfigurationOffline(); err == nil && conf != nil {
		for _, s := range conf.Servers {
			if s.NodeID != a.cfg.NodeID {
				return fmt.Errorf("this node has joined a cluster (its Raft configuration lists %s): init is only for the first node of a new cluster; unseal this one instead", s.NodeID)
			}
		}
	}
	if err := a.interruptedInitAdvice(); err != nil {
		return err
	}
	return fmt.Errorf("this node holds Raft data but OpenBao finds no initialized cluster in it: it may hold secrets, so init refuses and changes nothing. "+
		"Do not delete %s or %s: stop the node and run `gitlab-secrets-appliance check --config <config file>`, which verifies them and says what to do",
		filepath.Join(a.cfg.DataDir, "raft"), filepath.Join(a.cfg.DataDir, "vault.db"))
}

// removeInitMarker removes the marker once an init has its answer (a
// variable for the test of a marker that cannot be removed).
var removeInitMarker = atomicfile.Remove

// interruptedInit explains a node whose first init stopped before it
// answered, wherever OpenBao was (between its barrier and its seal
// configuration, core.Initialized fails): the marker Init leaves stands.
// Once the operator deleted the Raft state the marker is stale and goes.
func (a *Appliance) interruptedInit() error {
	if a.initRunning.Load() {
		return nil
	}
	return a.interruptedInitAdvice()
}

// interruptedInitAdvice is interruptedInit while an init runs too.
func (a *Appliance) interruptedInitAdvice() error {
	marker := filepath.Join(a.cfg.DataDir, datadir.InitMarker)
	b, err := os.ReadFile(marker)
	if err != nil {
		return nil
	}
	if has, err := a.raft.HasState(); err != nil || !has {
		if err == nil {
			atomicfile.Remove(marker)
		}
		return nil
	}
	at, perr := time.Parse(time.RFC3339, strings.TrimSpace(string(b)))
	if why := a.initUnproven(at, perr == nil); why != "" {
		return fmt.Errorf("%w: an init on this node started and never answered (%s stands), but this node's Raft data cannot be shown to come from that init alone: %s. "+
			"It may hold secrets: do not delete it. If this cluster is in use, the marker is wrong: remove %s",
			ErrInterruptedInit, marker, why, marker)
	}
	return a.errInterruptedInit()
}

// initUnproven says why the Raft data cannot be shown to come from an
// interrupted init that started at `at` alone ("" when it can): the data
// as the start found it (Report.initUnproven: a log from entry 1,
// every entry appended after the init started) and the Raft configuration
// now (this node alone).
func (a *Appliance) initUnproven(at time.Time, known bool) string {
	if a.storage == nil {
		return "the start did not check the data dir"
	}
	if why := a.storage.InitUnproven(at, known); why != "" {
		return why
	}
	if conf, err := a.raft.GetConfigurationOffline(); err == nil && conf != nil {
		for _, s := range conf.Servers {
			if s.NodeID != a.cfg.NodeID {
				return "its Raft configuration lists " + s.NodeID
			}
		}
	}
	return ""
}

// removeStaleInitMarker removes the marker of an init whose node has no
// Raft state (Start, before anything can write).
func (a *Appliance) removeStaleInitMarker() {
	marker := filepath.Join(a.cfg.DataDir, datadir.InitMarker)
	if _, err := os.Stat(marker); err == nil {
		if err := atomicfile.Remove(marker); err == nil {
			a.logger.Info("removed the marker of an init that wrote nothing", "path", marker)
		}
	}
}

func (a *Appliance) errInterruptedInit() error {
	return fmt.Errorf("%w: an earlier init on this node stopped before it finished: its answer (the shares, recovery keys and root token) never left this node, so nobody can use this cluster and no secret can be in it. "+
		"To start over: stop this node, delete %s and %s, start it again and run init",
		ErrInterruptedInit, filepath.Join(a.cfg.DataDir, "raft"), filepath.Join(a.cfg.DataDir, "vault.db"))
}

// ErrInterruptedInit marks a node whose first init was interrupted.
var ErrInterruptedInit = errors.New("interrupted init")

// Errors from Unseal. Each says what to do; none carries the share.
var (
	ErrMalformedShare = seal.ErrMalformedShare
	ErrDuplicateShare = seal.ErrDuplicateShare
	ErrWrongShares    = seal.ErrWrongShares
)

// unsealWait bounds how long Unseal waits for the core after the last
// share.
const unsealWait = 30 * time.Second

// Unseal submits one operator share. A wrong, malformed, corrupted,
// foreign, void or duplicate share is refused with its own error and
// changes nothing (a wrong set at the threshold starts the attempt over).
// After the last share it waits for the node to unseal.
//
// An unsealed node whose seal key is missing (see seal.HasCurrentKey)
// takes shares too: they give it the key back.
func (a *Appliance) Unseal(ctx context.Context, share string) (client.UnsealProgress, error) {
	if !a.core.Sealed() {
		if a.seal.HasCurrentKey(ctx) {
			return client.UnsealProgress{}, nil
		}
		p, err := a.seal.SubmitShare(ctx, share)
		return client.UnsealProgress{Progress: p.Submitted, Threshold: p.Threshold, Recovered: p.Recovered}, err
	}
	// A fenced node refuses the first share already, with the reason.
	if a.geo != nil {
		if reason := a.geo.Fence(ctx); reason != "" {
			return client.UnsealProgress{Sealed: true}, fmt.Errorf("%w: %s", reconciler.ErrFenced, reason)
		}
	}
	p, err := a.seal.SubmitShare(ctx, share)
	out := client.UnsealProgress{Sealed: true, Progress: p.Submitted, Threshold: p.Threshold, Recovered: p.Recovered}
	if err != nil || !p.Recovered {
		return out, err
	}
	a.kickUnseal()
	inited, _ := a.core.Initialized(ctx)
	if !inited {
		return out, nil // joining: the retry_join loop answers with the key now
	}
	wctx, cancel := context.WithTimeout(ctx, unsealWait)
	defer cancel()
	for a.core.Sealed() {
		if a.geo != nil {
			if reason := a.geo.FencedReason(); reason != "" {
				return out, fmt.Errorf("%w: %s", reconciler.ErrFenced, reason)
			}
		}
		select {
		case <-wctx.Done():
			return out, errors.New("the shares recovered the seal key but the node did not unseal in time; see its log")
		case <-time.After(20 * time.Millisecond):
		}
	}
	out.Sealed = false
	return out, nil
}

// ErrResetRefused refuses a reset of the unseal attempt that does not
// carry one of the attempt's shares: nobody who can merely reach the API
// may discard the operators' progress.
var ErrResetRefused = errors.New("permission denied: a reset of the unseal attempt must carry one of this cluster's current shares (`gitlab-secrets-appliance unseal --reset` asks for one; the bao API takes it as \"key\" beside \"reset\")")

// ResetUnseal discards the shares submitted so far, if share is one of
// the cluster's current shares (see seal.ResetShares); it is not counted.
// Any other reset is refused with ErrResetRefused, wrapping the share's
// own error; nothing changes then.
func (a *Appliance) ResetUnseal(ctx context.Context, share string) error {
	if strings.TrimSpace(share) == "" {
		return ErrResetRefused
	}
	if err := a.seal.ResetShares(ctx, share); err != nil {
		return fmt.Errorf("%w: %w", ErrResetRefused, err)
	}
	a.logger.Info("the unseal attempt was reset by an operator's share: the shares submitted so far were discarded")
	return nil
}

func (a *Appliance) unsealProgress(ctx context.Context) client.UnsealProgress {
	st := a.seal.Status(ctx, a.cfg.Seal.Shamir != nil)
	p := client.UnsealProgress{Sealed: a.core.Sealed()}
	for _, m := range st.Mechanisms {
		if m.Type == seal.MechanismShamir {
			p.Progress, p.Threshold = m.Progress, m.Threshold
		}
	}
	return p
}

// WaitUnsealed polls until the node is unsealed and knows its role
// (active or standby), or ctx ends.
func (a *Appliance) WaitUnsealed(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if !a.core.Sealed() {
			if st := a.state(); st == client.StateActive || st == client.StateStandby {
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
