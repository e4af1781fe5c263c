package cli

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
)

func checkCommand() *cli.Command {
	return &cli.Command{
		Name: "check",
		Usage: "offline, on a stopped node: verify every file of its data dir (vault.db and raft/raft.db page by page, " +
			"every Raft log entry, the seal header, peers.json, the Geo epoch, the snapshot files) and say what to do about a damaged one; " +
			"exit 5 when a file is damaged or missing. --set-aside moves damaged Raft data aside (deleting nothing) so the node can be rebuilt",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Required: true, Usage: "the node's config file (its data_dir is checked)"},
			formatFlag(),
			&cli.BoolFlag{Name: "set-aside", Usage: "move the damaged vault.db and raft/ to <data_dir>/set-aside-<time>: raft/ alone when vault.db is sound and this node was its cluster's only voter " +
				"(it restarts from vault.db), else both (it starts empty, to rejoin its cluster or restore a snapshot)"},
			&cli.BoolFlag{Name: "empty", Usage: "with --set-aside: move vault.db too, even when raft/ alone would do (to rebuild the node from its cluster)"},
			&cli.BoolFlag{Name: "yes", Usage: "with --set-aside: do it (without, it only says what it would do)"},
		},
		Action: checkAction,
	}
}

func checkAction(c *cli.Context) error {
	asJSON, err := jsonOut(c)
	if err != nil {
		return err
	}
	if c.Bool("empty") && !c.Bool("set-aside") || c.Bool("yes") && !c.Bool("set-aside") {
		return exit(exitUsage, errors.New("--empty and --yes go with --set-aside"))
	}
	path := c.String("config")
	cfg, err := config.Load(path)
	if err != nil {
		return exit(exitConfig, err)
	}
	if c.Bool("set-aside") {
		return setAsideAction(c, cfg, path, asJSON)
	}
	r, err := datadir.Check(cfg)
	if err != nil {
		return offlineError(err)
	}
	r.SetConfigFile(path)
	if asJSON {
		printJSON(c.App.Writer, checkJSON(r))
	} else {
		printCheck(c.App.Writer, r)
	}
	if !r.Sound() {
		return exit(exitDamaged, nil)
	}
	return nil
}

// checkOutput is `check --format json`.
type checkOutput struct {
	DataDir  string         `json:"data_dir"`
	NodeID   string         `json:"node_id"`
	Sound    bool           `json:"sound"`
	Starts   bool           `json:"starts"`
	Files    []datadir.File `json:"files"`
	Refusal  string         `json:"refusal,omitempty"`
	Recovery []string       `json:"recovery,omitempty"`
	SetAside string         `json:"set_aside,omitempty"`
	Seconds  float64        `json:"elapsed_seconds"`
}

func checkJSON(r *datadir.Report) checkOutput {
	return checkOutput{DataDir: r.DataDir, NodeID: r.NodeID, Sound: r.Sound(), Starts: !r.StartRefused(), Files: r.Files,
		Refusal: r.Refusal, Recovery: r.RecoveryText(), SetAside: r.SetAside, Seconds: r.Elapsed.Seconds()}
}

func printCheck(w io.Writer, r *datadir.Report) {
	fmt.Fprintf(w, "Data dir %s (node %s), checked in %s\n\n", r.DataDir, r.NodeID, r.Elapsed.Round(time.Millisecond))
	for _, snaps := range []bool{false, true} {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		n := 0
		for _, f := range r.Files {
			if f.Snapshot != snaps {
				continue
			}
			if n++; n == 1 && snaps {
				fmt.Fprintf(w, "Snapshots in %s:\n", filepath.Dir(f.Path))
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", f.Name, f.State, f.Detail)
			if f.Action != "" {
				fmt.Fprintf(tw, "  \t\t-> %s\n", strings.ReplaceAll(f.Action, "{config}", "<config file>"))
			}
		}
		tw.Flush()
		if n > 0 {
			fmt.Fprintln(w)
		}
	}
	switch {
	case r.StartRefused():
		fmt.Fprintf(w, "The node refuses to start on this data dir: %s.\n", r.Refusal)
		if len(r.Recovery) > 0 {
			fmt.Fprintln(w, "What to do (keep every file of the data dir until one of these worked):")
			for i, s := range r.RecoveryText() {
				fmt.Fprintf(w, "  %d. %s\n", i+1, s)
			}
		}
	case !r.Sound():
		fmt.Fprintln(w, "The node starts on this data dir; see the files above for what to do.")
	default:
		fmt.Fprintln(w, "Every file is sound: the node starts on this data dir.")
	}
}

func setAsideAction(c *cli.Context, cfg *config.Config, path string, asJSON bool) error {
	rep, r, err := datadir.SetAside(cfg, c.Bool("empty"), c.Bool("yes"))
	if r != nil {
		r.SetConfigFile(path)
	}
	if errors.Is(err, datadir.ErrNothingToSetAside) {
		return exit(exitFailed, err)
	}
	if err != nil {
		return offlineError(err)
	}
	rep.Next = strings.ReplaceAll(rep.Next, "<config file>", path)
	if asJSON {
		printJSON(c.App.Writer, rep)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "Node %s: %s set aside in %s (nothing deleted).\n", rep.Node, strings.Join(rep.Moved, " and "), rep.SetAside)
	if rep.PeersFile != "" {
		fmt.Fprintf(c.App.Writer, "Wrote %s: this node alone votes.\n", rep.PeersFile)
	}
	fmt.Fprintln(c.App.Writer, rep.Next)
	return nil
}
