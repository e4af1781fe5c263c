package datadir

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// judge decides whether a node starts on the data dir and, if not, what
// to do.
func (r *Report) judge() {
	v, l := r.vault, r.raft
	vaultGone := v.state == FileAbsent || v.state == FileMissing
	raftGone := l.state == FileAbsent || l.state == FileMissing || l.state == FileOK && !l.hasState()
	_, peersFile := r.peersJSON()
	// An empty file beside no Raft data is a node that never held
	// anything: bbolt makes it a new database.
	if v.state == FileMissing && !l.hasState() && l.state != FileDamaged {
		f := r.file(vaultDBName)
		f.State, f.Detail = FileNotice, "empty (0 bytes): a new, empty database at the next start; no other file holds data"
	}
	if l.state == FileMissing && !(v.state == FileOK && v.index > 0) && v.state != FileDamaged {
		f := r.file(raftDBName)
		f.State, f.Detail = FileNotice, "empty (0 bytes): a new Raft log at the next start; no other file holds data"
	}
	var why []string
	switch {
	case v.state == FileDamaged:
		why = append(why, "vault.db is "+v.damage)
		r.block(vaultDBName, "")
	case vaultGone && l.hasState():
		// vault.db is made at the first start, before Raft writes
		// anything: a log without it is a vault.db deleted or emptied.
		what := "missing"
		if v.state == FileMissing {
			what = "empty (0 bytes)"
		}
		r.file(vaultDBName).State = FileMissing
		why = append(why, fmt.Sprintf("vault.db is %s, but raft/raft.db holds this node's Raft log (%s, term %d): started, the node would look uninitialized "+
			"(OpenBao reads its data from vault.db). raft/ is what is left of this node's data: do not delete it", what, logRange(l), l.term))
		r.block(vaultDBName, "")
	}
	switch {
	case l.state == FileDamaged:
		why = append(why, "raft/raft.db is "+l.damage)
		r.block(raftDBName, "")
	case raftGone && v.state == FileOK && v.index > 0 && !peersFile:
		what := "missing"
		if l.state == FileMissing {
			what = "empty (0 bytes)"
		} else if l.state == FileOK {
			what = "without any log entry or term"
		}
		r.file(raftDBName).State = FileMissing
		why = append(why, fmt.Sprintf("raft/raft.db is %s, but vault.db holds this node's data up to Raft index %d: the node's Raft log, term and vote are lost "+
			"(a node that forgot its vote can elect a leader without writes its cluster acknowledged)", what, v.index))
		r.block(raftDBName, "")
	}
	for _, f := range r.Files {
		if f.BlocksStart && f.Name != vaultDBName && f.Name != raftDBName {
			why = append(why, f.Name+": "+f.Detail)
		}
	}
	if len(why) == 0 {
		return
	}
	r.Refusal = strings.Join(why, "; ")
	storageDamaged := r.file(vaultDBName).BlocksStart || r.file(raftDBName).BlocksStart
	if !storageDamaged {
		for _, f := range r.Files {
			if f.BlocksStart && f.Action != "" {
				r.Recovery = append(r.Recovery, f.Name+": "+f.Action)
			}
		}
		return
	}
	r.recoveries()
}

// block marks a file as what refuses the start.
func (r *Report) block(name, action string) {
	f := r.file(name)
	f.BlocksStart = true
	if action != "" {
		f.Action = action
	}
}

func (r *Report) peersJSON() (string, bool) {
	f := r.file(peersJSONName)
	return filepath.Join(r.DataDir, filepath.FromSlash(peersJSONName)), f != nil && f.State == FileNotice
}

func logRange(l raftFacts) string {
	if l.logs == 0 {
		return "no log entries"
	}
	return fmt.Sprintf("log entries %d-%d", l.first, l.last)
}

// The commands the recoveries give.
const (
	setAsideCmd      = "gitlab-secrets-appliance check --config {config} --set-aside --yes"
	setAsideEmptyCmd = "gitlab-secrets-appliance check --config {config} --set-aside --empty --yes"
)

// recoveries says how to get a working node back from a damaged or
// incomplete vault.db or raft/raft.db, in order of preference: what keeps
// every acknowledged write first. Each keeps the damaged files.
func (r *Report) recoveries() {
	aside := filepath.Join(r.DataDir, setAsidePrefix+"<time>")
	addr, single := r.onlyVoter()
	raftOnly := r.vault.state == FileOK && !r.file(vaultDBName).BlocksStart && r.file(raftDBName).BlocksStart
	if raftOnly && single {
		r.plan = planRebuildRaft
		r.SetAside = fmt.Sprintf("move raft/ to %s and write raft/peers.json: the node restarts from vault.db (applied index %d) as the only voter (%s) it was", aside, r.vault.index, addr)
		r.Recovery = append(r.Recovery, fmt.Sprintf("rebuild raft/ from vault.db, which holds every write this node applied (as its cluster's only voter: every acknowledged write): `%s` "+
			"(moves raft/ to %s, deleting nothing, and writes raft/peers.json), then start the node and unseal it. Not if other nodes joined this one: rebuild it from them instead", setAsideCmd, aside))
	} else {
		r.plan = planEmpty
		r.SetAside = fmt.Sprintf("move vault.db and raft/ to %s: the node starts empty, to rejoin its cluster or take a snapshot", aside)
	}
	if !r.knownSingle() {
		how := "if this node is one of several"
		if r.cluster != "" {
			how = "this node is one of several (" + r.cluster + ")"
		}
		r.Recovery = append(r.Recovery, fmt.Sprintf("%s: rebuild it from the others, which hold every acknowledged write. On a running node, "+
			"`bao operator raft remove-peer %s` (a root token); then here `%s` (moves vault.db and raft/ to %s, deleting nothing); "+
			"then start the node and unseal it: it joins as a new node and receives everything", how, r.NodeID, setAsideEmptyCmd, aside))
	}
	restore := "restore a snapshot (the writes after it are lost): `" + setAsideEmptyCmd + "`, then `gitlab-secrets-appliance snapshot restore FILE --new-cluster --config {config}`, then start the node and unseal it"
	if c := r.newestSnapshot(); c != nil {
		restore += fmt.Sprintf("; the newest snapshot here is %s (index %d, %s)", c.path, c.info.Index, c.info.Created.UTC().Format(time.RFC3339))
	} else {
		restore += " (there is no snapshot file in the snapshot schedule's directory: take FILE from a backup)"
	}
	r.Recovery = append(r.Recovery, restore)
	if r.file(vaultDBName).State == FileMissing || r.file(raftDBName).State == FileMissing {
		r.Recovery = append(r.Recovery, "if the file was moved or restored elsewhere rather than lost, put it back with the node stopped, and start the node")
	}
}
