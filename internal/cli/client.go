package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// apiClient is the client of one node as the commands use it: its
// errors carry the exit code they map to.
type apiClient struct {
	*client.Client
}

func newClient(c *cli.Context) (*apiClient, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if f := c.String("ca-cert"); f != "" {
		pool, err := config.ReadCAPool(f)
		if err != nil {
			return nil, exit(exitUsage, fmt.Errorf("--ca-cert: %w", err))
		}
		tlsConf.RootCAs = pool
	}
	timeout := client.DefaultTimeout
	if c.IsSet("timeout") {
		if timeout = c.Duration("timeout"); timeout <= 0 {
			return nil, exit(exitUsage, fmt.Errorf("--timeout %s: give a positive duration, e.g. 30s", timeout))
		}
	}
	return &apiClient{client.New(c.String("address"), client.Options{TLS: tlsConf, Timeout: timeout})}, nil
}

// with is a client of the node at addr that waits at most d (or the
// client's own deadline, if shorter) for each answer.
func (a *apiClient) with(addr string, d time.Duration) *apiClient {
	return &apiClient{a.With(addr, d)}
}

// call sends a request to /appliance/v1/path (or to path, for any path
// of the node's API: OpenBao's /v1/ too, whose errors read the same) and
// decodes a JSON answer into out. An error answer becomes an error with
// the appliance's message; no answer at all becomes an exitUnreachable
// error.
func (a *apiClient) call(method, path string, in, out any, token string) error {
	return exitFor(a.Call(context.Background(), method, path, in, out, token))
}

// exitFor gives a client error its exit code: an address no request can
// be made for is a usage error, no answer from an appliance
// exitUnreachable, anything else (the node's refusal, an answer that does
// not decode) exitFailed.
func exitFor(err error) error {
	var ae *client.AddressError
	var ue *client.UnreachableError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae):
		return exit(exitUsage, err)
	case errors.As(err, &ue):
		return exit(exitUnreachable, err)
	default:
		return exit(exitFailed, err)
	}
}

func jsonOut(c *cli.Context) (bool, error) {
	switch f := c.String("format"); f {
	case "json":
		return true, nil
	case "table":
		return false, nil
	default:
		return false, exit(exitUsage, fmt.Errorf("--format %q: use table or json", f))
	}
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func statusAction(c *cli.Context) error {
	asJSON, err := jsonOut(c)
	if err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	st, err := cl.Status(context.Background())
	if err != nil {
		return exitFor(err)
	}
	if asJSON {
		printJSON(c.App.Writer, st)
	} else {
		printStatus(c.App.Writer, st)
	}
	if st.Sealed || !st.Initialized {
		return exit(exitSealed, nil)
	}
	return nil
}

func printStatus(w io.Writer, st client.Status) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("Node", st.NodeID)
	row("State", st.State)
	row("Summary", st.Summary())
	row("Initialized", st.Initialized)
	row("Sealed", st.Sealed)
	for _, m := range st.Seal.Mechanisms {
		row("Seal ("+m.Type+")", describeMechanism(m))
	}
	row("API address", st.APIAddr)
	row("Cluster address", st.ClusterAddr)
	if st.LeaderAPIAddr != "" {
		row("Leader", st.LeaderAPIAddr)
	}
	row("Raft", fmt.Sprintf("voter: %v, peers: %d, applied index: %d", st.Raft.Voter, st.Raft.Peers, st.Raft.AppliedIndex))
	row("Version", fmt.Sprintf("%s (OpenBao %s)", st.Version, st.OpenBaoVersion))
	fipsMode := "off"
	if st.FIPS {
		fipsMode = "on"
	}
	row("FIPS 140-3", fipsMode)
	tw.Flush()
}

func initAction(c *cli.Context) error {
	asJSON, err := jsonOut(c)
	if err != nil {
		return err
	}
	if err := checkCounts(c, "shares", "threshold", "recovery-shares", "recovery-threshold"); err != nil {
		return err
	}
	req := client.InitRequest{
		Shares: c.Int("shares"), Threshold: c.Int("threshold"),
		RecoveryShares: c.Int("recovery-shares"), RecoveryThreshold: c.Int("recovery-threshold"),
	}
	if req.PGPKeys, err = readPGPKeys(c.StringSlice("pgp-keys")); err != nil {
		return err
	}
	if req.RecoveryPGPKeys, err = readPGPKeys(c.StringSlice("recovery-pgp-keys")); err != nil {
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
	res, err := cl.Init(context.Background(), req)
	if err != nil {
		return exitFor(err)
	}
	w := c.App.Writer
	out := initOutput{InitResult: res}
	if dir != "" {
		shareFiles, err := writeShares(dir, "unseal-share", res.UnsealShares)
		var keyFiles []string
		if err == nil {
			keyFiles, err = writeShares(dir, "recovery-key", res.RecoveryKeys)
		}
		if err != nil {
			// The cluster exists now: the shares must not be lost.
			fmt.Fprintln(c.App.ErrWriter, "Writing the share files failed; printing them instead.")
			dir = ""
		} else {
			// The secrets are in the files: the output names the files,
			// each under what it holds.
			out.UnsealShareFiles, out.RecoveryKeyFiles = shareFiles, keyFiles
			out.UnsealShares, out.RecoveryKeys = nil, nil
		}
	}
	if asJSON {
		printJSON(w, out)
		return nil
	}
	printInit(w, out)
	return nil
}

// initOutput is what init prints: OpenBao's answer, or, with --share-dir,
// the files that hold its shares and recovery keys instead of them.
type initOutput struct {
	client.InitResult
	UnsealShareFiles []string `json:"unseal_share_files,omitempty"`
	RecoveryKeyFiles []string `json:"recovery_key_files,omitempty"`
}

// printInit prints init's answer for the key ceremony: each unseal share
// and each recovery key under its own name, then what a quorum of each
// does. The two never mix: unseal shares unseal a node (Shamir), recovery
// keys never do; with a token that has sudo, a quorum of them authorizes
// a seal change or a key ceremony (generate-root, rekey).
func printInit(w io.Writer, res initOutput) {
	shares, keys := res.UnsealShares, res.RecoveryKeys
	inFiles := res.UnsealShareFiles != nil || res.RecoveryKeyFiles != nil
	if inFiles {
		shares, keys = res.UnsealShareFiles, res.RecoveryKeyFiles
	}
	for i, s := range shares {
		fmt.Fprintf(w, "Unseal share %d: %s\n", i+1, s)
	}
	for i, k := range keys {
		fmt.Fprintf(w, "Recovery key %d: %s\n", i+1, k)
	}
	fmt.Fprintf(w, "\nInitial root token: %s\n\n", res.RootToken)
	fmt.Fprintf(w, "The cluster is initialized and this node unsealed itself. Seal mechanisms: %s.\n", strings.Join(res.Mechanisms, ", "))
	if res.GitLabBootstrap != "" {
		fmt.Fprintf(w, "GitLab bootstrap (gitlab_rails_jwt, role app, policy secrets_manager): %s (`status` shows how it ends).\n", res.GitLabBootstrap)
	}
	fmt.Fprintln(w)
	if len(shares) > 0 {
		when := "after every restart"
		if slices.Contains(res.Mechanisms, seal.MechanismPKCS11) {
			when = "when the HSM cannot"
		}
		fmt.Fprintf(w, "Unseal shares: any %d of the %d unseal shares unseal a node %s (gitlab-secrets-appliance unseal).\n",
			res.UnsealThreshold, len(shares), when)
	}
	if len(keys) > 0 {
		fmt.Fprintf(w, "Recovery keys: any %d of the %d recovery keys, each time with a token that has sudo, authorize\n"+
			"  a seal change (gitlab-secrets-appliance seal ... --authorize-with recovery-keys),\n"+
			"  a new root token (generate-root), or a new root key or new recovery keys (rekey).\n"+
			"  Recovery keys never unseal a node.\n", res.RecoveryThreshold, len(keys))
	}
	what := "are shown only now"
	if inFiles {
		what = "are in the files listed above, mode 0600"
	}
	fmt.Fprintf(w, "Unseal shares and recovery keys %s. Hand each to a different\n"+
		"operator, keep the root token offline, and do not store them together.\n", what)
}

// describeMechanism is one status line for a seal mechanism.
func describeMechanism(m seal.MechanismStatus) string {
	var parts []string
	if !m.Enrolled {
		parts = append(parts, "not enrolled")
	}
	switch m.Type {
	case seal.MechanismPKCS11:
		if m.KeyLabel != "" {
			parts = append(parts, "key "+m.KeyLabel)
		}
		if m.Healthy != nil && *m.Healthy {
			parts = append(parts, "healthy")
		} else if m.Error != "" {
			parts = append(parts, "unavailable: "+m.Error)
		}
	case seal.MechanismShamir:
		if m.Threshold > 0 {
			parts = append(parts, fmt.Sprintf("%d of %d shares unseal", m.Threshold, m.Shares))
		}
		parts = append(parts, fmt.Sprintf("%d submitted", m.Progress))
	}
	if m.LastUsed {
		parts = append(parts, "used for the last unseal")
	}
	return strings.Join(parts, "; ")
}

func unsealAction(c *cli.Context) error {
	asJSON, err := jsonOut(c)
	if err != nil {
		return err
	}
	if c.NArg() > 0 {
		return exit(exitUsage, errors.New("unseal takes no arguments: a share on the command line would be visible to every user of this machine; type it at the prompt or pipe it to standard input"))
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	var p client.UnsealProgress
	// A reset carries one of the attempt's shares too: the node discards
	// the attempt only for someone who holds one.
	share, err := readShare(c)
	if err != nil {
		return err
	}
	if c.Bool("reset") {
		err = cl.call("POST", "unseal", map[string]any{"reset": true, "share": share}, &p, "")
	} else {
		err = cl.call("POST", "unseal", map[string]string{"share": share}, &p, "")
	}
	if asJSON {
		printJSON(c.App.Writer, p)
	} else if err == nil {
		switch {
		case c.Bool("reset"):
			fmt.Fprintf(c.App.Writer, "The unseal attempt was reset: %d of %d shares submitted (the share given for the reset is not counted).\n", p.Progress, p.Threshold)
		case !p.Sealed && p.Recovered:
			fmt.Fprintln(c.App.Writer, "The shares gave back the current seal key: seal operations work again.")
		case !p.Sealed && p.Threshold > 0:
			fmt.Fprintf(c.App.Writer, "Share accepted: %d of %d submitted to give back the current seal key; the node is unsealed.\n", p.Progress, p.Threshold)
		case p.Sealed && p.Recovered:
			fmt.Fprintln(c.App.Writer, "The shares recovered the seal key; the node unseals once it has joined its cluster.")
		case p.Sealed:
			fmt.Fprintf(c.App.Writer, "Share accepted: %d of %d submitted; the node is still sealed.\n", p.Progress, p.Threshold)
		default:
			fmt.Fprintln(c.App.Writer, "The node is unsealed.")
		}
	}
	return err
}
