package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/appliance"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/systemd"
)

func serverAction(c *cli.Context) error {
	sd := newNotifier(c) // first: nothing started later sees NOTIFY_SOCKET
	path := c.String("config")
	cfg, err := config.Load(path)
	if err != nil {
		return exit(exitConfig, err)
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, err := appliance.Start(ctx, cfg)
	if err != nil {
		var se *datadir.StorageError
		if errors.As(err, &se) {
			se.Report.SetConfigFile(path)
		}
		return startError(err)
	}
	// SIGHUP: read the config file again and apply what can change live
	// (TLS certificates, log level, audit devices). A bad file changes
	// nothing and the node keeps running; the refusal goes to systemd's
	// STATUS= too.
	// Whatever the file says, the file audit devices reopen their files
	// (logrotate's postrotate sends SIGHUP after moving audit.log aside).
	reload := func() (refusal string) {
		cfg, err := config.Load(path)
		if err == nil {
			err = a.Reload(cfg)
		} else {
			a.ReopenAuditFiles()
		}
		if err != nil {
			fmt.Fprintln(c.App.ErrWriter, "Reload refused, the node runs on:", err)
			return reloadRefusal(err)
		}
		return ""
	}
	return serve(ctx, a, sd, reload)
}

// reloadRefusal is the first line of a reload's error, for STATUS=: the
// log has the rest (a config file's problems, one per line).
func reloadRefusal(err error) string {
	first, rest, _ := strings.Cut(err.Error(), "\n")
	first = strings.TrimSuffix(strings.TrimSpace(first), ":")
	if rest != "" {
		first += "; the log lists them"
	}
	return first
}

// newNotifier reads systemd's notify socket and watchdog from the
// environment and removes them from it (see package systemd).
func newNotifier(c *cli.Context) *systemd.Notifier {
	say := func(msg string) { fmt.Fprintln(c.App.ErrWriter, "systemd:", msg) }
	sd, err := systemd.FromEnvironment(say)
	if err != nil {
		say(err.Error())
	}
	return sd
}

func devAction(c *cli.Context) error {
	sd := newNotifier(c)
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, info, err := appliance.StartDev(ctx, appliance.DevOptions{
		Listen:   c.String("listen"),
		DataDir:  c.String("data-dir"),
		LogLevel: c.String("log-level"),
	})
	if err != nil {
		return startError(err)
	}
	printDevBanner(c, a.APIAddr(), info)
	return serve(ctx, a, sd, nil)
}

// startError maps a failed start to its exit code: 3 for an invalid
// config or a data_dir another node holds, 5 for a damaged or incomplete
// data dir (nothing was started in either case; systemd does not restart
// the node), 1 else.
func startError(err error) error {
	var ce *config.ConfigError
	if errors.As(err, &ce) || errors.Is(err, datadir.ErrInUse) {
		return exit(exitConfig, err)
	}
	if errors.Is(err, datadir.ErrDamaged) {
		return exit(exitDamaged, err)
	}
	return exit(exitFailed, err)
}

// serve runs until a signal or a fatal error, then stops the node cleanly;
// on SIGHUP it calls reload, if any, which says why it refused the new
// config, or "". It keeps systemd informed through sd: READY=1 now (the API
// serves), STATUS= and WATCHDOG=1 while it runs, RELOADING=1 and READY=1
// around a reload, STOPPING=1 before the node stops.
func serve(ctx context.Context, a *appliance.Appliance, sd *systemd.Notifier, reload func() string) error {
	hup := make(chan os.Signal, 1)
	if reload != nil {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	sd.Ready()
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		sd.Run(watchCtx, nodeSource{a})
	}()
	var failure error
	var why string
	restart := false
loop:
	for {
		select {
		case <-ctx.Done():
			why = context.Cause(ctx).Error()
			break loop
		case <-a.RestartRequested():
			why, restart = "restarting as asked: the supervisor starts the node again", true
			break loop
		case failure = <-a.Err():
			why = "failed: " + failure.Error()
			break loop
		case <-hup:
			sd.Reloading()
			sd.Reloaded(reload())
		}
	}
	sd.Stopping(why)
	stopWatch()
	<-watched
	if err := a.Close(); err != nil && failure == nil {
		failure = err
	}
	if failure != nil {
		return exit(exitFailed, failure)
	}
	if restart {
		return exit(exitRestart, errors.New("stopped for a restart (POST /appliance/v1/restart): its supervisor (systemd, runit) starts it again"))
	}
	return nil
}

// nodeSource is the node as systemd is told about it.
type nodeSource struct{ a *appliance.Appliance }

func (s nodeSource) Summary(ctx context.Context) string { return s.a.Status(ctx).Summary() }
func (s nodeSource) Alive()                             { s.a.Alive() }

func printDevBanner(c *cli.Context, addr string, info *appliance.DevInfo) {
	token, _ := filepath.Rel(mustGetwd(), info.RootTokenFile)
	if token == "" || token[0] == '.' {
		token = info.RootTokenFile
	}
	state := "new cluster initialized, unsealed, KV v2 mounted at secret/"
	if info.Reused {
		state = "existing dev cluster unsealed again"
	}
	fmt.Fprintf(c.App.Writer, `==> gitlab-secrets-appliance dev node is running (%s)

    API address:  %s
    Root token:   in %s (mode 0600)

    Dev mode keeps its only unseal key in the data directory: do not put real secrets in it.

Try it with curl:

    TOKEN=$(cat %[3]s)
    curl -s -H "X-Vault-Token: $TOKEN" -X POST -d '{"data":{"password":"s3cr3t"}}' %[2]s/v1/secret/data/hello
    curl -s -H "X-Vault-Token: $TOKEN" %[2]s/v1/secret/data/hello

or with the bao (or vault) CLI:

    export BAO_ADDR=%[2]s BAO_TOKEN=$(cat %[3]s)
    bao kv put -mount=secret hello password=s3cr3t
    bao kv get -mount=secret hello

Status: gitlab-secrets-appliance status --address %[2]s
Stop with Ctrl-C; run dev again with the same --data-dir to carry on where you left off.
`, state, addr, token)
}

func mustGetwd() string {
	wd, err := os.Getwd()
	if err != nil {
		return "/"
	}
	return wd
}
