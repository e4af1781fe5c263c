package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/atomicfile"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/snapshot"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/snapshot/restore"
	"golang.org/x/term"
)

const snapshotPath = "sys/storage/raft/snapshot"

func snapshotCommand() *cli.Command {
	tokenFlag := &cli.StringFlag{Name: "token-file", Usage: "file holding a token that may read (save) or update (restore) " + snapshotPath + " (default: $" + envToken + ", the first line of standard input, or a prompt)"}
	return &cli.Command{
		Name:  "snapshot",
		Usage: "save, restore and inspect Raft snapshots (every secret, encrypted as it is in Raft)",
		Subcommands: []*cli.Command{
			{
				Name:      "save",
				Usage:     "stream a snapshot from the active node into FILE (written whole or not at all, mode 0600, checked before it is named FILE)",
				ArgsUsage: "FILE",
				Flags:     append(clientFlags(), tokenFlag),
				Action:    snapshotSaveAction,
			},
			{
				Name:      "restore",
				Usage:     "replace the cluster's data with FILE's: a snapshot of this cluster only (checked before anything is sent); asks first unless --yes",
				ArgsUsage: "FILE",
				Flags: append(clientFlags(), tokenFlag, &cli.BoolFlag{Name: "yes", Usage: "do not ask"},
					&cli.BoolFlag{Name: "new-cluster", Usage: "offline, on a stopped node with an empty data_dir (--config): make it the first node of a new cluster holding the snapshot; it unseals with the snapshot's seal"},
					&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "with --new-cluster: the node's config file"}),
				Action: snapshotRestoreAction,
			},
			{
				Name:      "inspect",
				Usage:     "offline: a snapshot file's Raft index and term, size, checksum, cluster, seal generation; no key needed, nothing secret shown",
				ArgsUsage: "FILE",
				Flags:     []cli.Flag{formatFlag()},
				Action:    snapshotInspectAction,
			},
		},
	}
}

// fileArg is the one FILE argument; call it before reading any flag.
func fileArg(c *cli.Context) (string, error) {
	args, err := positional(c)
	if err != nil {
		return "", err
	}
	if len(args) != 1 {
		return "", exit(exitUsage, fmt.Errorf("%s takes one argument: the snapshot FILE", c.Command.FullName()))
	}
	return args[0], nil
}

func snapshotInspectAction(c *cli.Context) error {
	path, err := fileArg(c)
	if err != nil {
		return err
	}
	asJSON, err := jsonOut(c)
	if err != nil {
		return err
	}
	info, err := snapshot.InspectFile(path)
	if err != nil {
		return exit(exitFailed, err)
	}
	if asJSON {
		printJSON(c.App.Writer, info)
		return nil
	}
	printSnapshot(c.App.Writer, path, info)
	return nil
}

func printSnapshot(w io.Writer, path string, i *snapshot.Info) {
	fmt.Fprintf(w, "%s\n", path)
	fmt.Fprintf(w, "  Raft index %d, term %d; %d storage entries\n", i.Index, i.Term, i.Entries)
	fmt.Fprintf(w, "  %d bytes, sha256 %s\n", i.FileSize, i.SHA256)
	fmt.Fprintf(w, "  cluster %s, seal generation %d (%s), seal changed %s\n", i.Seal.Cluster, i.Seal.Generation, strings.Join(i.Seal.Mechanisms, " + "), i.Seal.Changed.Format(time.RFC3339))
	fmt.Fprintf(w, "  voters %s; Geo epoch %d\n", strings.Join(i.Voters, ", "), i.Epoch)
	if !i.Created.IsZero() {
		fmt.Fprintf(w, "  file written %s\n", i.Created.Format(time.RFC3339))
	}
}

// rawClient is an HTTP client without a deadline for the whole answer:
// a snapshot streams for as long as it is big.
func rawClient(cl *apiClient) *http.Client {
	h := *cl.HTTPClient()
	h.Timeout = 0
	return &h
}

// baoError is OpenBao's {"errors": [...]} answer as one message.
func baoError(resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Errors []string `json:"errors"`
	}
	msg := strings.TrimSpace(string(raw))
	if json.Unmarshal(raw, &e) == nil && len(e.Errors) > 0 {
		msg = strings.Join(e.Errors, "; ")
	}
	if resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("%s: the token may not use %s (%s)", resp.Status, snapshotPath, msg)
	}
	return fmt.Errorf("%s: %s", resp.Status, msg)
}

func snapshotSaveAction(c *cli.Context) error {
	path, err := fileArg(c)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(path); err == nil {
		return exit(exitFailed, fmt.Errorf("%s exists: choose another name, or remove it first", path))
	}
	st, active, token, err := activeWithToken(c, newSecretInput(c), "take the snapshot from")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, active.Addr()+"/v1/"+snapshotPath, nil)
	req.Header.Set("X-Vault-Token", token)
	resp, err := rawClient(active).Do(req)
	if err != nil {
		return exit(exitUnreachable, fmt.Errorf("the active node %s did not answer: %w", active.Addr(), err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return exit(exitFailed, fmt.Errorf("the active node %s refused the snapshot: %w", st.NodeID, baoError(resp)))
	}
	tmp, err := atomicfile.Create(filepath.Dir(path), filepath.Base(path))
	if err != nil {
		return exit(exitFailed, err)
	}
	defer tmp.Discard()
	var src io.Reader = resp.Body
	var p *progress
	if term.IsTerminal(int(os.Stderr.Fd())) {
		p = newProgress(c.App.ErrWriter, "saving")
		src = io.TeeReader(resp.Body, p)
	}
	_, err = io.Copy(tmp, src)
	p.done()
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return exit(exitFailed, fmt.Errorf("writing the snapshot to %s: %w; nothing was written at %s", tmp.Name(), err, path))
	}
	info, err := snapshot.InspectFile(tmp.Name())
	if err != nil {
		return exit(exitFailed, fmt.Errorf("the snapshot received from %s does not check out (%w); nothing was written at %s", st.NodeID, err, path))
	}
	if err := tmp.CommitNew(path); err != nil {
		return exit(exitFailed, fmt.Errorf("naming the snapshot %s: %w", path, err))
	}
	fmt.Fprintf(c.App.Writer, "Saved %s from %s: Raft index %d, %d bytes, sha256 %s\n", path, st.NodeID, info.Index, info.FileSize, info.SHA256)
	return nil
}

// activeWithToken is the caller's token and the active node (status and
// client); what says what the node is needed for.
func activeWithToken(c *cli.Context, in *secretInput, what string) (client.Status, *apiClient, string, error) {
	cl, token, err := tokenClient(c, in)
	if err != nil {
		return client.Status{}, nil, "", err
	}
	st, active, err := activeStatus(cl)
	if err != nil {
		return st, nil, "", err
	}
	if st.State != client.StateActive {
		return st, nil, "", exit(exitFailed, fmt.Errorf("no active node to %s (%s is %s)", what, st.NodeID, st.State))
	}
	return st, active, token, nil
}

func snapshotRestoreAction(c *cli.Context) error {
	path, err := fileArg(c)
	if err != nil {
		return err
	}
	if c.Bool("new-cluster") {
		return restoreNewCluster(c, path)
	}
	info, err := snapshot.InspectFile(path)
	if err != nil {
		return exit(exitFailed, fmt.Errorf("%w; nothing was changed", err))
	}
	st, active, token, err := activeWithToken(c, newSecretInput(c), "restore into")
	if err != nil {
		return err
	}
	if info.Seal.Cluster != st.Seal.Cluster {
		return exit(exitFailed, fmt.Errorf("%s is a snapshot of cluster %s, and this cluster is %s: its data is sealed by another cluster's keys, "+
			"and restoring it here would replace every secret with data this cluster's seal cannot open; nothing was changed", path, info.Seal.Cluster, st.Seal.Cluster))
	}
	if !c.Bool("yes") {
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return exit(exitUsage, fmt.Errorf("restoring %s replaces every secret of the cluster with the snapshot's (Raft index %d, now %d): add --yes to do it", path, info.Index, st.Raft.AppliedIndex))
		}
		fmt.Fprintf(c.App.ErrWriter, "Restoring %s replaces every secret of the cluster with the snapshot's (Raft index %d; the cluster is at %d).\nType \"restore\" to go on: ", path, info.Index, st.Raft.AppliedIndex)
		var answer string
		fmt.Fscanln(os.Stdin, &answer)
		if answer != "restore" {
			return exit(exitFailed, errors.New("not restored; nothing was changed"))
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return exit(exitFailed, err)
	}
	defer f.Close()
	req, _ := http.NewRequestWithContext(c.Context, http.MethodPost, active.Addr()+"/v1/"+snapshotPath, f)
	req.Header.Set("X-Vault-Token", token)
	req.ContentLength = info.FileSize
	resp, err := rawClient(active).Do(req)
	if err != nil {
		return exit(exitUnreachable, fmt.Errorf("the active node %s did not answer: %w; see `status` to know whether the restore happened", active.Addr(), err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return exit(exitFailed, fmt.Errorf("the active node %s refused the snapshot: %w", st.NodeID, baoError(resp)))
	}
	fmt.Fprintf(c.App.Writer, "Restored %s into the cluster through %s: Raft index %d of the snapshot.\n", path, st.NodeID, info.Index)
	return nil
}

func restoreNewCluster(c *cli.Context, path string) error {
	if c.String("config") == "" {
		return exit(exitUsage, errors.New("--new-cluster works on a stopped node's data_dir: give its config file with --config"))
	}
	cfg, err := config.Load(c.String("config"))
	if err != nil {
		return exit(exitConfig, err)
	}
	info, err := restore.NewCluster(cfg, path)
	if err != nil {
		return offlineError(err)
	}
	fmt.Fprintf(c.App.Writer, "Node %s now holds %s (Raft index %d, cluster %s, seal generation %d: %s).\n"+
		"Start it and unseal it with that seal (the HSM does it by itself; or the shares of that generation): it is a new\n"+
		"cluster of one with the snapshot's secrets and tokens. Other nodes join it with empty data dirs.\n",
		cfg.NodeID, path, info.Index, info.Seal.Cluster, info.Seal.Generation, strings.Join(info.Seal.Mechanisms, " + "))
	return nil
}

// progress prints how much has been copied, on a terminal.
type progress struct {
	w     io.Writer
	what  string
	n     int64
	shown time.Time
}

func newProgress(w io.Writer, what string) *progress { return &progress{w: w, what: what} }

func (p *progress) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if time.Since(p.shown) > 200*time.Millisecond {
		p.shown = time.Now()
		fmt.Fprintf(p.w, "\r%s: %.1f MiB", p.what, float64(p.n)/(1<<20))
	}
	return len(b), nil
}

func (p *progress) done() {
	if p != nil {
		fmt.Fprintf(p.w, "\r%s: %.1f MiB, done\n", p.what, float64(p.n)/(1<<20))
	}
}
