package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// sealAction returns the action that starts one seal change and drives it
// as far as the input allows: a quorum of the current keys, then the new
// shares given back. What is left is done with `seal authorize` and
// `seal verify`, by each key holder in turn.
func sealAction(op string) cli.ActionFunc {
	return func(c *cli.Context) error {
		asJSON, err := jsonOut(c)
		if err != nil {
			return err
		}
		req := client.SealChange{Shares: c.Int("shares"), Threshold: c.Int("threshold"), AuthorizeWith: c.String("authorize-with")}
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
		if err := checkCounts(c, "shares", "threshold"); err != nil {
			return err
		}
		switch req.AuthorizeWith {
		case "", seal.AuthorizeShares:
		case "recovery-keys", seal.AuthorizeRecoveryKeys:
			req.AuthorizeWith = seal.AuthorizeRecoveryKeys
		default:
			return exit(exitUsage, fmt.Errorf("--authorize-with %q: use shares or recovery-keys", req.AuthorizeWith))
		}
		if req.PGPKeys, err = readPGPKeys(c.StringSlice("pgp-keys")); err != nil {
			return err
		}
		dir, err := prepareShareDir(c)
		if err != nil {
			return err
		}
		in := newSecretInput(c)
		cl, token, err := tokenClient(c, in)
		if err != nil {
			return err
		}
		var st seal.ChangeStatus
		if err := cl.call("POST", "seal/"+op, req, &st, token); err != nil {
			return err
		}
		return driveChange(c, cl, in, st, dir, asJSON, token)
	}
}

// checkCounts refuses negative or oversized share counts, by flag name.
// checkCounts refuses a count flag given out of 1 to 255: a flag left
// out takes the default, one given as 0 is a mistake, not a default.
func checkCounts(c *cli.Context, flags ...string) error {
	for _, f := range flags {
		if v := c.Int(f); c.IsSet(f) && (v < 1 || v > 255) {
			return exit(exitUsage, fmt.Errorf("--%s %d: use 1 to 255 (or leave it out for the default)", f, v))
		}
	}
	return nil
}

// continueAction is `seal authorize` and `seal verify`: it drives the
// change in progress on to its next step with the keys given.
func continueAction(c *cli.Context) error {
	asJSON, err := jsonOut(c)
	if err != nil {
		return err
	}
	dir, err := prepareShareDir(c)
	if err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	var st seal.ChangeStatus
	if err := cl.call("GET", "seal/change", nil, &st, ""); err != nil {
		return err
	}
	if st.Nonce == "" {
		return exit(exitFailed, errors.New("no seal change is in progress on this node (is it the active node? a restart or a leader change ends a change, with nothing changed)"))
	}
	if n := c.String("nonce"); n != "" && n != st.Nonce {
		return exit(exitFailed, fmt.Errorf("the change in progress has nonce %s, not %s: it is another change; check `seal status`", st.Nonce, n))
	}
	in := newSecretInput(c)
	token := ""
	if st.State == seal.ChangeAuthorizing && st.AuthorizeWith == seal.AuthorizeRecoveryKeys && c.Command.Name == "authorize" {
		// Recovery keys cannot be checked one by one: each comes with a
		// token with sudo on sys/appliance/seal.
		if token, err = in.token(); err != nil {
			return err
		}
	}
	return driveChange(c, cl, in, st, dir, asJSON, token)
}

// changeOutput is what a seal command prints as JSON.
type changeOutput struct {
	seal.ChangeStatus
	ShareFiles []string `json:"unseal_share_files,omitempty"`
}

// driveChange feeds keys to a change until it is done or the input ends,
// printing the new shares (or writing them to dir) the one time they come.
func driveChange(c *cli.Context, cl *apiClient, in *secretInput, st seal.ChangeStatus, dir string, asJSON bool, token string) error {
	msg := c.App.ErrWriter
	out := changeOutput{ChangeStatus: st}
	var err error
	if st.State == seal.ChangeAuthorizing {
		what := "current unseal shares"
		if st.AuthorizeWith == seal.AuthorizeRecoveryKeys {
			what = "recovery keys"
		}
		fmt.Fprintf(msg, "Seal change %s (nonce %s): %d of the %s authorize it; %d in so far.\n", st.Operation, st.Nonce, st.Threshold, what, st.Progress)
		st, err = feedChange(c, cl, in, st, "seal/authorize", "key", "Current key ("+what+")", token)
		if err != nil {
			return err
		}
		out.ChangeStatus = st
		if len(st.Shares) > 0 {
			out.ShareFiles = emitShares(c, dir, st, asJSON)
		}
	}
	if st.State == seal.ChangeVerifying {
		shares := st.Shares
		if st, err = feedChange(c, cl, in, st, "seal/verify", "share", "New unseal share (verification)", ""); err != nil {
			return err
		}
		st.Shares = shares
		out.ChangeStatus = st
	}
	if asJSON && dir != "" {
		out.Shares = nil // they are in the files
	}
	if asJSON {
		printJSON(c.App.Writer, out)
	}
	switch st.State {
	case seal.ChangeAuthorizing:
		fmt.Fprintf(msg, "Authorization: %d of %d keys in. Each remaining holder runs `gitlab-secrets-appliance seal authorize --nonce %s`.\n", st.Progress, st.Threshold, st.Nonce)
	case seal.ChangeVerifying:
		fmt.Fprintf(msg, "Nothing has changed yet. Verification: %d of %d new shares given back. Holders of the new shares run `gitlab-secrets-appliance seal verify --nonce %s`; the change is made when %d are in.\n",
			st.Progress, st.Threshold, st.Nonce, st.Threshold)
	case seal.ChangeDone:
		if !asJSON {
			fmt.Fprintf(c.App.Writer, "Seal changed: mechanisms now %s (generation %d).\n", strings.Join(st.Mechanisms, ", "), st.Generation)
			switch st.Operation {
			case seal.RotateShares, seal.RemoveHSM, seal.RemoveShamir:
				fmt.Fprintln(c.App.Writer, "Every earlier unseal share is void.")
			}
		}
	}
	return nil
}

// feedChange submits keys from in to step (with token, if not empty)
// until the change leaves st's state or the input ends. A refused key is reported and the next one
// read; the node keeps the progress.
func feedChange(c *cli.Context, cl *apiClient, in *secretInput, st seal.ChangeStatus, step, field, prompt, token string) (seal.ChangeStatus, error) {
	state := st.State
	var refused error
	for st.State == state {
		v, ok, err := in.next(fmt.Sprintf("%s %d of %d", prompt, st.Progress+1, st.Threshold))
		if err != nil {
			return st, err
		}
		if !ok {
			return st, refused
		}
		next := st
		next.Shares = nil
		err = cl.call("POST", step, map[string]string{"nonce": st.Nonce, field: v}, &next, token)
		if err != nil {
			var ee *exitError
			if errors.As(err, &ee) && ee.code == exitUnreachable || next.Nonce == "" {
				return st, err // the change is gone or the node is: nothing more to feed
			}
			fmt.Fprintln(c.App.ErrWriter, "Refused:", err)
			refused = err
			st.Progress = next.Progress
			continue
		}
		refused = nil
		shares := st.Shares
		st = next
		if len(st.Shares) == 0 {
			st.Shares = shares
		}
	}
	return st, nil
}

// emitShares prints the new shares or writes them to dir, once.
func emitShares(c *cli.Context, dir string, st seal.ChangeStatus, asJSON bool) []string {
	if dir != "" {
		files, err := writeShares(dir, fmt.Sprintf("unseal-share-g%d", st.NewGeneration), st.Shares)
		if err == nil {
			fmt.Fprintf(c.App.ErrWriter, "The %d new unseal shares (any %d unseal) are in: %s\n", len(files), st.NewThreshold, strings.Join(files, ", "))
			return files
		}
		fmt.Fprintln(c.App.ErrWriter, "Writing the share files failed; printing them instead.")
	}
	if asJSON {
		return nil // in the JSON printed at the end
	}
	for i, s := range st.Shares {
		fmt.Fprintf(c.App.Writer, "New unseal share %d: %s\n", i+1, s)
	}
	fmt.Fprintf(c.App.Writer, "Any %d of these %d new shares will unseal once the change is verified. Hand them out now: they are not shown again.\n",
		st.NewThreshold, len(st.Shares))
	return nil
}

// cancelAction ends the seal change in progress; nothing changes.
func cancelAction(c *cli.Context) error {
	cl, token, err := tokenClient(c, newSecretInput(c))
	if err != nil {
		return err
	}
	if err := cl.call("POST", "seal/cancel", map[string]string{"nonce": c.String("nonce")}, nil, token); err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, "Seal change cancelled; nothing changed.")
	return nil
}

// sealStatusAction shows the seal change in progress.
func sealStatusAction(c *cli.Context) error {
	asJSON, err := jsonOut(c)
	if err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	var st seal.ChangeStatus
	if err := cl.call("GET", "seal/change", nil, &st, ""); err != nil {
		return err
	}
	if asJSON {
		printJSON(c.App.Writer, st)
		return nil
	}
	if st.Nonce == "" {
		fmt.Fprintln(c.App.Writer, "No seal change is in progress on this node.")
		return nil
	}
	fmt.Fprintf(c.App.Writer, "Seal change %s, nonce %s, started %s by %s: %s, %d of %d in (generation %d",
		st.Operation, st.Nonce, st.Started.UTC().Format(time.RFC3339), orUnknown(st.RequestedBy), st.State, st.Progress, st.Threshold, st.Generation)
	if st.NewGeneration != 0 {
		fmt.Fprintf(c.App.Writer, " -> %d", st.NewGeneration)
	}
	fmt.Fprintln(c.App.Writer, ").")
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "an unnamed token"
	}
	return s
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
