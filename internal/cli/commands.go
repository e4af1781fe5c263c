package cli

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
)

// Environment variables the client commands read. The appliance's own
// names: BAO_*/VAULT_* belong to other tools and are never read.
const (
	envAddr   = "GITLAB_SECRETS_APPLIANCE_ADDR"
	envCACert = "GITLAB_SECRETS_APPLIANCE_CACERT"
	envToken  = "GITLAB_SECRETS_APPLIANCE_TOKEN"
)

const defaultAddr = "http://127.0.0.1:8200"

// clientFlags pick the appliance a client command talks to.
func clientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "address", Value: defaultAddr, EnvVars: []string{envAddr},
			Usage: "URL of the appliance's API"},
		&cli.StringFlag{Name: "ca-cert", EnvVars: []string{envCACert},
			Usage: "PEM file of the CA that signed the appliance's TLS certificate (default: the system's)"},
		&cli.DurationFlag{Name: "timeout", Value: client.DefaultTimeout,
			Usage: "how long the node has to answer each call; past it the command fails with exit 4"},
	}
}

func formatFlag() cli.Flag {
	return &cli.StringFlag{Name: "format", Value: "table", Usage: "output format: table or json"}
}

func shareDirFlag() cli.Flag {
	return &cli.StringFlag{Name: "share-dir", Usage: "write each share (and recovery key) to its own file (mode 0600) in this directory instead of printing it"}
}

func tokenFileFlag() cli.Flag {
	return &cli.StringFlag{Name: "token-file", Usage: "file holding a token with sudo on sys/appliance/seal (default: $" + envToken + ", the first line of standard input, or a prompt)"}
}

// sealFlags are the flags of the seal subcommands that start a change.
func sealFlags(shares bool) []cli.Flag {
	f := append(clientFlags(), formatFlag(), tokenFileFlag(), shareDirFlag(),
		&cli.StringFlag{Name: "authorize-with", Usage: "what authorizes the change: shares (the current unseal shares; the default when Shamir is enrolled) or recovery-keys (OpenBao's; the default when the HSM is the only mechanism)"})
	if shares {
		f = append(f,
			&cli.IntFlag{Name: "shares", Usage: "number of new Shamir shares (default: the config's)"},
			&cli.IntFlag{Name: "threshold", Usage: "shares needed to unseal (default: the config's)"},
			&cli.StringSliceFlag{Name: "pgp-keys", Usage: "files of base64 PGP public keys, one per share"})
	}
	return f
}

// continueFlags are the flags of seal authorize and seal verify (a
// recovery key is submitted with a token: --token-file).
func continueFlags() []cli.Flag {
	return append(clientFlags(), formatFlag(), shareDirFlag(), tokenFileFlag(),
		&cli.StringFlag{Name: "nonce", Usage: "the change's nonce, as the command that started it printed (checked against the change in progress)"})
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
		Before:         fipsSelfCheck,
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
				Usage: "initialize a new cluster: enroll every configured seal mechanism and print the shares, recovery keys and root token, once",
				Flags: append(clientFlags(), formatFlag(),
					&cli.IntFlag{Name: "shares", Usage: "number of Shamir unseal shares (default: the config's seal.shamir.shares)"},
					&cli.IntFlag{Name: "threshold", Usage: "shares needed to unseal (default: the config's seal.shamir.threshold)"},
					&cli.StringSliceFlag{Name: "pgp-keys", Usage: "files of base64 PGP public keys, one per share, to encrypt each share to its operator"},
					&cli.IntFlag{Name: "recovery-shares", Usage: "number of OpenBao recovery keys (for generate-root; default 5)"},
					&cli.IntFlag{Name: "recovery-threshold", Usage: "recovery keys needed (default 3)"},
					&cli.StringSliceFlag{Name: "recovery-pgp-keys", Usage: "files of base64 PGP public keys, one per recovery key"},
					shareDirFlag(),
				),
				Action: initAction,
			},
			{
				Name:      "unseal",
				Usage:     "submit one Shamir unseal share, read from standard input or a prompt (never from arguments)",
				ArgsUsage: " ",
				Flags: append(clientFlags(), formatFlag(),
					&cli.BoolFlag{Name: "reset", Usage: "discard the shares submitted so far; asks for one of the attempt's shares as proof (it is not counted)"},
				),
				Action: unsealAction,
			},
			{
				Name: "seal",
				Usage: "change the seal mechanisms of an unsealed cluster, on the active node: a token with sudo on sys/appliance/seal starts a change, " +
					"a quorum of the current unseal shares (or recovery keys) authorizes it, a quorum of the new shares given back commits it",
				Description: "Keys are read one per line from standard input (after the token, if it is piped too) or from hidden prompts, never from arguments. " +
					"What the input does not cover, each key holder finishes in turn with `seal authorize` and `seal verify`; until the new shares are verified nothing changes.",
				Subcommands: []*cli.Command{
					{
						Name:   "rotate-shares",
						Usage:  "replace the seal key and issue new Shamir shares; once verified, every earlier share is void",
						Flags:  sealFlags(true),
						Action: sealAction("rotate-shares"),
					},
					{
						Name:      "add",
						Usage:     "enroll a mechanism: pkcs11 (this node's configured HSM) or shamir (new shares)",
						ArgsUsage: "pkcs11|shamir",
						Flags:     sealFlags(true),
						Action:    sealAction("add"),
					},
					{
						Name:      "remove",
						Usage:     "stop a mechanism from opening the cluster (the seal key is replaced; removing pkcs11 issues new shares)",
						ArgsUsage: "pkcs11|shamir",
						Flags:     sealFlags(true),
						Action:    sealAction("remove"),
					},
					{
						Name:   "rewrap-hsm",
						Usage:  "wrap the seal key with the HSM key the config names now (after an HSM key change)",
						Flags:  sealFlags(false),
						Action: sealAction("rewrap-hsm"),
					},
					{
						Name:   "authorize",
						Usage:  "submit current unseal shares (or recovery keys) for the change in progress; the one that completes the quorum receives the new shares",
						Flags:  continueFlags(),
						Action: continueAction,
					},
					{
						Name:   "verify",
						Usage:  "give back new shares of the change in progress; the change is made when a quorum is in",
						Flags:  continueFlags(),
						Action: continueAction,
					},
					{
						Name:   "cancel",
						Usage:  "cancel the change in progress; nothing changes",
						Flags:  append(clientFlags(), tokenFileFlag(), &cli.StringFlag{Name: "nonce", Usage: "the change's nonce (default: whichever is in progress)"}),
						Action: cancelAction,
					},
					{
						Name:   "status",
						Usage:  "show the seal change in progress, if any",
						Flags:  append(clientFlags(), formatFlag()),
						Action: sealStatusAction,
					},
				},
			},
			{
				Name:  "gitlab",
				Usage: "set up OpenBao for GitLab",
				Subcommands: []*cli.Command{{
					Name: "bootstrap",
					Usage: "create or update the gitlab_rails_jwt auth mount, GitLab Rails' privileged role and its policy " +
						"from the config's gitlab block (init does it once; run it again after changing the block, or to drop a withdrawn GitLab key)",
					Flags: append(clientFlags(), formatFlag(),
						&cli.StringFlag{Name: "token-file", Usage: "file holding a token allowed to manage auth mounts and policies (default: $" + envToken + ", standard input, or a prompt)"}),
					Action: gitlabBootstrapAction,
				}},
			},
			geoCommand(),
			snapshotCommand(),
			checkCommand(),
			drillCommand(),
			rollingRestartCommand(),
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
					Usage:     "check a config file and list every problem in it; with --user, also that this user can write data_dir, snapshot.directory and the audit files and read the TLS and PIN files",
					ArgsUsage: "FILE",
					Flags: []cli.Flag{formatFlag(), &cli.StringFlag{Name: "user",
						Usage: "the user the node runs as, USER or USER:GROUP[:GROUP...] as chpst -u takes it: its paths are tried with those credentials (root can check any user)"}},
					Action: configValidateAction,
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

// addExitCodes puts the exit codes in c's help, and gives a command that
// only groups subcommands an action: without a subcommand, or with an
// unknown one, it prints its help and exits 64 (a missing argument).
func addExitCodes(c *cli.Command) {
	c.CustomHelpTemplate = cli.CommandHelpTemplate + "\n" + exitCodesHelp + "\n"
	if len(c.Subcommands) > 0 && c.Action == nil {
		c.Action = func(ctx *cli.Context) error {
			if ctx.NArg() > 0 {
				return exit(exitUsage, fmt.Errorf("unknown command %q for %s; run %s %s --help for the list", ctx.Args().First(), c.Name, ctx.App.Name, c.Name))
			}
			cli.ShowSubcommandHelp(ctx)
			return exit(exitUsage, fmt.Errorf("%s needs a subcommand", c.Name))
		}
	}
	for _, s := range c.Subcommands {
		addExitCodes(s)
	}
}

// positional is the command's positional arguments, taking the flags an
// operator wrote after them (`snapshot save FILE --address X`): urfave/cli
// stops reading flags at the first argument.
func positional(c *cli.Context) ([]string, error) {
	args := c.Args().Slice()
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || a == "-" {
			out = append(out, a)
			continue
		}
		var flag cli.Flag
		for _, f := range c.Command.Flags {
			for _, n := range f.Names() {
				if n == name {
					flag = f
				}
			}
		}
		if flag == nil {
			return nil, exit(exitUsage, fmt.Errorf("flag provided but not defined: %s", a))
		}
		if _, isBool := flag.(*cli.BoolFlag); isBool && !hasValue {
			value = "true"
		} else if !hasValue {
			if i+1 >= len(args) {
				return nil, exit(exitUsage, fmt.Errorf("flag needs an argument: %s", a))
			}
			i++
			value = args[i]
		}
		if err := c.Set(name, value); err != nil {
			return nil, exit(exitUsage, fmt.Errorf("%s: %w", a, err))
		}
	}
	return out, nil
}
