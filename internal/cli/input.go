package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// secretInput reads tokens, shares and keys from a hidden terminal prompt
// or, when standard input is piped, one per line: never from the command
// line, where every user of the machine could read them. One per command,
// so that a piped token and the keys after it come from the same stream.
type secretInput struct {
	c        *cli.Context
	terminal bool
	lines    *bufio.Reader
}

func newSecretInput(c *cli.Context) *secretInput {
	return &secretInput{
		c:        c,
		terminal: term.IsTerminal(int(os.Stdin.Fd())),
		lines:    bufio.NewReader(io.LimitReader(os.Stdin, 1<<20)),
	}
}

// next reads one value, prompting with what on a terminal. ok is false at
// the end of piped input.
func (in *secretInput) next(what string) (value string, ok bool, err error) {
	if in.terminal {
		fmt.Fprintf(in.c.App.ErrWriter, "%s (input hidden): ", what)
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(in.c.App.ErrWriter)
		if err != nil {
			return "", false, exit(exitFailed, fmt.Errorf("reading the %s: %w", strings.ToLower(what), err))
		}
		v := strings.TrimSpace(string(b))
		return v, v != "", nil
	}
	for {
		line, err := in.lines.ReadString('\n')
		if v := strings.TrimSpace(line); v != "" {
			return v, true, nil
		}
		if errors.Is(err, io.EOF) {
			return "", false, nil
		}
		if err != nil {
			return "", false, exit(exitFailed, fmt.Errorf("reading standard input: %w", err))
		}
	}
}

// token reads an OpenBao token from --token-file, the environment, or the
// input (its first line when piped).
func (in *secretInput) token() (string, error) {
	if f := in.c.String("token-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", exit(exitUsage, fmt.Errorf("--token-file: %w", err))
		}
		return strings.TrimSpace(string(b)), nil
	}
	if t := os.Getenv(envToken); t != "" {
		return t, nil
	}
	t, ok, err := in.next("Token")
	if err != nil {
		return "", err
	}
	if !ok {
		return "", exit(exitUsage, fmt.Errorf("no token: pipe it to standard input, use --token-file or $%s, or run in a terminal to be prompted", envToken))
	}
	return t, nil
}

// tokenClient is the client and the caller's token for a command that
// needs one.
func tokenClient(c *cli.Context, in *secretInput) (*apiClient, string, error) {
	token, err := in.token()
	if err != nil {
		return nil, "", err
	}
	cl, err := newClient(c)
	return cl, token, err
}

// readShare reads one unseal share.
func readShare(c *cli.Context) (string, error) {
	s, ok, err := newSecretInput(c).next("Unseal share")
	if err != nil {
		return "", err
	}
	if !ok {
		return "", exit(exitUsage, errors.New("no share on standard input: pipe one in or run unseal in a terminal to be prompted"))
	}
	return s, nil
}
