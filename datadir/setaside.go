package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	hraft "github.com/hashicorp/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/atomicfile"
)

// SetAsideReport is what `check --set-aside` did.
type SetAsideReport struct {
	Node string `json:"node"`
	// SetAside is the directory the damaged data went to; nothing was
	// deleted.
	SetAside string   `json:"set_aside"`
	Moved    []string `json:"moved"`
	// PeersFile: raft/ was rebuilt from vault.db; the node restarts as
	// its cluster's only voter.
	PeersFile string `json:"peers_file,omitempty"`
	Next      string `json:"next"`
}

// ErrNothingToSetAside refuses `check --set-aside` on a data dir it
// cannot help.
var ErrNothingToSetAside = errors.New("nothing to set aside")

// SetAside moves a stopped node's damaged Raft data aside, into
// <data_dir>/set-aside-<time>, deleting nothing. When vault.db is sound
// and this node was its cluster's only voter, only raft/ goes, and
// raft/peers.json makes the node restart from vault.db alone (unless
// empty is set); otherwise vault.db and raft/ both go and the node starts
// empty, to rejoin its cluster or take a snapshot.
func SetAside(cfg *config.Config, empty, confirmed bool) (*SetAsideReport, *Report, error) {
	lock, err := Acquire(cfg.DataDir)
	if err != nil {
		return nil, nil, StopFirst(err)
	}
	defer lock.Release()
	r := inspectDataDir(cfg, false)
	plan := r.plan
	if empty && plan != planNone {
		plan = planEmpty
	}
	if plan == planNone {
		if r.StartRefused() {
			return nil, r, fmt.Errorf("%w: what refuses the start is not vault.db or raft/raft.db (%s); fix that file", ErrNothingToSetAside, r.Refusal)
		}
		return nil, r, fmt.Errorf("%w: vault.db and raft/raft.db are sound; to take this node out of its cluster, use `bao operator raft remove-peer` and an empty data_dir", ErrNothingToSetAside)
	}
	at := time.Now().UTC().Format("20060102T150405Z")
	dir := filepath.Join(cfg.DataDir, setAsidePrefix+at)
	// The marker of an interrupted init goes with the data it was
	// written beside.
	names := []string{raftDirName, vaultDBName, InitMarker}
	what := fmt.Sprintf("vault.db and raft/ would be moved to %s (nothing is deleted) and the node would start empty: "+
		"remove it from its cluster first (`bao operator raft remove-peer %s`) and it rejoins as a new node, or restore a snapshot with snapshot restore --new-cluster", dir, cfg.NodeID)
	var addr string
	if plan == planRebuildRaft {
		names = []string{raftDirName}
		addr, _ = r.onlyVoter()
		what = fmt.Sprintf("raft/ would be moved to %s (nothing is deleted) and raft/peers.json written: the node would restart from vault.db (applied index %d) "+
			"as the only voter of its cluster (%s %s). Do not, if other nodes joined this one since: add --empty and rebuild it from them", dir, r.vault.index, cfg.NodeID, addr)
	}
	if !confirmed {
		return nil, r, &NeedsConfirmationError{Message: r.Refusal + ".\n" + what + ". Add --yes to do it"}
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, r, err
	}
	if err := OwnLikeDir(dir, cfg.DataDir); err != nil {
		return nil, r, err
	}
	rep := &SetAsideReport{Node: cfg.NodeID, SetAside: dir}
	for _, n := range names {
		err := os.Rename(filepath.Join(cfg.DataDir, n), filepath.Join(dir, n))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return rep, r, fmt.Errorf("cannot set %s aside: %w", n, err)
		}
		rep.Moved = append(rep.Moved, n)
	}
	for _, d := range []string{cfg.DataDir, dir} {
		if err := atomicfile.SyncDir(d); err != nil {
			return rep, r, err
		}
	}
	if plan == planRebuildRaft {
		raftDir := filepath.Join(cfg.DataDir, raftDirName)
		if err := os.Mkdir(raftDir, 0o700); err != nil {
			return rep, r, err
		}
		if err := OwnLikeDir(raftDir, cfg.DataDir); err != nil {
			return rep, r, err
		}
		rep.PeersFile = filepath.Join(raftDir, "peers.json")
		self := hraft.Configuration{Servers: []hraft.Server{{ID: hraft.ServerID(cfg.NodeID), Address: hraft.ServerAddress(addr), Suffrage: hraft.Voter}}}
		if err := WritePeersJSON(rep.PeersFile, self); err != nil {
			return rep, r, err
		}
		rep.Next = fmt.Sprintf("Start the node and unseal it: it restarts from vault.db (applied index %d) as its cluster's only voter.", r.vault.index)
	} else {
		restore := "restore a snapshot: `gitlab-secrets-appliance snapshot restore FILE --new-cluster --config <config file>`, then start the node and unseal it"
		if c := r.newestSnapshot(); c != nil {
			restore += fmt.Sprintf(" (the newest here: %s, index %d)", c.path, c.info.Index)
		}
		if r.knownSingle() {
			rep.Next = "Now " + restore + "."
		} else {
			rep.Next = fmt.Sprintf("Now, if this node is one of several: remove it from its cluster (`bao operator raft remove-peer %s` on a running node, if not done yet), "+
				"then start it and unseal it: it joins as a new node and receives everything. Else %s.", cfg.NodeID, restore)
		}
	}
	rep.Next += " Delete " + dir + " once the node works and you no longer need it."
	return rep, r, nil
}
