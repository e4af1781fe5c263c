// Package restore builds a new cluster's first node from a snapshot,
// offline, into a stopped node's empty data dir (`snapshot restore
// --new-cluster`, and the drill's throwaway cluster). Restoring into a
// running cluster is the API's, not this package's.
//
// It is a package of its own, not part of snapshot, because it writes a
// data dir through datadir, and datadir reads snapshots.
package restore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	hclog "github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
	rsnap "github.com/hashicorp/raft-snapshot"
	baoraft "github.com/openbao/openbao/physical/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/atomicfile"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/snapshot"
)

// NewCluster builds a new cluster's first node from a snapshot,
// offline: the node is stopped and its data dir holds no Raft data. The
// snapshot's storage becomes the node's FSM (as a snapshot a leader sends
// is installed), and raft/peers.json makes the node the only voter, so
// that it starts as a cluster of one with the snapshot's data. It then
// unseals with the snapshot's seal, the HSM or the shares of its time,
// and every secret and token of the snapshot is there; other nodes join
// it as usual. This is how a lost cluster is rebuilt, and a drill's
// throwaway one.
func NewCluster(cfg *config.Config, path string) (*snapshot.Info, error) {
	info, err := snapshot.InspectFile(path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", config.PathCause(err))
	}
	lock, err := datadir.Acquire(cfg.DataDir)
	if err != nil {
		return nil, datadir.StopFirst(err)
	}
	defer lock.Release()
	for _, f := range []string{"vault.db", filepath.Join("raft", "raft.db")} {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, f)); err == nil {
			return nil, fmt.Errorf("data_dir %s already holds a cluster's data (%s): restore into a running cluster with `snapshot restore FILE`, or give this node an empty data_dir", cfg.DataDir, f)
		}
	}
	// A marker of an interrupted init beside no Raft data is stale: the
	// data restored here was not written by that init.
	if err := atomicfile.Remove(filepath.Join(cfg.DataDir, datadir.InitMarker)); err != nil {
		return nil, err
	}
	raftDir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return nil, err
	}
	// Whatever goes wrong from here leaves a data dir to empty again:
	// nothing half-built may look like a cluster.
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(raftDir)
			os.Remove(filepath.Join(cfg.DataDir, "vault.db"))
		}
	}()
	logger := hclog.NewNullLogger()
	fsm, err := baoraft.NewFSM(cfg.DataDir, cfg.NodeID, logger)
	if err != nil {
		return nil, err
	}
	defer fsm.Close()
	store, err := baoraft.NewBoltSnapshotStore(raftDir, logger, fsm)
	if err != nil {
		return nil, err
	}
	// The address the node will advertise when it starts (see the
	// appliance's resolveClusterAddr): the one other nodes dial.
	addr, err := config.RaftAddr(cfg.GeoDerived().ClusterAddr)
	if err != nil {
		addr = config.Advertisable(cfg.Cluster.Address)
	}
	self := hraft.Configuration{Servers: []hraft.Server{{ID: hraft.ServerID(cfg.NodeID), Address: hraft.ServerAddress(addr), Suffrage: hraft.Voter}}}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sink, err := store.Create(1, info.Index, info.Term, self, info.Index, nil)
	if err != nil {
		return nil, err
	}
	if _, err := rsnap.Parse(f, sink); err != nil {
		sink.Cancel()
		return nil, fmt.Errorf("%w: %v", snapshot.ErrBad, err)
	}
	if err := sink.Close(); err != nil {
		return nil, fmt.Errorf("writing the snapshot's storage: %w", err)
	}
	_, rc, err := store.Open(sink.ID())
	if err != nil {
		return nil, err
	}
	err = fsm.Restore(rc)
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("installing the snapshot's storage: %w", err)
	}
	if err := datadir.WritePeersJSON(filepath.Join(raftDir, "peers.json"), self); err != nil {
		return nil, err
	}
	if err := chownTree(cfg.DataDir); err != nil {
		return nil, err
	}
	ok = true
	return info, nil
}

// chownTree gives what an offline command made under dir to dir's owner
// (see datadir.OwnLikeDir).
func chownTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if p == dir {
			return nil
		}
		return datadir.OwnLikeDir(p, dir)
	})
}
