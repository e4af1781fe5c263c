package datadir

// The checks of the data dir's files besides the two bolt files (see
// inspect.go): peers.json, Raft's snapshots, the seal header, the Geo
// epoch, the init marker, the files nobody expects, and the scheduled
// snapshots a damaged node can be restored from.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	hraft "github.com/hashicorp/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/snapshot"
)

func (r *Report) checkPeersJSON(path string) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return
	}
	conf, err := hraft.ReadConfigJSON(path)
	if err != nil {
		f := r.add(peersJSONName, FileDamaged, "does not parse: "+err.Error(),
			"it is the Raft configuration this node recovers into at its next start, written by the command that rebuilt the node "+
				"(geo promote --force, snapshot restore --new-cluster, check --set-aside): run that command again, "+
				"or move the file away and run `gitlab-secrets-appliance check --config {config}` again")
		f.BlocksStart = true
		return
	}
	var ids []string
	for _, s := range conf.Servers {
		ids = append(ids, string(s.ID))
	}
	r.add(peersJSONName, FileNotice, "the Raft configuration this node recovers into at its next start: "+strings.Join(ids, ", "), "")
}

func (r *Report) checkRaftSnapshots(path string) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		r.add(raftSnapsName, FileDamaged, err.Error(), "").BlocksStart = true
	case !fi.IsDir():
		f := r.add(raftSnapsName, FileDamaged, "not a directory", "move it away: OpenBao makes the directory again at the next start")
		f.BlocksStart = true
	default:
		r.add(raftSnapsName, FileOK, "snapshots being received from a leader; emptied at every start", "")
	}
}

func (r *Report) checkSealHeader(path string) {
	cluster, gen, present, err := seal.ReadHeaderFile(path)
	switch {
	case !present:
		if r.vault.index > 0 {
			r.add(SealHeaderFile, FileAbsent, "written again at the next unseal", "")
		}
	case err != nil:
		r.add(SealHeaderFile, FileDamaged, "unreadable: "+err.Error(),
			"harmless: the node starts, logs it, and writes the file again from its cluster's stored keys when it unseals; "+
				"until then a restored snapshot's older shares are not recognised as void on this node")
	default:
		r.add(SealHeaderFile, FileOK, fmt.Sprintf("cluster %s, seal generation %d", cluster, gen), "")
	}
}

func (r *Report) checkGeoEpoch(dir string, geo bool) {
	if _, err := os.Stat(filepath.Join(dir, GeoEpochFile)); errors.Is(err, os.ErrNotExist) {
		return
	}
	e, err := ReadEpochFile(dir)
	switch {
	case err != nil && geo:
		f := r.add(GeoEpochFile, FileDamaged, "unreadable: "+err.Error(), "restore it from a backup of this node, or run `gitlab-secrets-appliance geo rejoin --config {config}`")
		f.BlocksStart = true
	case err != nil:
		r.add(GeoEpochFile, FileDamaged, "unreadable: "+err.Error(), "harmless while the config has no geo block (nothing reads it)")
	default:
		r.add(GeoEpochFile, FileOK, fmt.Sprintf("Geo epoch %d", e.Number), "")
	}
}

func (r *Report) checkInitMarker(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	at, perr := time.Parse(time.RFC3339, strings.TrimSpace(string(b)))
	detail := "an init started at " + strings.TrimSpace(string(b)) + " and has not answered"
	if perr != nil {
		detail = "an init started and has not answered (the marker's time is unreadable)"
	}
	action := ""
	switch {
	case !r.raft.hasState() && r.vault.index == 0:
		action = "stale: nothing was written; the node removes it at its next start"
	default:
		if why := r.InitUnproven(at, perr == nil); why != "" {
			action = "this node's data cannot be shown to come from that init alone (" + why + "): it may hold secrets, keep it. " +
				"If the cluster is in use, the marker is wrong: remove it"
		} else {
			action = "the init's answer never left this node: nobody holds this cluster's shares, recovery keys or root token, and no secret can be in it; " +
				"start the node and see `gitlab-secrets-appliance status`"
		}
	}
	r.add(InitMarker, FileNotice, detail, action)
}

// initUnproven says why this node's Raft data cannot be shown to come
// from an init that started at `at` and never answered; "" when it can:
// its log starts at entry 1 (never compacted, no snapshot installed),
// every entry was appended after the init started, and the Raft
// configuration lists this node alone.
func (r *Report) InitUnproven(at time.Time, known bool) string {
	f := r.raft
	switch {
	case !known:
		return "the marker's time is unreadable"
	case !f.hasState() && f.state != FileDamaged && (r.vault.state == FileAbsent || r.vault.state == FileOK && r.vault.index == 0):
		// Nothing at the start: whatever is there now, this process
		// wrote (a running node's init; its Raft configuration is
		// checked live).
		return ""
	case f.state != FileOK:
		return "raft/raft.db is " + f.state
	case r.vault.state != FileOK:
		return "vault.db is " + r.vault.state
	case f.logs > 0 && f.first != 1:
		return fmt.Sprintf("its Raft log starts at entry %d: entries were compacted or a snapshot was installed", f.first)
	case f.logs == 0 && r.vault.index > 0:
		return "vault.db holds entries the Raft log does not: a snapshot was installed"
	case !f.firstAppend.IsZero() && f.firstAppend.Before(at):
		return fmt.Sprintf("its Raft log holds entries from %s, before the init started", f.firstAppend.UTC().Format(time.RFC3339))
	}
	for _, s := range append(r.vault.servers, r.raft.servers...) {
		if s.id != r.NodeID {
			return "its Raft configuration lists " + s.id
		}
	}
	return ""
}

// knownSingle: the Raft configuration this node knows lists it alone and
// the config names no peer.
func (r *Report) knownSingle() bool {
	return r.cluster == "" && (len(r.vault.servers) > 0 || len(r.raft.servers) > 0)
}

// listOthers names what else is in the data dir: earlier set-aside data.
func (r *Report) listOthers(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() && (strings.HasPrefix(n, setAsidePrefix) || strings.HasPrefix(n, "replaced-epoch-")) {
			r.add(n, FileNotice, "data set aside earlier (check --set-aside or geo rejoin)", "delete it once you no longer need it")
		}
	}
}

// checkSnapshotFiles inspects the snapshot schedule's files, whole.
func (r *Report) checkSnapshotFiles(cfg *config.Config) {
	for _, c := range snapshotFiles(cfg) {
		info, err := snapshot.InspectFile(c.path)
		var f *File
		if err != nil {
			f = r.add(filepath.Base(c.path), FileDamaged, err.Error(), "it cannot be restored: delete it (the schedule keeps taking new ones)")
		} else {
			f = r.add(filepath.Base(c.path), FileOK, fmt.Sprintf("snapshot of index %d, %s", info.Index, info.Created.UTC().Format(time.RFC3339)), "")
		}
		f.Path, f.Snapshot = c.path, true
		if err != nil {
			continue
		}
		if r.newest == nil || info.Index > r.newest.info.Index {
			r.newest = &snapshotCandidate{path: c.path, info: info}
		}
	}
}

// snapshotFiles lists the schedule's snapshot files, newest first.
func snapshotFiles(cfg *config.Config) []snapshotCandidate {
	dir := filepath.Join(cfg.DataDir, "snapshots")
	if cfg.Snapshot != nil && cfg.Snapshot.Directory != "" {
		dir = cfg.Snapshot.Directory
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []snapshotCandidate
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), snapshot.Prefix) && strings.HasSuffix(e.Name(), snapshot.Suffix) {
			out = append(out, snapshotCandidate{path: filepath.Join(dir, e.Name())})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path > out[j].path })
	return out
}

// newestSnapshot is the newest snapshot file that inspects whole.
func (r *Report) newestSnapshot() *snapshotCandidate {
	if r.newest != nil {
		return r.newest
	}
	for _, c := range snapshotFiles(r.cfg) {
		if info, err := snapshot.InspectFile(c.path); err == nil {
			c.info = info
			r.newest = &c
			return r.newest
		}
	}
	return nil
}
