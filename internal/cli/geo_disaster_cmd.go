package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo/disaster"
)

// geoForceAction is `geo promote --site B --force`: offline, on one node
// of site B whose appliance is stopped.
func geoForceAction(c *cli.Context, asJSON bool) error {
	if c.String("config") == "" {
		return exit(exitUsage, errors.New("--force works on this node's data: give its config file with --config (and stop its appliance first)"))
	}
	if c.Bool("dry-run") {
		return exit(exitUsage, errors.New("--force has no --dry-run: without --fenced-site it only says what it needs"))
	}
	cfg, err := config.Load(c.String("config"))
	if err != nil {
		return exit(exitConfig, err)
	}
	rep, err := disaster.Promote(cfg, c.String("site"), c.StringSlice("fenced-site"))
	if err != nil {
		return offlineError(err)
	}
	if asJSON {
		printJSON(c.App.Writer, rep)
		return nil
	}
	printDisaster(c.App.Writer, rep)
	return nil
}

func printDisaster(w io.Writer, r *disaster.PromoteReport) {
	s := r.Epoch.Survivors[0]
	fmt.Fprintf(w, "Node %s promoted for site %s: epoch %d.\n", r.Node, r.Site, r.Epoch.Number)
	fmt.Fprintf(w, "  its log: last index %d (term %d), appended at %s; applied index %d\n", s.LastIndex, s.LastTerm, stamp(s.LastAt), s.AppliedIndex)
	for site, ids := range r.OldVoters {
		fmt.Fprintf(w, "  old voters in %s: %s\n", site, strings.Join(ids, ", "))
	}
	fmt.Fprintf(w, "  fenced by your word: %s\n", strings.Join(r.FencedSites, ", "))
	fmt.Fprintf(w, "  new Raft configuration (%s): voters %s", r.PeersFile, strings.Join(r.Voters, ", "))
	if len(r.NonVoters) > 0 {
		fmt.Fprintf(w, ", non-voters %s", strings.Join(r.NonVoters, ", "))
	}
	fmt.Fprintf(w, "\n  Raft term %d -> %d (an old-site leader that reaches this node steps down)\n", r.TermBefore, r.TermAfter)
	fmt.Fprintf(w, "Run the same on every other node of site %s, then start them and unseal them. Once a node of %s is active,\n"+
		"`geo status` shows the RPO over every promoted node: the index the cluster kept and the newest any of them had.\n"+
		"Nodes of the old site that come back refuse to unseal; `geo rejoin` brings them back as non-voters.\n", r.Site, r.Site)
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "(unknown)"
	}
	return t.Format(time.RFC3339Nano)
}

func geoRejoinAction(c *cli.Context) error {
	asJSON, err := jsonOut(c)
	if err != nil {
		return err
	}
	cfg, err := config.Load(c.String("config"))
	if err != nil {
		return exit(exitConfig, err)
	}
	rep, err := disaster.Rejoin(c.Context, cfg, c.Bool("yes"))
	if err != nil {
		return offlineError(err)
	}
	if asJSON {
		printJSON(c.App.Writer, rep)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "Node %s set its Raft data aside in %s (epoch %d of site %s, as %s told).\n"+
		"Start the appliance and unseal it: it joins the cluster as a non-voter. Delete the old data once you no longer need it.\n",
		rep.Node, rep.SetAside, rep.Epoch.Number, rep.Epoch.Site, rep.From)
	return nil
}

// offlineError maps an offline Geo command's error to its exit code.
func offlineError(err error) error {
	var confirm *datadir.NeedsConfirmationError
	if errors.As(err, &confirm) {
		return exit(exitUsage, err)
	}
	if errors.Is(err, datadir.ErrInUse) {
		return exit(exitConfig, err)
	}
	return exit(exitFailed, err)
}
