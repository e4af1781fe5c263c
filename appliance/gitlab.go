package appliance

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/openbao/openbao/helper/namespace"
	"github.com/openbao/openbao/sdk/v2/logical"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/gitlab"
)

// ErrNoGitLab: the config has no gitlab block.
var ErrNoGitLab = errors.New("the config has no gitlab block: add one (url, jwks_url or jwt_validation_pubkeys_file, audience) and reload the node (SIGHUP) or restart it")

// BootstrapGitLab applies the GitLab bootstrap (gitlab_rails_jwt mount,
// privileged role, policy) with the rights of token. It reads the key
// files now, so a rotated PEM key takes effect without a restart, and the
// gitlab block as last reloaded.
func (a *Appliance) BootstrapGitLab(ctx context.Context, token string) ([]gitlab.Step, error) {
	g := a.config().GitLab
	if g == nil {
		return nil, ErrNoGitLab
	}
	if st := a.state(); st != client.StateActive {
		return nil, fmt.Errorf("the bootstrap runs on the active node; this node is %s", st)
	}
	cfg, err := g.BootstrapConfig()
	if err != nil {
		return nil, err
	}
	steps, err := gitlab.Bootstrap(ctx, &coreClient{core: a, token: token}, cfg)
	if err != nil {
		return steps, fmt.Errorf("GitLab bootstrap: %w", err)
	}
	a.logger.Info("GitLab bootstrap applied", "mount", gitlab.AuthMount, "role", gitlab.RoleName, "issuer", cfg.Issuer)
	return steps, nil
}

// startBootstrapAfterInit runs the GitLab bootstrap in the background with
// the root token init just made, once the node is active, so that init's
// one-time secrets are answered first. The outcome goes into Status: a
// failure leaves a working cluster and says how to retry.
func (a *Appliance) startBootstrapAfterInit(rootToken string) {
	a.gitlabBootstrap.Store(client.BootstrapRunning)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		defer cancel()
		stop := context.AfterFunc(a.bgCtx, cancel)
		defer stop()
		a.gitlabBootstrap.Store(a.bootstrapAfterInit(ctx, rootToken))
	}()
}

func (a *Appliance) bootstrapAfterInit(ctx context.Context, rootToken string) string {
	for a.state() != client.StateActive {
		select {
		case <-ctx.Done():
			return "not applied: the node did not become active in time; run `gitlab-secrets-appliance gitlab bootstrap`"
		case <-time.After(20 * time.Millisecond):
		}
	}
	if _, err := a.BootstrapGitLab(ctx, rootToken); err != nil {
		a.logger.Error("GitLab bootstrap after init failed", "error", err)
		return "failed: " + err.Error() + "; fix it and run `gitlab-secrets-appliance gitlab bootstrap`"
	}
	return client.BootstrapApplied
}

// coreClient sends requests to the in-process core with a token's rights.
type coreClient struct {
	core  *Appliance
	token string
}

func (c *coreClient) do(ctx context.Context, op logical.Operation, path string, data map[string]any) (map[string]any, error) {
	resp, err := c.core.core.HandleRequest(namespace.RootContext(ctx), &logical.Request{
		Operation: op, Path: path, ClientToken: c.token, Data: data,
	})
	if err != nil {
		return nil, err
	}
	if resp == nil {
		return nil, nil
	}
	if resp.IsError() {
		return nil, resp.Error()
	}
	return resp.Data, nil
}

func (c *coreClient) Read(ctx context.Context, path string) (map[string]any, error) {
	return c.do(ctx, logical.ReadOperation, path, nil)
}

func (c *coreClient) Write(ctx context.Context, path string, data map[string]any) error {
	_, err := c.do(ctx, logical.UpdateOperation, path, data)
	return err
}
