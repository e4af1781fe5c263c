package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/appliance"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
)

func geoCommand() *cli.Command {
	return &cli.Command{
		Name:  "geo",
		Usage: "see and move the cluster's Geo primary site (nodes with a geo block)",
		Subcommands: []*cli.Command{
			{
				Name:   "status",
				Usage:  "every node of the topology as the active node sees it: site, vote (desired and actual), leader, lag; the reconciler's decision",
				Flags:  append(clientFlags(), formatFlag()),
				Action: geoStatusAction,
			},
			{
				Name: "promote",
				Usage: "planned switchover: make --site the primary site (its nodes vote, leadership moves to its preferred node, the old site's nodes become replicas); " +
					"pre-flight checks first; needs a token with sudo on " + appliance.GeoPolicyPath,
				Description: "Every node should be up. The command waits until the cluster converged (--wait); stopped half-way, the cluster keeps working " +
					"and running the command again finishes it. A topology file that names another primary later wins: Geo stays the source of truth.",
				Flags: append(clientFlags(), formatFlag(),
					&cli.StringFlag{Name: "token-file", Usage: "file holding a token with sudo on " + appliance.GeoPolicyPath + " (default: $" + envToken + ", the first line of standard input, or a prompt)"},
					&cli.StringFlag{Name: "site", Required: true, Usage: "the Geo site to make primary"},
					&cli.BoolFlag{Name: "dry-run", Usage: "run the pre-flight checks and print the plan; change nothing"},
					&cli.DurationFlag{Name: "wait", Value: 5 * time.Minute, Usage: "how long to wait for the switchover to converge (0: do not wait)"},
					&cli.BoolFlag{Name: "force", Usage: "disaster promotion, when the primary site is gone: run on every node of --site with its appliance stopped, then start them (needs --config and --fenced-site; no token)"},
					&cli.StringSliceFlag{Name: "fenced-site", Usage: "with --force: a site whose nodes held a vote, and which you confirm is stopped or cut off for good (repeat for several)"},
					&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "with --force: this node's config file"}),
				Action: geoPromoteAction,
			},
			{
				Name: "rejoin",
				Usage: "bring back a node that a disaster promotion left behind: with its appliance stopped, set its Raft data aside " +
					"(kept in the data dir) so that it joins the promoted cluster as a non-voter when it starts",
				Flags: []cli.Flag{formatFlag(),
					&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Required: true, Usage: "this node's config file"},
					&cli.BoolFlag{Name: "yes", Usage: "do it (without it, say what would be done)"}},
				Action: geoRejoinAction,
			},
		},
	}
}

// activeStatus reads the status of the active node: the one at --address,
// or the leader it names.
func activeStatus(cl *apiClient) (client.Status, *apiClient, error) {
	st, active, _, err := activeStatusNote(cl)
	return st, active, err
}

// leaderAskTimeout bounds the call to the leader a node names: in a
// disaster that leader may be gone, paused or cut off, and the node asked
// answers instead.
const leaderAskTimeout = 5 * time.Second

// activeStatusNote is activeStatus; when the leader the node at --address
// names does not answer, it is that node's own view, and note says so.
func activeStatusNote(cl *apiClient) (client.Status, *apiClient, string, error) {
	var st client.Status
	if err := cl.call("GET", "status", nil, &st, ""); err != nil {
		return st, cl, "", err
	}
	if st.State == client.StateActive || st.LeaderAPIAddr == "" {
		return st, cl, "", nil
	}
	leader := cl.with(strings.TrimRight(st.LeaderAPIAddr, "/"), leaderAskTimeout)
	var lst client.Status
	if err := leader.call("GET", "status", nil, &lst, ""); err != nil {
		// The node's own view, then.
		return st, cl, fmt.Sprintf("the active node %s knows of (%s) did not answer: %v; this is %s's own view", st.NodeID, st.LeaderAPIAddr, err, st.NodeID), nil
	}
	return lst, leader, "", nil
}

func geoStatusAction(c *cli.Context) error {
	asJSON, err := jsonOut(c)
	if err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	st, _, note, err := activeStatusNote(cl)
	if err != nil {
		return err
	}
	if st.Geo == nil {
		return exit(exitFailed, fmt.Errorf("%s has no geo block: Geo is off on this node", st.NodeID))
	}
	if note != "" {
		fmt.Fprintln(c.App.ErrWriter, "Note: "+note)
	}
	if asJSON {
		printJSON(c.App.Writer, st.Geo)
		return nil
	}
	printGeo(c.App.Writer, st.NodeID, st.Geo)
	return nil
}

func printGeo(w io.Writer, node string, g *client.GeoStatus) {
	fmt.Fprintf(w, "Primary site %s (from %s), seen by %s\n", g.PrimarySite, g.PrimarySource, node)
	if g.TopologyError != "" {
		fmt.Fprintf(w, "Topology refused (running on the previous one): %s\n", g.TopologyError)
	}
	if g.ClusterFileError != "" {
		fmt.Fprintf(w, "gitlab-cluster.json: %s\n", g.ClusterFileError)
	}
	if g.Fenced != "" {
		fmt.Fprintf(w, "FENCED: %s\n", g.Fenced)
	}
	if e := g.Epoch; e.Number > 0 {
		fmt.Fprintf(w, "Epoch %d: site %s promoted at %s (geo promote --force)\n", e.Number, e.Site, e.At.Format(time.RFC3339))
	}
	if r := g.RPO; r != nil {
		fmt.Fprintf(w, "RPO: kept every entry up to index %d (%s's log, appended %s); the newest a promoted node had: %d (%s, %s); lost at most %d entries, %.3f s\n",
			r.KeptIndex, r.KeptBy, stamp(r.KeptAt), r.NewestIndex, r.NewestNode, stamp(r.NewestAt), r.LostEntriesAtMost, r.LostSeconds)
	}
	fmt.Fprintf(w, "Reconciler: %s\n", g.Reconciler)
	if s := g.LastStep; s != nil {
		result := "done"
		if s.Error != "" {
			result = "failed: " + s.Error
		}
		fmt.Fprintf(w, "Last step: %s at %s, %s\n", s.Step.String(), s.At.Format(time.RFC3339), result)
	}
	for _, n := range g.Notes {
		fmt.Fprintf(w, "Note: %s\n", n)
	}
	if len(g.Nodes) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSITE\tVOTE (WANTED)\tLEADER\tSTATE\tAPPLIED\tLAG\tEPOCH\tLAST CONTACT")
	for _, n := range g.Nodes {
		state := "unreachable"
		switch {
		case !n.InRaft && n.Reachable:
			state = "not joined"
		case n.Sealed:
			state = "sealed"
		case n.Ready:
			state = "ready"
		case n.Reachable:
			state = "not ready: " + n.NotReady
		}
		fmt.Fprintf(tw, "%s\t%s\t%s (%s)\t%s\t%s\t%d\t%d\t%d\t%s\n", n.ID, n.Site, vote(n.Voter, n.InRaft), vote(n.DesiredVoter, true),
			yes(n.Leader), state, n.AppliedIndex, n.Lag, n.Epoch, n.LastContact)
	}
	tw.Flush()
}

func vote(v, in bool) string {
	switch {
	case !in:
		return "-"
	case v:
		return "voter"
	}
	return "non-voter"
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return ""
}

func geoPromoteAction(c *cli.Context) error {
	asJSON, err := jsonOut(c)
	if err != nil {
		return err
	}
	if c.Bool("force") {
		return geoForceAction(c, asJSON)
	}
	if c.IsSet("fenced-site") {
		return exit(exitUsage, errors.New("--fenced-site goes with --force (a disaster promotion)"))
	}
	cl, token, err := tokenClient(c, newSecretInput(c))
	if err != nil {
		return err
	}
	site := c.String("site")
	var res client.PromoteResult
	var active *apiClient
	var callErr error
	// Leadership may move while a switchover runs: find the active node
	// again and retry while the answer is "not the active node".
	for attempt := 0; ; attempt++ {
		if _, active, err = activeStatus(cl); err != nil {
			return err
		}
		res, callErr = active.Promote(context.Background(), client.PromoteRequest{Site: site, DryRun: c.Bool("dry-run")}, token)
		callErr = exitFor(callErr)
		if callErr == nil || attempt == 20 || !strings.Contains(callErr.Error(), appliance.ErrGeoNotActive.Error()) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if asJSON && (callErr == nil || len(res.Checks) > 0) {
		printJSON(c.App.Writer, res)
	} else if len(res.Checks) > 0 {
		printPromote(c.App.Writer, res)
	}
	if callErr != nil || !res.Started || c.Duration("wait") == 0 {
		return callErr
	}
	// Wait for the reconciler to converge on the new plan, following the
	// leader as it moves.
	deadline := time.Now().Add(c.Duration("wait"))
	last := ""
	for time.Now().Before(deadline) {
		st, _, err := activeStatus(active)
		if err == nil && st.Geo != nil {
			if st.Geo.Reconciler != last && !asJSON {
				fmt.Fprintf(c.App.ErrWriter, "%s: %s\n", st.NodeID, st.Geo.Reconciler)
				last = st.Geo.Reconciler
			}
			if st.State == client.StateActive && st.Geo.PrimarySite == site && st.Geo.Reconciler == "converged" {
				if !asJSON {
					fmt.Fprintf(c.App.Writer, "Site %s is primary: %s leads.\n", site, st.NodeID)
				}
				return nil
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	return exit(exitFailed, errors.New("the switchover is recorded but has not converged yet: the cluster keeps working; see `geo status`, and run the command again to wait for it"))
}

func printPromote(w io.Writer, res client.PromoteResult) {
	fmt.Fprintf(w, "Switchover %s -> %s: voters %v, preferred leader %q\n", res.From, res.Site, res.Voters, res.Leader)
	for _, ch := range res.Checks {
		mark := "ok  "
		if !ch.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s %-14s %s\n", mark, ch.Check, ch.Detail)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}
