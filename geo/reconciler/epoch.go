package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/openbao/openbao/sdk/v2/physical"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
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
// The epoch lives in two places: in the data dir (datadir.GeoEpochFile, written by
// the offline commands, read before Raft starts) and in Raft
// (geo.EpochKey, outside the barrier: no secret), from which every node of
// the new cluster learns it, nodes that join later included.

// EpochGetter reads a raw Raft key (the FSM of a running node, or one
// opened offline).
type EpochGetter interface {
	Get(ctx context.Context, key string) (*physical.Entry, error)
}

// ReadEpochKey is the epoch replicated in Raft; none is epoch 0.
func ReadEpochKey(ctx context.Context, g EpochGetter) (geo.Epoch, error) {
	var e geo.Epoch
	ent, err := g.Get(ctx, geo.EpochKey)
	if err != nil || ent == nil {
		return e, err
	}
	if err := json.Unmarshal(ent.Value, &e); err != nil {
		return e, fmt.Errorf("%s holds no epoch: %w", geo.EpochKey, err)
	}
	return e, nil
}

// epoch is this node's epoch: the newer of its file and Raft's.
func (g *Reconciler) epoch(ctx context.Context) geo.Epoch {
	g.mu.Lock()
	e := g.localEpoch
	g.mu.Unlock()
	if r, err := ReadEpochKey(ctx, g.raft); err == nil && r.Number > e.Number {
		e = r
	}
	return e
}

// syncEpoch keeps the file and Raft on the same epoch: a node adopts
// what Raft brought it (a node that joined the new cluster learns its
// epoch), and the first active node of an epoch records it in Raft with
// the index it kept (its own log at the promotion: the leader's log is
// never cut) and every member's survivor it heard of (the RPO).
func (g *Reconciler) syncEpoch(ctx context.Context, active bool, peers map[string]client.PeerStatus) {
	g.mu.Lock()
	local := g.localEpoch
	g.mu.Unlock()
	inRaft, err := ReadEpochKey(ctx, g.raft)
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
			if s.Node == g.nodeID {
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
	if err := g.raft.Put(ctx, &physical.Entry{Key: geo.EpochKey, Value: b}); err != nil {
		g.logger.Error("geo: cannot record the epoch in Raft", "epoch", merged.Number, "error", err)
		return
	}
	g.adoptEpoch(merged)
	if inRaft.Number < merged.Number {
		g.logger.Info("geo: epoch recorded in Raft", "epoch", merged.Number, "site", merged.Site, "kept_index", merged.KeptIndex)
	}
}

// mergeEpoch is a with b's survivors and kept index (both of one epoch).
func mergeEpoch(a, b geo.Epoch) geo.Epoch {
	out := a
	out.Survivors = slices.Clone(a.Survivors)
	for _, s := range b.Survivors {
		if !slices.ContainsFunc(out.Survivors, func(x geo.Survivor) bool { return x.Node == s.Node }) {
			out.Survivors = append(out.Survivors, s)
		}
	}
	slices.SortFunc(out.Survivors, func(x, y geo.Survivor) int { return strings.Compare(x.Node, y.Node) })
	if out.KeptBy == "" {
		out.KeptBy, out.KeptIndex, out.KeptAt = b.KeptBy, b.KeptIndex, b.KeptAt
	}
	return out
}

// sameRecord: a and b record the same survivors and kept index.
func sameRecord(a, b geo.Epoch) bool {
	return a.KeptBy == b.KeptBy && len(a.Survivors) == len(b.Survivors)
}

// adoptEpoch makes e this node's epoch, in its data dir too.
func (g *Reconciler) adoptEpoch(e geo.Epoch) {
	if err := datadir.WriteEpochFile(g.dataDir, e); err != nil {
		g.logger.Error("geo: cannot record the cluster's epoch in the data dir", "epoch", e.Number, "error", err)
		return
	}
	g.mu.Lock()
	prev := g.localEpoch.Number
	g.localEpoch = e
	g.mu.Unlock()
	if prev != e.Number {
		g.logger.Info("geo: this node is in epoch "+fmt.Sprint(e.Number), "site", e.Site)
	}
}

// ErrFenced stops a node whose Raft data an epoch superseded.
var ErrFenced = errors.New("this node's Raft data belongs to a replaced cluster")

// checkFence looks at the peers' epochs. A node with Raft data (applied
// entries) that finds a peer in an epoch made without it, newer than its
// own (its file's or its Raft's), is fenced for the rest of its life: it
// does not unseal, and if it was unsealed it stops. A node without Raft
// data is about to join whatever cluster answers: the snapshot it gets
// carries that cluster's epoch.
func (g *Reconciler) checkFence(ctx context.Context, peers map[string]client.PeerStatus) {
	g.mu.Lock()
	done := g.fenced != ""
	g.fenceChecked = true
	g.mu.Unlock()
	if done || g.raft.AppliedIndex() == 0 {
		return
	}
	mine := g.epoch(ctx)
	for id, p := range peers {
		if !p.Epoch.Supersedes(mine, g.nodeID) {
			continue
		}
		reason := fmt.Sprintf("fenced: node %s is in Geo epoch %d (site %s promoted at %s by geo promote --force) and this node's Raft data is from epoch %d: "+
			"it must not lead or vote with it. Stop this node and run `gitlab-secrets-appliance geo rejoin --config FILE --yes` on it: "+
			"its Raft data is set aside and it joins the new cluster as a non-voter",
			id, p.Epoch.Number, p.Epoch.Site, p.Epoch.At.Format(time.RFC3339), mine.Number)
		g.mu.Lock()
		g.fenced = reason
		g.mu.Unlock()
		g.logger.Error("geo: "+reason, "node", g.nodeID)
		return
	}
}

// Fence is why this node must not unseal ("" if it may). Before the first
// look at the peers it looks once (the HSM unseals a node at start).
func (g *Reconciler) Fence(ctx context.Context) string {
	g.mu.Lock()
	checked := g.fenceChecked
	g.mu.Unlock()
	if !checked {
		g.mu.Lock()
		topo := g.topo
		g.mu.Unlock()
		g.checkFence(ctx, g.pollPeers(ctx, topo, geoPeerWait))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fenced
}

// FencedReason is why this node is fenced, "" if it is not.
func (g *Reconciler) FencedReason() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fenced
}

// fenceRunning stops a node that is unsealed in a superseded epoch.
func (g *Reconciler) fenceRunning() {
	g.mu.Lock()
	reason := g.fenced
	g.mu.Unlock()
	if reason != "" && !g.node.Sealed() {
		g.node.Fail(fmt.Errorf("%w: %s", ErrFenced, reason))
	}
}
