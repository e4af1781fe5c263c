package appliance

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/bao"
)

// Reload applies what can change while running, as OpenBao does on
// SIGHUP, and keeps it as the node's configuration (see config):
//   - the TLS certificates, read again from the same files;
//   - log_level;
//   - the audit devices, added or removed as the config now declares them,
//     and every file audit device's file reopened (ReopenAuditFiles), so
//     that a log moved aside (logrotate) is closed and a new one begins;
//   - the geo block's topology (its file is also re-read when it changes);
//   - the gitlab block, which `gitlab bootstrap` then applies to OpenBao,
//     unless its jwt_validation_pubkeys_file or pubkeys_jwks_address
//     changed: the keys are served from what the node started with.
//
// Every other setting that changed takes effect at the next start; the log
// names them. A config that does not validate changes nothing (the audit
// files are reopened all the same).
func (a *Appliance) Reload(cfg *config.Config) error {
	if err := cfg.Validate(); err != nil {
		a.ReopenAuditFiles()
		return err
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	prev := a.config()

	next := *prev // what cannot change live stays as it started
	next.LogLevel = cfg.LogLevel
	next.Audit = cloneAudit(cfg.Audit)
	gitlabLive := sameGitLabKeysServer(a.cfg.GitLab, cfg.GitLab)
	if gitlabLive {
		next.GitLab = cloneGitLab(cfg.GitLab)
	}

	var errs []error
	for i, c := range a.certs {
		if err := c.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("TLS certificate %d: %w", i, err))
		}
	}
	level := hclog.LevelFromString(next.LogLevel)
	a.logger.SetLevel(level)
	a.core.SetLogLevel(level)

	if a.geo != nil && cfg.Geo != nil {
		g := *cfg.Geo
		next.Geo = &g
		a.geo.Reload(&g)
	}
	a.core.SetConfig(bao.CoreConfig(&next, a.apiAddr, a.clusterAddr, a.listeners))
	a.core.ReloadAuditLogs()
	a.live.Store(&next)
	if err := a.ReopenAuditFiles(); err != nil {
		errs = append(errs, err)
	}

	if err := errors.Join(errs...); err != nil {
		a.logger.Error("reload incomplete", "error", err)
		return err
	}
	a.logger.Info("reloaded: TLS certificates, log level, audit devices, gitlab block",
		"log_level", next.LogLevel, "audit_devices", len(next.Audit))
	if gitlabLive && !reflect.DeepEqual(prev.GitLab, next.GitLab) {
		a.logger.Info("the gitlab block changed: run `gitlab-secrets-appliance gitlab bootstrap` to apply it to OpenBao")
	}
	if later := restartOnly(a.cfg, cfg.GeoDerived(), gitlabLive); len(later) > 0 {
		a.logger.Info("changed, applies at the next start: " + strings.Join(later, ", "))
	}
	return nil
}

// ReopenAuditFiles closes and reopens the file of every file audit device
// the core has set up, as stock `bao server` does on SIGHUP (its
// "audit_file|" reload functions): a file moved aside (`mv audit.log
// audit.log.1`, logrotate without copytruncate) stops receiving entries,
// and a new one is created at the configured file_path (with its mode).
// Entries written before the reopen are in the old file; none is lost, as
// the device holds its lock while it swaps files. A SIGHUP whose config is
// refused still reopens: rotation must not depend on the config file.
func (a *Appliance) ReopenAuditFiles() error {
	if a.reloadFuncsLock == nil {
		return nil
	}
	a.reloadFuncsLock.RLock()
	defer a.reloadFuncsLock.RUnlock()
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(*a.reloadFuncs)) {
		path, ok := strings.CutPrefix(k, "audit_file|")
		if !ok {
			continue
		}
		for _, f := range (*a.reloadFuncs)[k] {
			if f == nil {
				continue
			}
			if err := f(); err != nil {
				errs = append(errs, fmt.Errorf("reopening the file of audit device %q: %w", path, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		a.logger.Error("audit files not reopened", "error", err)
		return err
	}
	return nil
}

// config is the configuration the node runs with now: the one it started
// with, and what Reload applied since (gitlab, log_level, audit). Callers
// must not modify it. a.cfg stays the config as started, never modified;
// read config() for any setting Reload can change.
func (a *Appliance) config() *config.Config {
	if c := a.live.Load(); c != nil {
		return c
	}
	return a.cfg
}

// sameGitLabKeysServer: the keys server a node starts for a PEM keys file
// (serveGitLabKeys) would serve the same file at the same address for
// both blocks, so the newer block can apply without a restart.
func sameGitLabKeysServer(started, now *config.GitLab) bool {
	var a, b config.GitLab
	if started != nil {
		a = *started
	}
	if now != nil {
		b = *now
	}
	return a.PublicKeysFile == b.PublicKeysFile && a.KeysAddress == b.KeysAddress
}

// restartOnly names the settings of now that differ from those the node
// started with and that Reload does not apply, as the config file names
// them: seal.shamir.shares, listener[0].address.
func restartOnly(started, now *config.Config, gitlabLive bool) []string {
	var out []string
	for _, k := range config.Diff(started, now) {
		switch {
		case k == "log_level", k == "audit" || strings.HasPrefix(k, "audit["):
		case gitlabLive && (k == "gitlab" || strings.HasPrefix(k, "gitlab.")):
		case strings.HasPrefix(k, "geo.") && k != "geo.ca_cert_file":
		default:
			out = append(out, k)
		}
	}
	return out
}

func cloneAudit(in []config.AuditDevice) []config.AuditDevice {
	out := slices.Clone(in)
	for i := range out {
		out[i].Options = maps.Clone(out[i].Options)
	}
	return out
}

func cloneGitLab(g *config.GitLab) *config.GitLab {
	if g == nil {
		return nil
	}
	c := *g
	return &c
}
