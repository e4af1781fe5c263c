// Package disaster holds the Geo operations on a stopped node: the
// disaster promotion of a site when the primary site is gone (`geo promote
// --force`) and the rejoin of a node that promotion left behind (`geo
// rejoin`).
//
// Disaster promotion and rejoin are offline commands: they run on a node
// whose appliance is stopped (they take the data dir's lock), by whoever
// may write its data dir. No network caller can ask for them, a GitLab
// Rails token included, and they need no active node to check a token:
// the primary site is gone, there is none. It is the same power that
// could write OpenBao's raft/peers.json by hand, with the checks and the
// epoch a hand-written file lacks.
package disaster

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	hraft "github.com/hashicorp/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
)

// termJump is how far a promotion moves the promoted nodes' Raft term, so
// that an old-site leader that reaches them steps down at its first
// contact instead of overwriting their logs. The step-down wakes the old
// node's Geo loop at once (a leader change), which asks its peers for
// their epochs and stops the node: well before an election timeout could
// give the old site a leader of a higher term still.
const termJump = 1 << 20

// PromoteReport is what `geo promote --force` did on this node.
type PromoteReport struct {
	Node string `json:"node"`
	Site string `json:"site"`
	// Epoch is the new epoch; its Survivors hold this node's log.
	Epoch geo.Epoch `json:"epoch"`
	// OldVoters are the Raft voters this node knew, by site.
	OldVoters   map[string][]string `json:"old_voters"`
	FencedSites []string            `json:"fenced_sites"`
	Voters      []string            `json:"voters"`
	NonVoters   []string            `json:"non_voters,omitempty"`
	TermBefore  uint64              `json:"term_before"`
	TermAfter   uint64              `json:"term_after"`
	PeersFile   string              `json:"peers_file"`
}

// Promote rebuilds the cluster from site's nodes when the primary site is
// gone: run on every node of site (each stopped), then start them. fenced
// must name every other site whose nodes held a vote: the operator's word
// that they are stopped or cut off from site for good.
func Promote(cfg *config.Config, site string, fenced []string) (*PromoteReport, error) {
	t, err := offlineTopology(cfg)
	if err != nil {
		return nil, err
	}
	mine, _, _ := t.SiteOf(cfg.NodeID)
	if _, ok := t.Site(site); !ok {
		return nil, fmt.Errorf("the topology has no site %s (sites: %s)", site, strings.Join(siteNames(t), ", "))
	}
	if mine.Name != site {
		return nil, fmt.Errorf("node %s is in site %s, not %s: run `geo promote --site %s --force` on the nodes of site %s", cfg.NodeID, mine.Name, site, site, site)
	}
	for _, f := range fenced {
		if f == site {
			return nil, fmt.Errorf("--fenced-site %s is the site being promoted", f)
		}
		if _, ok := t.Site(f); !ok {
			return nil, fmt.Errorf("--fenced-site %s: the topology has no such site (sites: %s)", f, strings.Join(siteNames(t), ", "))
		}
	}
	lock, err := datadir.Acquire(cfg.DataDir)
	if err != nil {
		return nil, datadir.StopFirst(err)
	}
	defer lock.Release()

	st, err := readOfflineState(cfg)
	if err != nil {
		return nil, err
	}
	rep := &PromoteReport{Node: cfg.NodeID, Site: site, OldVoters: map[string][]string{}, FencedSites: fenced}
	var need []string
	for _, id := range st.voters {
		s, _, ok := t.SiteOf(id)
		name := s.Name
		if !ok {
			name = "(not in the topology)"
		}
		rep.OldVoters[name] = append(rep.OldVoters[name], id)
		if name != site && !slices.Contains(need, name) {
			need = append(need, name)
		}
	}
	sort.Strings(need)
	var missing []string
	for _, s := range need {
		if !slices.Contains(fenced, s) {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return nil, &datadir.NeedsConfirmationError{Message: fmt.Sprintf(
			"the Raft voters this node knows include nodes of %s: stop them or cut them off from site %s for good, then confirm with --fenced-site %s. "+
				"A site that comes back unfenced and reaches none of the promoted nodes could keep acknowledging writes of its own",
			strings.Join(missing, ", "), site, strings.Join(missing, " --fenced-site "))}
	}

	pt, err := t.WithPrimary(site)
	if err != nil {
		return nil, err
	}
	plan, err := geo.PlanFor(pt)
	if err != nil {
		return nil, err
	}
	var conf hraft.Configuration
	for _, m := range plan.Members {
		if m.Site != site {
			continue
		}
		suffrage := hraft.Nonvoter
		if m.Voter {
			suffrage = hraft.Voter
			rep.Voters = append(rep.Voters, m.ID)
		} else {
			rep.NonVoters = append(rep.NonVoters, m.ID)
		}
		addr, err := config.RaftAddr(m.ClusterAddr)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", m.ID, err)
		}
		conf.Servers = append(conf.Servers, hraft.Server{ID: hraft.ServerID(m.ID), Address: hraft.ServerAddress(addr), Suffrage: suffrage})
	}

	// The term first, then the epoch, then peers.json: a command killed
	// half-way leaves a node that has not been promoted yet, and running
	// it again finishes it.
	if rep.TermBefore, rep.TermAfter, err = jumpTerm(cfg.DataDir); err != nil {
		return nil, err
	}
	rep.Epoch = geo.Epoch{
		Number:    st.epoch.Number + 1,
		Site:      site,
		At:        time.Now().UTC().Truncate(time.Second),
		Members:   append(append([]string{}, rep.Voters...), rep.NonVoters...),
		Survivors: []geo.Survivor{st.survivor},
	}
	if err := datadir.WriteEpochFile(cfg.DataDir, rep.Epoch); err != nil {
		return nil, fmt.Errorf("cannot write the new epoch: %w", err)
	}
	rep.PeersFile = filepath.Join(cfg.DataDir, "raft", "peers.json")
	if err := datadir.WritePeersJSON(rep.PeersFile, conf); err != nil {
		return nil, fmt.Errorf("cannot write %s: %w", rep.PeersFile, err)
	}
	return rep, nil
}

// jumpTerm moves the node's current Raft term termJump ahead.
func jumpTerm(dataDir string) (before, after uint64, err error) {
	store, err := openLogStore(filepath.Join(dataDir, "raft", "raft.db"))
	if err != nil {
		return 0, 0, err
	}
	defer store.Close()
	key := []byte("CurrentTerm") // hashicorp/raft's key in the stable store
	before, err = store.GetUint64(key)
	if err != nil && err.Error() != "not found" {
		return 0, 0, err
	}
	after = before + termJump
	if err := store.SetUint64(key, after); err != nil {
		return 0, 0, err
	}
	return before, after, nil
}
