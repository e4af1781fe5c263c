package appliance

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	baoraft "github.com/openbao/openbao/physical/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo/reconciler"
	bolt "go.etcd.io/bbolt"
)

// Disaster promotion and rejoin are offline commands: they run on a node
// whose appliance is stopped (they take the data dir's lock), by whoever
// may write its data dir. No network caller can ask for them, a GitLab
// Rails token included, and they need no active node to check a token:
// the primary site is gone, there is none. It is the same power that
// could write OpenBao's raft/peers.json by hand, with the checks and the
// epoch a hand-written file lacks.

// termJump is how far a promotion moves the promoted nodes' Raft term, so
// that an old-site leader that reaches them steps down at its first
// contact instead of overwriting their logs. The step-down wakes the old
// node's Geo loop at once (a leader change), which asks its peers for
// their epochs and stops the node: well before an election timeout could
// give the old site a leader of a higher term still.
const termJump = 1 << 20

// DisasterReport is what `geo promote --force` did on this node.
type DisasterReport struct {
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

// PromoteDisaster rebuilds the cluster from site's nodes when the primary
// site is gone: run on every node of site (each stopped), then start them.
// fenced must name every other site whose nodes held a vote: the operator's
// word that they are stopped or cut off from site for good.
func PromoteDisaster(cfg *config.Config, site string, fenced []string) (*DisasterReport, error) {
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
	rep := &DisasterReport{Node: cfg.NodeID, Site: site, OldVoters: map[string][]string{}, FencedSites: fenced}
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
		addr, err := raftAddr(m.ClusterAddr)
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

// RejoinReport is what `geo rejoin` did on this node.
type RejoinReport struct {
	Node string `json:"node"`
	// Epoch is the cluster's epoch this node now belongs to, as From told.
	Epoch geo.Epoch `json:"epoch"`
	From  string    `json:"from"`
	// SetAside is where this node's old Raft data and seal floor went
	// (kept: they may hold writes acknowledged in the old site after the
	// promotion's RPO).
	SetAside string `json:"set_aside"`
}

// Rejoin sets aside the Raft data of a node that a disaster promotion left
// behind, so that it joins the new cluster as a non-voter when it starts.
// It asks the topology's nodes for their epoch and refuses when none is
// newer than this node's.
func Rejoin(ctx context.Context, cfg *config.Config, confirmed bool) (*RejoinReport, error) {
	t, err := offlineTopology(cfg)
	if err != nil {
		return nil, err
	}
	hc, err := reconciler.PeerClient(cfg.Geo)
	if err != nil {
		return nil, err
	}
	lock, err := datadir.Acquire(cfg.DataDir)
	if err != nil {
		return nil, datadir.StopFirst(err)
	}
	defer lock.Release()
	mine, err := datadir.ReadEpochFile(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	var newest geo.Epoch
	from, answered := "", 0
	for _, s := range t.Sites {
		for _, n := range s.Nodes {
			if n.ID == cfg.NodeID {
				continue
			}
			actx, cancel := context.WithTimeout(ctx, reconciler.PollWait)
			ps, err := reconciler.AskPeer(actx, hc, n.APIAddr)
			cancel()
			if err != nil || ps.NodeID != n.ID {
				continue
			}
			answered++
			if ps.Epoch.Number > newest.Number {
				newest, from = ps.Epoch, n.ID
			}
		}
	}
	switch {
	case answered == 0:
		return nil, errors.New("no other node of the topology answered: start the promoted site's nodes first, then run geo rejoin again")
	case newest.Number <= mine.Number:
		return nil, fmt.Errorf("no node that answered is in a newer epoch than this node (epoch %d): there is nothing to rejoin; start this node as it is", mine.Number)
	}
	aside := filepath.Join(cfg.DataDir, fmt.Sprintf("replaced-epoch-%d-%s", mine.Number, time.Now().UTC().Format("20060102T150405Z")))
	if !confirmed {
		return nil, &datadir.NeedsConfirmationError{Message: fmt.Sprintf(
			"node %s is in epoch %d (site %s promoted at %s); this node's Raft data (epoch %d) would be moved to %s and the node would join the new cluster as a non-voter when it starts. Add --yes to do it",
			from, newest.Number, newest.Site, newest.At.Format(time.RFC3339), mine.Number, aside)}
	}
	if err := os.Mkdir(aside, 0o700); err != nil {
		return nil, err
	}
	if err := datadir.OwnLikeDir(aside, cfg.DataDir); err != nil {
		return nil, err
	}
	// The seal floor goes too: the new cluster's seal is the one to
	// follow, and it may be older than what this node saw (a seal change
	// the old site made after site B's last replicated index).
	for _, name := range []string{"raft", "vault.db", datadir.SealHeaderFile} {
		err := os.Rename(filepath.Join(cfg.DataDir, name), filepath.Join(aside, name))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("cannot set %s aside: %w", name, err)
		}
	}
	if err := datadir.WriteEpochFile(cfg.DataDir, newest); err != nil {
		return nil, fmt.Errorf("cannot write the epoch: %w", err)
	}
	return &RejoinReport{Node: cfg.NodeID, Epoch: newest, From: from, SetAside: aside}, nil
}

// offlineTopology is the topology an offline command works from; the node
// must be in it.
func offlineTopology(cfg *config.Config) (*geo.Topology, error) {
	if cfg.Geo == nil {
		return nil, errors.New("the config has no geo block: Geo commands need the topology")
	}
	t := cfg.Geo.Validated()
	if t == nil {
		var err error
		if t, err = cfg.Geo.Topology(); err != nil {
			return nil, err
		}
	}
	if _, _, ok := t.SiteOf(cfg.NodeID); !ok {
		return nil, fmt.Errorf("node_id %s is not a node of the topology", cfg.NodeID)
	}
	return t, nil
}

func siteNames(t *geo.Topology) []string {
	var out []string
	for _, s := range t.Sites {
		out = append(out, s.Name)
	}
	return out
}

// offlineState is what a stopped node's data says.
type offlineState struct {
	voters   []string
	epoch    geo.Epoch
	survivor geo.Survivor
}

// readOfflineState reads a stopped node's FSM (its applied index, the
// Raft configuration it applied, the epoch in Raft) and its log's end.
func readOfflineState(cfg *config.Config) (offlineState, error) {
	var st offlineState
	logDB := filepath.Join(cfg.DataDir, "raft", "raft.db")
	if _, err := os.Stat(logDB); err != nil {
		return st, fmt.Errorf("this node has no Raft data (%s): it has nothing to promote; it can join the promoted site once that runs", logDB)
	}
	// bbolt panics on a damaged file: verify both first (see datadir.Damage).
	for _, p := range []string{filepath.Join(cfg.DataDir, "vault.db"), logDB} {
		if d := datadir.Damage(p); d != "" {
			return st, fmt.Errorf("%s: %s: this node's data cannot be promoted; promote the site's other nodes, and see `gitlab-secrets-appliance check --config <config file>` for this one", p, d)
		}
	}
	fsm, err := baoraft.NewFSM(cfg.DataDir, cfg.NodeID, hclog.NewNullLogger())
	if err != nil {
		return st, fmt.Errorf("cannot open %s: %w", filepath.Join(cfg.DataDir, "vault.db"), err)
	}
	idx, conf := fsm.LatestState()
	inRaft, kerr := reconciler.ReadEpochKey(context.Background(), fsm)
	fsm.Close()
	if kerr != nil {
		return st, kerr
	}
	if conf != nil {
		for _, s := range conf.Servers {
			if hraft.ServerSuffrage(s.Suffrage) == hraft.Voter {
				st.voters = append(st.voters, s.Id)
			}
		}
	}
	file, err := datadir.ReadEpochFile(cfg.DataDir)
	if err != nil {
		return st, err
	}
	st.epoch = file
	if inRaft.Number > file.Number {
		st.epoch = inRaft
	}
	st.survivor = geo.Survivor{Node: cfg.NodeID, AppliedIndex: idx.Index}
	store, err := openLogStore(logDB)
	if err != nil {
		return st, err
	}
	defer store.Close()
	last, err := store.LastIndex()
	if err != nil {
		return st, err
	}
	st.survivor.LastIndex = last
	if last > 0 {
		var l hraft.Log
		if err := store.GetLog(last, &l); err == nil {
			st.survivor.LastTerm, st.survivor.LastAt = l.Term, l.AppendedAt.UTC()
		}
	}
	return st, nil
}

// openLogStore opens raft.db as OpenBao does.
func openLogStore(path string) (*raftboltdb.BoltStore, error) {
	s, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bolt.Options{
		Timeout: time.Second, FreelistType: bolt.FreelistMapType, NoFreelistSync: true,
	}})
	if err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", path, err)
	}
	return s, nil
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

// raftAddr is the host:port Raft knows a node by, from its cluster URL.
func raftAddr(clusterAddr string) (string, error) {
	u, err := url.Parse(clusterAddr)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("cluster address %q is not a URL", clusterAddr)
	}
	return u.Host, nil
}
