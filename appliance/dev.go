package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/openbao/openbao/helper/namespace"
	"github.com/openbao/openbao/sdk/v2/logical"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/atomicfile"
)

// Files a dev node keeps in its data directory, both mode 0600. The unseal
// key in a file is what makes dev mode unfit for real secrets.
const (
	DevRootTokenFile = "root-token"
	DevUnsealKeyFile = "dev-unseal-key"
)

// DevOptions configure a dev node. Zero values take the defaults.
type DevOptions struct {
	Listen    string // loopback host:port; default DefaultAPIAddress
	DataDir   string // required
	LogLevel  string
	LogOutput io.Writer
}

// DevInfo tells the caller how to use the dev node.
type DevInfo struct {
	RootTokenFile string
	Reused        bool // the data dir held a dev cluster already
}

// StartDev starts a single-node appliance for trying things out: plain HTTP
// on loopback, Raft in opts.DataDir, one unseal share kept in the data dir.
// A new data dir is initialized, unsealed, given KV v2 at secret/ and a
// root token file; an existing one is unsealed again.
func StartDev(ctx context.Context, opts DevOptions) (*Appliance, *DevInfo, error) {
	cfg := config.NewConfig()
	cfg.NodeID = "dev"
	dir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, nil, fmt.Errorf("data dir: %w", err)
	}
	cfg.DataDir = dir
	if opts.Listen != "" {
		cfg.Listeners = []config.Listener{{Address: opts.Listen, TLSDisable: true, TLSMinVersion: config.DefaultTLSMinVersion}}
		cfg.Cluster.Address = config.NextPort(opts.Listen)
	}
	if opts.LogLevel != "" {
		cfg.LogLevel = opts.LogLevel
	}
	cfg.LogOutput = opts.LogOutput
	cfg.Seal = &config.Seal{Shamir: &config.ShamirSeal{Shares: 1, Threshold: 1}}

	a, err := Start(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	info, err := a.devSetUp(ctx)
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, info, nil
}

func (a *Appliance) devSetUp(ctx context.Context) (*DevInfo, error) {
	info := &DevInfo{RootTokenFile: filepath.Join(a.cfg.DataDir, DevRootTokenFile)}
	keyFile := filepath.Join(a.cfg.DataDir, DevUnsealKeyFile)
	if err := a.interruptedInit(); err != nil {
		return nil, err
	}
	inited, err := a.core.Initialized(ctx)
	if err != nil {
		return nil, err
	}
	if inited {
		info.Reused = true
		key, err := os.ReadFile(keyFile)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s holds a cluster not made by dev mode (no %s): start it with `server` and unseal it with `unseal`, or choose another --data-dir", a.cfg.DataDir, DevUnsealKeyFile)
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read the dev unseal key: %w", config.PathCause(err))
		}
		if _, err := a.Unseal(ctx, string(key)); err != nil {
			return nil, fmt.Errorf("cannot unseal the dev cluster in %s: %w", a.cfg.DataDir, err)
		}
		return info, a.WaitUnsealed(ctx)
	}

	res, err := a.Init(ctx, client.InitRequest{Shares: 1, Threshold: 1, RecoveryShares: 1, RecoveryThreshold: 1})
	if err != nil {
		return nil, err
	}
	if err := writeSecretFile(keyFile, res.UnsealShares[0]); err != nil {
		return nil, err
	}
	if err := writeSecretFile(info.RootTokenFile, res.RootToken); err != nil {
		return nil, err
	}
	if err := a.WaitUnsealed(ctx); err != nil {
		return nil, err
	}
	resp, err := a.core.HandleRequest(namespace.RootContext(ctx), &logical.Request{
		Operation:   logical.UpdateOperation,
		ClientToken: res.RootToken,
		Path:        "sys/mounts/secret",
		Data: map[string]interface{}{
			"type":        "kv",
			"description": "key/value secret storage (dev)",
			"options":     map[string]string{"version": "2"},
		},
	})
	if err == nil && resp.IsError() {
		err = resp.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("cannot mount KV v2 at secret/: %w", err)
	}
	// A new KV v2 mount upgrades itself before it takes writes; the
	// banner must not promise a store that refuses the first write.
	for {
		resp, err := a.core.HandleRequest(namespace.RootContext(ctx), &logical.Request{
			Operation: logical.ReadOperation, ClientToken: res.RootToken, Path: "secret/config",
		})
		if err == nil && !resp.IsError() {
			return info, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("KV v2 at secret/ did not become ready: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// writeSecretFile writes a token or key with mode 0600, atomically.
func writeSecretFile(path, value string) error {
	if err := atomicfile.WriteFile(path, []byte(strings.TrimSpace(value)+"\n"), 0o600, -1, -1); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, config.PathCause(err))
	}
	return nil
}
