package disaster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo/reconciler"
)

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
