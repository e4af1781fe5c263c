package cli

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/appliance"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/fips"
)

func configValidateAction(c *cli.Context) error {
	args, err := positional(c)
	if err != nil {
		return err
	}
	asJSON, err := jsonOut(c)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return exit(exitUsage, errors.New("config validate takes one argument: the config file"))
	}
	file := args[0]
	var cred *credential
	if spec := c.String("user"); spec != "" {
		if cred, err = lookupCredential(spec); err != nil {
			return exit(exitUsage, fmt.Errorf("--user: %w", err))
		}
	}
	cfg, err := config.Load(file)
	var ce *config.ConfigError
	if err != nil && !errors.As(err, &ce) {
		return exit(exitFailed, err)
	}
	if err == nil && cred != nil {
		// The paths, tried as the node's user: reconfigure and operators
		// validate as root, for whom every path is writable.
		var problems []config.Problem
		if err := cred.do(func() { problems = config.CheckAccess(cfg.AccessChecks(), cred.String()) }); err != nil {
			return exit(exitFailed, err)
		}
		if len(problems) > 0 {
			ce = &config.ConfigError{Source: file, Problems: problems}
		}
	}
	if asJSON {
		out := struct {
			File     string           `json:"file"`
			Valid    bool             `json:"valid"`
			Problems []config.Problem `json:"problems"`
		}{File: file, Valid: ce == nil, Problems: []config.Problem{}}
		if ce != nil {
			out.Problems = ce.Problems
		}
		printJSON(c.App.Writer, out)
		if ce != nil {
			return exit(exitConfig, nil)
		}
		return nil
	}
	if ce != nil {
		return exit(exitConfig, ce)
	}
	if cred != nil {
		fmt.Fprintf(c.App.Writer, "%s is valid, and %s can use its paths\n", file, cred)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "%s is valid\n", file)
	return nil
}

func versionAction(c *cli.Context) error {
	asJSON, err := jsonOut(c)
	if err != nil {
		return err
	}
	v := struct {
		Version   string    `json:"version"`
		OpenBao   string    `json:"openbao_version"`
		GoVersion string    `json:"go_version"`
		FIPS      fips.Info `json:"fips"`
	}{appliance.Version, appliance.OpenBaoVersion, runtime.Version(), fips.Current()}
	if asJSON {
		printJSON(c.App.Writer, v)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "gitlab-secrets-appliance %s (OpenBao %s, %s)\n%s\n", v.Version, v.OpenBao, v.GoVersion, v.FIPS)
	return nil
}

// fipsSelfCheck runs before every command but version and help: a FIPS
// build refuses to do anything with FIPS 140-3 mode off, and no build runs
// with GODEBUG=fips140=only (see package fips).
func fipsSelfCheck(c *cli.Context) error {
	switch c.Args().First() {
	case "version", "help", "h", "":
		return nil
	}
	if err := fips.SelfCheck(); err != nil {
		return exit(exitConfig, err)
	}
	return nil
}
