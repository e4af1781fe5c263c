package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// Environment variables the client commands read. The appliance's own
// names: BAO_*/VAULT_* belong to other tools and are never read.
const (
	envAddr   = "GITLAB_SECRETS_APPLIANCE_ADDR"
	envCACert = "GITLAB_SECRETS_APPLIANCE_CACERT"
)

const defaultAddr = "http://127.0.0.1:8200"

// clientFlags pick the appliance a client command talks to.
func clientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "address", Value: defaultAddr, EnvVars: []string{envAddr},
			Usage: "URL of the appliance's API"},
		&cli.StringFlag{Name: "ca-cert", EnvVars: []string{envCACert},
			Usage: "PEM file of the CA that signed the appliance's TLS certificate (default: the system's)"},
	}
}

func formatFlag() cli.Flag {
	return &cli.StringFlag{Name: "format", Value: "table", Usage: "output format: table or json"}
}

func newApp() *cli.App {
	app := &cli.App{
		Name:  "gitlab-secrets-appliance",
		Usage: "GitLab's secrets manager: an embedded OpenBao server on Raft storage",
		Description: "Runs a node (server, dev) or operates a running one through its API " +
			"(init, unseal, status). Settings come from the config file and flags only; " +
			"BAO_* and VAULT_* environment variables are ignored.",
		HideVersion:           true,
		CustomAppHelpTemplate: cli.AppHelpTemplate + "\n" + exitCodesHelp + "\n",
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return exit(exitUsage, err)
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return exit(exitUsage, fmt.Errorf("unknown command %q; run %s --help for the list", c.Args().First(), c.App.Name))
			}
			cli.ShowAppHelp(c)
			return exit(exitUsage, nil)
		},
		ExitErrHandler: func(*cli.Context, error) {}, // run() maps errors to exit codes
		Commands: []*cli.Command{
			{
				Name:  "server",
				Usage: "run a node from a config file until SIGTERM or SIGINT",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Required: true,
						Usage: "config file: HCL, or JSON if it ends in .json"},
				},
				Action: serverAction,
			},
			{
				Name:  "dev",
				Usage: "run a single-node appliance for trying it out (plain HTTP on loopback, unseal key on disk)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8200", Usage: "loopback host:port for the API; the next port serves the cluster"},
					&cli.StringFlag{Name: "data-dir", Value: "dev-data", Usage: "directory for Raft data, the root token and the dev unseal key"},
					&cli.StringFlag{Name: "log-level", Value: "warn", Usage: "trace, debug, info, warn or error"},
				},
				Action: devAction,
			},
			{
				Name:  "init",
				Usage: "initialize a new cluster and print its unseal shares and root token, once",
				Flags: append(clientFlags(), formatFlag(),
					&cli.IntFlag{Name: "shares", Usage: "number of unseal shares (default: the config's seal.shamir.shares)"},
					&cli.IntFlag{Name: "threshold", Usage: "shares needed to unseal (default: the config's seal.shamir.threshold)"},
				),
				Action: initAction,
			},
			{
				Name:      "unseal",
				Usage:     "submit one unseal share, read from standard input or a prompt (never from arguments)",
				ArgsUsage: " ",
				Flags: append(clientFlags(), formatFlag(),
					&cli.BoolFlag{Name: "reset", Usage: "discard the shares submitted so far"},
				),
				Action: unsealAction,
			},
			{
				Name:   "status",
				Usage:  "show a node's state; exit code 2 if it is sealed or not initialized",
				Flags:  append(clientFlags(), formatFlag()),
				Action: statusAction,
			},
			{
				Name:  "config",
				Usage: "work with config files",
				Subcommands: []*cli.Command{{
					Name:      "validate",
					Usage:     "check a config file and list every problem in it",
					ArgsUsage: "FILE",
					Flags:     []cli.Flag{formatFlag()},
					Action:    configValidateAction,
				}},
			},
			{
				Name:   "version",
				Usage:  "print the appliance and OpenBao versions",
				Flags:  []cli.Flag{formatFlag()},
				Action: versionAction,
			},
		},
	}
	for _, c := range app.Commands {
		addExitCodes(c)
	}
	return app
}

func addExitCodes(c *cli.Command) {
	c.CustomHelpTemplate = cli.CommandHelpTemplate + "\n" + exitCodesHelp + "\n"
	for _, s := range c.Subcommands {
		addExitCodes(s)
	}
}
