package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/openbao/openbao/sdk/v2/physical"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/atomicfile"
)

// A disaster promotion (`geo promote --force`) rebuilds the cluster from
// one site's replicas and starts a new Geo epoch. The epoch is what keeps
// the old site's nodes, which come back with their old data and their old
// Raft configuration, from leading or acknowledging anything: a node whose
// Raft data is older than the newest epoch any peer it reaches is in
// refuses to unseal, and a running one that learns of a newer epoch stops.
// Such a node comes back by `geo rejoin` (its Raft data set aside, a join
// as a non-voter of the new cluster).
//
// The epoch lives in two places: in the data dir (geoEpochFile, written by
// the offline commands, read before Raft starts) and in Raft
// (geoEpochKey, outside the barrier: no secret), from which every node of
// the new cluster learns it, nodes that join later included.

// GeoEpochFile, in the data dir, holds this node's Geo epoch.
const GeoEpochFile = "geo-epoch.json"

const geoEpochKey = geo.EpochKey

// Epoch is a Geo epoch: zero until the first disaster promotion.
type Epoch struct {
	Number uint64 `json:"number"`
	// Site was promoted at At; Members are the nodes the promotion
	// rebuilt the cluster from.
	Site    string    `json:"site,omitempty"`
	At      time.Time `json:"at,omitzero"`
	Members []string  `json:"members,omitempty"`
	// Survivors are the members' logs when they were promoted, as each
	// recorded its own (the RPO comes from them).
	Survivors []Survivor `json:"survivors,omitempty"`
	// KeptBy is the first active node of the epoch; every entry up to
	// KeptIndex (its log at the promotion) is in the new cluster.
	KeptBy    string    `json:"kept_by,omitempty"`
	KeptIndex uint64    `json:"kept_index,omitempty"`
	KeptAt    time.Time `json:"kept_at,omitzero"`
}

// Survivor is one promoted node's Raft log at the promotion.
type Survivor struct {
	Node         string    `json:"node"`
	AppliedIndex uint64    `json:"applied_index"`
	LastIndex    uint64    `json:"last_index"`
	LastTerm     uint64    `json:"last_term"`
	LastAt       time.Time `json:"last_at,omitzero"`
}

// supersedes: e is newer than mine and was not made with node as a member
// (the nodes promoted together may number their epoch differently until
// Raft tells them the same number).
func (e Epoch) supersedes(mine Epoch, node string) bool {
	return e.Number > mine.Number && !slices.Contains(e.Members, node)
}

// readEpochFile is the epoch in dir's GeoEpochFile; none is epoch 0.
func readEpochFile(dir string) (Epoch, error) {
	var e Epoch
	b, err := os.ReadFile(filepath.Join(dir, GeoEpochFile))
	if errors.Is(err, os.ErrNotExist) {
		return e, nil
	}
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("%s: %w; restore it from a backup, or run `geo rejoin`", filepath.Join(dir, GeoEpochFile), err)
	}
	return e, nil
}

// writeEpochFile writes e into dir atomically and durably.
func writeEpochFile(dir string, e Epoch) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	return writeDurable(filepath.Join(dir, GeoEpochFile), append(b, '\n'), 0o600)
}

// writeDurable writes path atomically and durably, owned like its
// directory when root writes it (see ownLikeDir).
func writeDurable(path string, data []byte, perm os.FileMode) error {
	uid, gid, err := dirOwner(filepath.Dir(path))
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, perm, uid, gid)
}

// dirOwner is the owner to give what root writes in dir for an offline
// command (gitlab-ctl runs them as root) on a data dir the service user
// owns: the appliance must be able to read, and OpenBao to delete, what
// it wrote. -1, -1 when there is nothing to change.
func dirOwner(dir string) (uid, gid int, err error) {
	if os.Geteuid() != 0 {
		return -1, -1, nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return -1, -1, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return -1, -1, nil
	}
	return int(st.Uid), int(st.Gid), nil
}

// ownLikeDir gives path the owner dirOwner gives.
func ownLikeDir(path, dir string) error {
	uid, gid, err := dirOwner(dir)
	if err != nil || uid == -1 {
		return err
	}
	return os.Lchown(path, uid, gid)
}

// epochGetter reads a raw Raft key (the FSM of a running node, or one
// opened offline).
type epochGetter interface {
	Get(ctx context.Context, key string) (*physical.Entry, error)
}

// readEpochKey is the epoch replicated in Raft; none is epoch 0.
func readEpochKey(ctx context.Context, g epochGetter) (Epoch, error) {
	var e Epoch
	ent, err := g.Get(ctx, geoEpochKey)
	if err != nil || ent == nil {
		return e, err
	}
	if err := json.Unmarshal(ent.Value, &e); err != nil {
		return e, fmt.Errorf("%s holds no epoch: %w", geoEpochKey, err)
	}
	return e, nil
}

// epoch is this node's epoch: the newer of its file and Raft's.
func (g *geoRun) epoch(ctx context.Context) Epoch {
	g.mu.Lock()
	e := g.localEpoch
	g.mu.Unlock()
	if r, err := readEpochKey(ctx, g.a.raft); err == nil && r.Number > e.Number {
		e = r
	}
	return e
}

// syncEpoch keeps the file and Raft on the same epoch: a node adopts
// what Raft brought it (a node that joined the new cluster learns its
// epoch), and the first active node of an epoch records it in Raft with
// the index it kept (its own log at the promotion: the leader's log is
// never cut) and every member's survivor it heard of (the RPO).
func (g *geoRun) syncEpoch(ctx context.Context, active bool, peers map[string]PeerStatus) {
	g.mu.Lock()
	local := g.localEpoch
	g.mu.Unlock()
	inRaft, err := readEpochKey(ctx, g.a.raft)
	if err != nil {
		return
	}
	switch {
	case inRaft.Number > local.Number:
		g.adoptEpoch(inRaft)
		local = inRaft
	case inRaft.Number == local.Number && inRaft.Number > 0:
		// The same promotion: what Raft and this node know of it.
		if m := mergeEpoch(local, inRaft); !sameRecord(m, local) {
			g.adoptEpoch(m)
			local = m
		}
	}
	if !active || local.Number == 0 {
		return
	}
	merged := local
	for _, p := range peers {
		if p.Epoch.Number == local.Number {
			merged = mergeEpoch(merged, p.Epoch)
		}
	}
	if merged.KeptBy == "" {
		for _, s := range merged.Survivors {
			if s.Node == g.a.cfg.NodeID {
				merged.KeptBy, merged.KeptIndex, merged.KeptAt = s.Node, s.LastIndex, s.LastAt
			}
		}
	}
	if inRaft.Number == merged.Number && sameRecord(inRaft, merged) {
		return
	}
	b, err := json.Marshal(merged)
	if err != nil {
		return
	}
	if err := g.a.raft.Put(ctx, &physical.Entry{Key: geoEpochKey, Value: b}); err != nil {
		g.a.logger.Error("geo: cannot record the epoch in Raft", "epoch", merged.Number, "error", err)
		return
	}
	g.adoptEpoch(merged)
	if inRaft.Number < merged.Number {
		g.a.logger.Info("geo: epoch recorded in Raft", "epoch", merged.Number, "site", merged.Site, "kept_index", merged.KeptIndex)
	}
}

// mergeEpoch is a with b's survivors and kept index (both of one epoch).
func mergeEpoch(a, b Epoch) Epoch {
	out := a
	out.Survivors = slices.Clone(a.Survivors)
	for _, s := range b.Survivors {
		if !slices.ContainsFunc(out.Survivors, func(x Survivor) bool { return x.Node == s.Node }) {
			out.Survivors = append(out.Survivors, s)
		}
	}
	slices.SortFunc(out.Survivors, func(x, y Survivor) int { return strings.Compare(x.Node, y.Node) })
	if out.KeptBy == "" {
		out.KeptBy, out.KeptIndex, out.KeptAt = b.KeptBy, b.KeptIndex, b.KeptAt
	}
	return out
}

// sameRecord: a and b record the same survivors and kept index.
func sameRecord(a, b Epoch) bool {
	return a.KeptBy == b.KeptBy && len(a.Survivors) == len(b.Survivors)
}

// adoptEpoch makes e this node's epoch, in its data dir too.
func (g *geoRun) adoptEpoch(e Epoch) {
	if err := writeEpochFile(g.a.cfg.DataDir, e); err != nil {
		g.a.logger.Error("geo: cannot record the cluster's epoch in the data dir", "epoch", e.Number, "error", err)
		return
	}
	g.mu.Lock()
	prev := g.localEpoch.Number
	g.localEpoch = e
	g.mu.Unlock()
	if prev != e.Number {
		g.a.logger.Info("geo: this node is in epoch "+fmt.Sprint(e.Number), "site", e.Site)
	}
}

// RPO is what a disaster promotion may have lost: the entries between the
// index the new cluster kept and the newest any promoted node had.
type RPO struct {
	KeptIndex   uint64    `json:"kept_index"`
	KeptBy      string    `json:"kept_by"`
	KeptAt      time.Time `json:"kept_at,omitzero"`
	NewestIndex uint64    `json:"newest_index"`
	NewestNode  string    `json:"newest_node"`
	NewestAt    time.Time `json:"newest_at,omitzero"`
	// LostEntriesAtMost counts Raft entries (writes and OpenBao's own);
	// LostSeconds is the time between the kept entry and the newest one.
	LostEntriesAtMost uint64  `json:"lost_entries_at_most"`
	LostSeconds       float64 `json:"lost_seconds"`
}

// rpo is e's RPO over the survivors it records (nil before the first
// active node of the epoch recorded it).
func (e Epoch) rpo() *RPO {
	if e.KeptBy == "" {
		return nil
	}
	r := &RPO{KeptIndex: e.KeptIndex, KeptBy: e.KeptBy, KeptAt: e.KeptAt, NewestIndex: e.KeptIndex, NewestNode: e.KeptBy, NewestAt: e.KeptAt}
	for _, s := range e.Survivors {
		if s.LastIndex > r.NewestIndex {
			r.NewestIndex, r.NewestNode, r.NewestAt = s.LastIndex, s.Node, s.LastAt
		}
	}
	r.LostEntriesAtMost = r.NewestIndex - r.KeptIndex
	if !r.NewestAt.IsZero() && !r.KeptAt.IsZero() && r.NewestAt.After(r.KeptAt) {
		r.LostSeconds = r.NewestAt.Sub(r.KeptAt).Seconds()
	}
	return r
}

// ErrFenced stops a node whose Raft data an epoch superseded.
var ErrFenced = errors.New("this node's Raft data belongs to a replaced cluster")

// checkFence looks at the peers' epochs. A node with Raft data (applied
// entries) that finds a peer in an epoch made without it, newer than its
// own (its file's or its Raft's), is fenced for the rest of its life: it
// does not unseal, and if it was unsealed it stops. A node without Raft
// data is about to join whatever cluster answers: the snapshot it gets
// carries that cluster's epoch.
func (g *geoRun) checkFence(ctx context.Context, peers map[string]PeerStatus) {
	g.mu.Lock()
	done := g.fenced != ""
	g.fenceChecked = true
	g.mu.Unlock()
	if done || g.a.raft.AppliedIndex() == 0 {
		return
	}
	mine := g.epoch(ctx)
	for id, p := range peers {
		if !p.Epoch.supersedes(mine, g.a.cfg.NodeID) {
			continue
		}
		reason := fmt.Sprintf("fenced: node %s is in Geo epoch %d (site %s promoted at %s by geo promote --force) and this node's Raft data is from epoch %d: "+
			"it must not lead or vote with it. Stop this node and run `gitlab-secrets-appliance geo rejoin --config FILE --yes` on it: "+
			"its Raft data is set aside and it joins the new cluster as a non-voter",
			id, p.Epoch.Number, p.Epoch.Site, p.Epoch.At.Format(time.RFC3339), mine.Number)
		g.mu.Lock()
		g.fenced = reason
		g.mu.Unlock()
		g.a.logger.Error("geo: "+reason, "node", g.a.cfg.NodeID)
		return
	}
}

// fence is why this node must not unseal ("" if it may). Before the first
// look at the peers it looks once (the HSM unseals a node at start).
func (g *geoRun) fence(ctx context.Context) string {
	g.mu.Lock()
	checked := g.fenceChecked
	g.mu.Unlock()
	if !checked {
		g.mu.Lock()
		topo := g.topo
		g.mu.Unlock()
		g.checkFence(ctx, g.pollPeers(ctx, topo))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fenced
}

// fencedReason is why this node is fenced, "" if it is not.
func (g *geoRun) fencedReason() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fenced
}

// fenceRunning stops a node that is unsealed in a superseded epoch.
func (g *geoRun) fenceRunning() {
	g.mu.Lock()
	reason := g.fenced
	g.mu.Unlock()
	if reason != "" && !g.a.core.Sealed() {
		g.a.fail(fmt.Errorf("%w: %s", ErrFenced, reason))
	}
}
