package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/appliance"
	"golang.org/x/term"
)

// sealAction returns the action of one `seal` subcommand.
func sealAction(op string) cli.ActionFunc {
	return func(c *cli.Context) error {
		asJSON, err := jsonOut(c)
		if err != nil {
			return err
		}
		req := appliance.SealChange{Shares: c.Int("shares"), Threshold: c.Int("threshold")}
		switch op {
		case "add", "remove":
			if c.NArg() != 1 {
				return exit(exitUsage, fmt.Errorf("seal %s takes one argument: pkcs11 or shamir", op))
			}
			req.Mechanism = c.Args().First()
		default:
			if c.NArg() != 0 {
				return exit(exitUsage, fmt.Errorf("seal %s takes no arguments", op))
			}
		}
		if req.PGPKeys, err = readPGPKeys(c.StringSlice("pgp-keys")); err != nil {
			return err
		}
		dir, err := prepareShareDir(c)
		if err != nil {
			return err
		}
		cl, token, err := tokenClient(c)
		if err != nil {
			return err
		}
		var res appliance.SealChangeResult
		if err := cl.call("POST", "seal/"+op, req, &res, token); err != nil {
			return err
		}
		if dir != "" && len(res.UnsealShares) > 0 {
			if files, err := writeShares(dir, fmt.Sprintf("unseal-share-g%d", res.Generation), res.UnsealShares); err == nil {
				res.UnsealShares = files
			} else {
				fmt.Fprintln(c.App.ErrWriter, "Writing the share files failed; printing them instead.")
				dir = ""
			}
		}
		w := c.App.Writer
		if asJSON {
			printJSON(w, res)
			return nil
		}
		for i, s := range res.UnsealShares {
			fmt.Fprintf(w, "Unseal share %d: %s\n", i+1, s)
		}
		fmt.Fprintf(w, "Seal mechanisms now: %s (generation %d).\n", strings.Join(res.Mechanisms, ", "), res.Generation)
		if len(res.UnsealShares) > 0 {
			fmt.Fprintf(w, "Any %d of these %d new shares unseal; every earlier share is void. Hand them out now: they are not shown again.\n",
				res.UnsealThreshold, len(res.UnsealShares))
		}
		return nil
	}
}

// tokenClient is the client and the caller's token for a command that
// needs one.
func tokenClient(c *cli.Context) (*apiClient, string, error) {
	token, err := readToken(c)
	if err != nil {
		return nil, "", err
	}
	cl, err := newClient(c)
	return cl, token, err
}

// readToken reads an OpenBao token from --token-file, the environment,
// standard input when piped, or a hidden prompt: never from the command line.
func readToken(c *cli.Context) (string, error) {
	if f := c.String("token-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", exit(exitUsage, fmt.Errorf("--token-file: %w", err))
		}
		return strings.TrimSpace(string(b)), nil
	}
	if t := os.Getenv(envToken); t != "" {
		return t, nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		// Piped: the first line of standard input.
		line, _ := bufio.NewReader(io.LimitReader(os.Stdin, 64<<10)).ReadString('\n')
		if t := strings.TrimSpace(line); t != "" {
			return t, nil
		}
		return "", exit(exitUsage, fmt.Errorf("no token: pipe it to standard input, use --token-file or $%s, or run in a terminal to be prompted", envToken))
	}
	fmt.Fprint(c.App.ErrWriter, "Token (input hidden): ")
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(c.App.ErrWriter)
	if err != nil {
		return "", exit(exitFailed, fmt.Errorf("reading the token: %w", err))
	}
	return strings.TrimSpace(string(b)), nil
}

// readPGPKeys reads base64 PGP public keys, one file each, as bao's
// -pgp-keys does.
func readPGPKeys(files []string) ([]string, error) {
	var keys []string
	for _, f := range files {
		for _, name := range strings.Split(f, ",") {
			b, err := os.ReadFile(strings.TrimSpace(name))
			if err != nil {
				return nil, exit(exitUsage, fmt.Errorf("PGP key file: %w", err))
			}
			keys = append(keys, strings.TrimSpace(string(b)))
		}
	}
	return keys, nil
}

// prepareShareDir checks --share-dir before anything irreversible runs.
func prepareShareDir(c *cli.Context) (string, error) {
	dir := c.String("share-dir")
	if dir == "" {
		return "", nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", exit(exitUsage, fmt.Errorf("--share-dir: %w", err))
	}
	probe := filepath.Join(dir, ".write-test")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		return "", exit(exitUsage, fmt.Errorf("--share-dir: cannot write in %s: %w", dir, err))
	}
	os.Remove(probe)
	return dir, nil
}

// writeShares writes each value to <dir>/<prefix>-<n> (mode 0600, never
// overwriting) and returns the paths.
func writeShares(dir, prefix string, values []string) ([]string, error) {
	var files []string
	for i, v := range values {
		p := filepath.Join(dir, fmt.Sprintf("%s-%d", prefix, i+1))
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return files, err
		}
		_, err = f.WriteString(v + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return files, errors.Join(err, os.Remove(p))
		}
		files = append(files, p)
	}
	return files, nil
}
