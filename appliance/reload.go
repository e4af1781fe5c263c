package appliance

import (
	"errors"
	"fmt"

	"github.com/hashicorp/go-hclog"
)

// Reload applies what can change while running, as OpenBao does on
// SIGHUP: the TLS certificates (read again from the same files), the log
// level, and the audit devices (added or removed as the config now
// declares them). Everything else takes effect at the next start. A
// config that does not validate changes nothing.
func (a *Appliance) Reload(cfg *Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	var errs []error
	for i, c := range a.certs {
		if err := c.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("TLS certificate %d: %w", i, err))
		}
	}
	level := hclog.LevelFromString(cfg.LogLevel)
	a.logger.SetLevel(level)
	a.core.SetLogLevel(level)

	a.core.SetConfig(a.coreConfig(cfg))
	a.core.ReloadAuditLogs()

	if err := errors.Join(errs...); err != nil {
		a.logger.Error("reload incomplete", "error", err)
		return err
	}
	a.logger.Info("reloaded: TLS certificates, log level, audit devices; other settings apply at the next start",
		"log_level", cfg.LogLevel, "audit_devices", len(cfg.Audit))
	return nil
}
