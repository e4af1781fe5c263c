package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/appliance"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/drill"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo/disaster"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/snapshot/restore"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/systemd"
)

func drillCommand() *cli.Command {
	return &cli.Command{
		Name: "drill",
		Usage: "rehearse a Geo failover offline: a throwaway cluster of the topology's shape on loopback, built from a snapshot, " +
			"unsealed by the HSM or by the share holders, loses its primary site and is promoted; every secret is checked; a report is written",
		Description: "Runs this binary only, on this machine, in a temporary directory it removes at the end; it reaches no address " +
			"but the loopback ones it picks. Shares are read one per holder (hidden on a terminal, or one per line on standard input), " +
			"after the token when the token comes from standard input. Exit code 0 when every check passed, 1 otherwise.",
		Flags: append(clientFlags(), formatFlag(),
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "offline: the production node's config (its seal, topology and snapshot directory)"},
			&cli.BoolFlag{Name: "live", Usage: "rehearse on the running cluster (at --address): a planned switchover to --site and back, behind pre-flight checks; the token needs sudo on " + appliance.GeoPolicyPath},
			&cli.StringFlag{Name: "site", Usage: "with --live: the site to switch to"},
			&cli.BoolFlag{Name: "dry-run", Usage: "with --live: print the plan and the pre-flight checks; change nothing"},
			&cli.DurationFlag{Name: "max-snapshot-age", Value: time.Hour, Usage: "with --live: the newest scheduled snapshot must be younger than this"},
			&cli.StringFlag{Name: "snapshot", Usage: "the snapshot file (default: the newest scheduled one)"},
			&cli.StringFlag{Name: "unseal", Value: drill.UnsealHSM, Usage: "hsm (the config's HSM) or shares (the holders type theirs)"},
			&cli.StringFlag{Name: "token-file", Usage: "file holding a token of the cluster valid at the snapshot's time, for the canary writes (default: $" + envToken + ", or the first line of standard input)"},
			&cli.StringFlag{Name: "report-dir", Value: ".", Usage: "where drill-<time>.md and drill-<time>.json go"},
			&cli.StringFlag{Name: "work-dir", Usage: "where the throwaway cluster lives while the drill runs (default: the system's temporary directory)"},
		),
		Action: drillAction,
	}
}

func drillAction(c *cli.Context) error {
	asJSON, err := jsonOut(c)
	if err != nil {
		return err
	}
	if c.Bool("live") {
		return liveDrillAction(c, asJSON)
	}
	if c.String("config") == "" {
		return exit(exitUsage, errors.New("the offline drill needs the production node's config: --config FILE (or --live for the running cluster)"))
	}
	cfg, err := config.Load(c.String("config"))
	if err != nil {
		return exit(exitConfig, err)
	}
	mode := c.String("unseal")
	if mode != drill.UnsealHSM && mode != drill.UnsealShares {
		return exit(exitUsage, fmt.Errorf("--unseal %q: use hsm or shares", mode))
	}
	in := newSecretInput(c)
	token, err := in.token()
	if err != nil {
		return err
	}
	bin, err := os.Executable()
	if err != nil {
		return exit(exitFailed, err)
	}
	rep, err := drill.Run(c.Context, drill.Options{
		Binary:   bin,
		Config:   cfg,
		Snapshot: c.String("snapshot"),
		Unseal:   mode,
		Share: func(i, threshold int) (string, error) {
			s, ok, err := in.next(fmt.Sprintf("Share of holder %d of %d", i, threshold))
			if err == nil && !ok {
				err = errors.New("no share given")
			}
			return s, err
		},
		Token:    token,
		WorkDir:  c.String("work-dir"),
		Env:      nodeEnv(),
		Progress: c.App.ErrWriter,
		Timeout:  3 * time.Minute,
		RestoreNewCluster: func(cfg *config.Config, path string) error {
			_, err := restore.NewCluster(cfg, path)
			return err
		},
		PromoteDisaster: func(cfg *config.Config, site string, fenced []string) error {
			_, err := disaster.Promote(cfg, site, fenced)
			return err
		},
	})
	if err != nil {
		return exit(exitFailed, err)
	}
	return finishDrill(c, rep, asJSON)
}

func liveDrillAction(c *cli.Context, asJSON bool) error {
	if c.String("site") == "" {
		return exit(exitUsage, errors.New("--live needs --site: the site to switch to and back from"))
	}
	cl, token, err := tokenClient(c, newSecretInput(c))
	if err != nil {
		return err
	}
	rep, err := drill.RunLive(c.Context, drill.LiveOptions{
		Address: cl.Addr(), Client: cl.HTTPClient(), Token: token, Site: c.String("site"),
		MaxSnapshotAge: c.Duration("max-snapshot-age"), DryRun: c.Bool("dry-run"),
		Progress: c.App.ErrWriter,
	})
	if err != nil {
		return exit(exitFailed, err)
	}
	return finishDrill(c, rep, asJSON)
}

// nodeEnv is the drill nodes' environment: the drill's (the HSM module's
// settings), without what would make a node talk to systemd or take this
// command's token.
func nodeEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name == systemd.EnvNotifySocket || name == systemd.EnvWatchdogUsec || name == systemd.EnvWatchdogPID || name == envToken {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// finishDrill writes and prints the report; any failed check is exit 1.
func finishDrill(c *cli.Context, rep *drill.Report, asJSON bool) error {
	md, js, werr := rep.Write(c.String("report-dir"))
	if asJSON {
		printJSON(c.App.Writer, rep)
	} else {
		fmt.Fprint(c.App.Writer, rep.Markdown())
	}
	if werr != nil {
		return exit(exitFailed, fmt.Errorf("the report could not be written: %w", werr))
	}
	fmt.Fprintf(c.App.ErrWriter, "Report: %s, %s\n", md, js)
	if !rep.Passed {
		return exit(exitFailed, errors.New("the drill failed: see the checks above"))
	}
	return nil
}
