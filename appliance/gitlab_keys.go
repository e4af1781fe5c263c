package appliance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/gitlab"
)

// serveGitLabKeys serves gitlab.jwt_validation_pubkeys_file as a JWKS on
// gitlab.pubkeys_jwks_address (loopback, plain HTTP), where the
// gitlab_rails_jwt mount fetches its keys. It does nothing without a PEM
// file. The file is read at every fetch, so replacing it rotates GitLab's
// key without a restart and without a token: the fetcher (this node's
// OpenBao) and the server live and stop together in this process. The
// returned func closes the listener.
//
// Why not static jwt_validation_pubkeys: changing them needs a privileged
// token, which the appliance does not keep after init.
func (a *Appliance) serveGitLabKeys() (func(), error) {
	g := a.cfg.GitLab
	if g == nil || g.PublicKeysFile == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", g.KeysAddress)
	if err != nil {
		return nil, fmt.Errorf("gitlab.pubkeys_jwks_address: cannot listen on %s: %w", g.KeysAddress, err)
	}
	logf := func(msg string, args ...any) { a.logger.Error(msg, args...) }
	srv := &http.Server{
		Handler:           gitlab.KeysHandler(g.PublicKeysFile, logf),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
	}
	a.servers = append(a.servers, srv)
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.fail(fmt.Errorf("GitLab keys listener %s: %w", ln.Addr(), err))
		}
	}()
	a.logger.Info("serving GitLab's public keys to this node's OpenBao", "file", g.PublicKeysFile,
		"url", "http://"+g.KeysAddress+gitlab.KeysPath)
	return func() { srv.Shutdown(context.Background()) }, nil
}
