package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/snapshot"
)

// The data dir's files, as a node starts on them and as `check` sees
// them. Every file is either verified before anything opens it (a damaged
// one refuses the start, naming the file and the recovery) or harmless
// when damaged (the node rebuilds it, and check says so):
//
//	vault.db            OpenBao's FSM: every applied storage entry, and Raft's snapshot; verified page by page
//	raft/raft.db        the Raft log and this node's term and vote; verified page by page, every entry decoded
//	raft/peers.json     a Raft configuration to recover into at the next start (written by geo promote --force,
//	                    snapshot restore --new-cluster, check --set-aside); must parse
//	raft/snapshots/     snapshots being received from a leader; emptied at every start
//	seal-header.json    the newest seal header seen (seal.Options.HeaderFile); damaged: logged, rewritten at the next unseal
//	geo-epoch.json      this node's Geo epoch (a geo block only); must parse
//	init-in-progress    the marker of an init that has not answered (see Init)
//	.lock               the data dir's lock, rewritten at every start
//	snapshots/          the snapshot schedule's files (or snapshot.directory); each must inspect whole
const (
	vaultDBName    = "vault.db"
	raftDirName    = "raft"
	raftDBName     = "raft/raft.db"
	peersJSONName  = "raft/peers.json"
	raftSnapsName  = "raft/snapshots"
	setAsidePrefix = "set-aside-"
)

// States of a file in a Report.
const (
	FileOK      = "ok"
	FileAbsent  = "absent"  // not there, and nothing needs it
	FileMissing = "missing" // not there (or empty), and the rest of the data needs it
	FileDamaged = "damaged"
	FileNotice  = "notice" // sound, with something an operator must know
)

// File is one file of a data dir as the check found it.
type File struct {
	Name   string `json:"name"` // relative to the data dir
	Path   string `json:"path"`
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
	// Action is what to do about it (a damaged, missing or notable file).
	Action string `json:"action,omitempty"`
	// BlocksStart: the node refuses to start while the file is so.
	BlocksStart bool `json:"blocks_start,omitempty"`
	// Snapshot: a file of the snapshot schedule's directory (Name is
	// its base name).
	Snapshot bool `json:"snapshot,omitempty"`
}

// Report is a data dir as a start or `check` found it.
type Report struct {
	DataDir string `json:"data_dir"`
	NodeID  string `json:"node_id"`
	Files   []File `json:"files"`
	// Refusal says why the node does not start on this data dir; empty
	// when it does. Recovery lists what to do, in order of preference.
	Refusal  string   `json:"refusal,omitempty"`
	Recovery []string `json:"recovery,omitempty"`
	// SetAside says what `check --set-aside` would do here, when it helps.
	SetAside string `json:"set_aside,omitempty"`
	// Elapsed is how long the check took.
	Elapsed time.Duration `json:"-"`

	cfg     *config.Config
	vault   vaultFacts
	raft    raftFacts
	cluster string // why this node has peers ("" for a cluster of one)
	plan    setAsidePlan
	newest  *snapshotCandidate
	// configFile names the config in the commands of the messages.
	configFile string
}

// Sound says whether every file is fine.
func (r *Report) Sound() bool {
	for _, f := range r.Files {
		if f.State == FileDamaged || f.State == FileMissing {
			return false
		}
	}
	return true
}

// StartRefused says whether a node refuses to start on this data dir.
func (r *Report) StartRefused() bool { return r.Refusal != "" }

// ErrDamaged marks a start refused because a file of the data dir
// is damaged or missing (a *StorageError).
var ErrDamaged = errors.New("the data dir's storage is damaged or incomplete")

// StorageError refuses a start on a damaged or incomplete data dir: it
// names each file, what is wrong, and what to do. Nothing was started and
// nothing was changed.
type StorageError struct {
	Report *Report
}

func (e *StorageError) Unwrap() error { return ErrDamaged }

func (e *StorageError) Error() string {
	r := e.Report
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir %s: %s. Nothing was started and no file was changed.", r.DataDir, r.Refusal)
	if len(r.Recovery) > 0 {
		b.WriteString("\nWhat to do (keep every file of the data dir until one of these worked):")
		for i, s := range r.Recovery {
			fmt.Fprintf(&b, "\n  %d. %s", i+1, r.render(s))
		}
	}
	return b.String()
}

// SetConfigFile names the config file in the commands the messages give.
func (r *Report) SetConfigFile(path string) { r.configFile = path }

// render fills in the config file of the commands in s.
func (r *Report) render(s string) string {
	cf := r.configFile
	if cf == "" {
		cf = "<config file>"
	}
	return strings.ReplaceAll(s, "{config}", cf)
}

// RecoveryText is Recovery with the config file filled in.
func (r *Report) RecoveryText() []string {
	var out []string
	for _, s := range r.Recovery {
		out = append(out, r.render(s))
	}
	return out
}

// setAsidePlan is what `check --set-aside` does on a data dir.
type setAsidePlan int

const (
	planNone setAsidePlan = iota
	// planRebuildRaft: vault.db is sound and this node was its
	// cluster's only voter; raft/ goes aside and raft/peers.json makes
	// the node restart from vault.db alone (every write it applied).
	planRebuildRaft
	// planEmpty: vault.db and raft/ go aside; the node starts empty,
	// to rejoin its cluster or take a snapshot.
	planEmpty
)

type vaultFacts struct {
	state   string // FileOK, FileAbsent, FileMissing (empty), FileDamaged
	damage  string
	index   uint64 // the last applied Raft index
	term    uint64
	servers []raftServer // the Raft configuration it applied last
	keys    int
	stats   boltStats
}

type raftServer struct {
	id, addr string
	voter    bool
}

type raftFacts struct {
	state        string
	damage       string
	logs         int
	first, last  uint64
	term         uint64
	firstAppend  time.Time   // the oldest entry's append time (zero: none)
	gaps         [][2]uint64 // entries missing between these two (a snapshot must cover them)
	servers      []raftServer
	configInLogs bool // servers come from a configuration entry of the log
	stats        boltStats
}

// coveredBy checks the log's gaps against the snapshot, vault.db: Raft
// reads every entry after its snapshot (vault.db's applied index) and
// panics on one it cannot find.
func (f raftFacts) coveredBy(v vaultFacts) raftFacts {
	for _, g := range f.gaps {
		if v.state == FileOK && g[1]-1 > v.index {
			f.state, f.damage = FileDamaged, fmt.Sprintf("damaged: the log jumps from entry %d to %d, and vault.db holds entries up to %d only", g[0], g[1], v.index)
			break
		}
	}
	return f
}

// hasState: the Raft log or the stable store holds something (the
// storage half of raft.HasExistingState).
func (f raftFacts) hasState() bool { return f.state == FileOK && (f.logs > 0 || f.term > 0) }

type snapshotCandidate struct {
	path string
	info *snapshot.Info
}

// Check checks a stopped node's data dir (`check`): it takes the
// data dir's lock (refused while the node runs), verifies every file and
// says what the node would do on it.
func Check(cfg *config.Config) (*Report, error) {
	if _, err := os.Stat(cfg.DataDir); errors.Is(err, os.ErrNotExist) {
		r := inspectDataDir(cfg, true)
		return r, nil
	}
	lock, err := Acquire(cfg.DataDir)
	if err != nil {
		return nil, StopFirst(err)
	}
	defer lock.Release()
	return inspectDataDir(cfg, true), nil
}

// inspectDataDir verifies the data dir's files (the caller holds its
// lock); full also inspects what no start needs (the snapshot files).
func inspectDataDir(cfg *config.Config, full bool) *Report {
	start := time.Now()
	r := &Report{DataDir: cfg.DataDir, NodeID: cfg.NodeID, cfg: cfg}
	dir := cfg.DataDir
	path := func(name string) string { return filepath.Join(dir, filepath.FromSlash(name)) }

	r.vault = inspectVault(path(vaultDBName))
	r.raft = inspectRaftLog(path(raftDBName)).coveredBy(r.vault)
	r.cluster = r.clusterReason(cfg)

	r.add(vaultDBName, r.vault.state, r.VaultDetail(), "")
	r.add(raftDBName, r.raft.state, r.RaftDetail(), "")
	r.checkPeersJSON(path(peersJSONName))
	r.checkRaftSnapshots(path(raftSnapsName))
	r.checkSealHeader(path(SealHeaderFile))
	r.checkGeoEpoch(dir, cfg.Geo != nil)
	r.checkInitMarker(path(InitMarker))
	if fi, err := os.Stat(path(LockFile)); err == nil && fi.Mode().IsRegular() {
		r.add(LockFile, FileOK, "the data dir's lock, rewritten at every start", "")
	}
	r.listOthers(dir)
	if full {
		r.checkSnapshotFiles(cfg)
	}
	r.judge()
	r.Elapsed = time.Since(start)
	return r
}

func (r *Report) add(name, state, detail, action string) *File {
	r.Files = append(r.Files, File{Name: name, Path: filepath.Join(r.DataDir, filepath.FromSlash(name)), State: state, Detail: detail, Action: action})
	return &r.Files[len(r.Files)-1]
}

func (r *Report) file(name string) *File {
	for i := range r.Files {
		if r.Files[i].Name == name {
			return &r.Files[i]
		}
	}
	return nil
}

func (r *Report) VaultDetail() string {
	v := r.vault
	switch v.state {
	case FileAbsent:
		return "not there"
	case FileOK:
		s := fmt.Sprintf("%s, %d keys, applied index %d", sizeText(v.stats.Size), v.keys, v.index)
		if n := len(v.servers); n > 0 {
			s += fmt.Sprintf(", Raft configuration of %d", n)
		}
		return s
	}
	return v.damage
}

func (r *Report) RaftDetail() string {
	f := r.raft
	switch f.state {
	case FileAbsent:
		return "not there"
	case FileMissing:
		return "empty (0 bytes)"
	case FileOK:
		if f.logs == 0 {
			return fmt.Sprintf("%s, no log entries, term %d", sizeText(f.stats.Size), f.term)
		}
		return fmt.Sprintf("%s, log entries %d-%d, term %d", sizeText(f.stats.Size), f.first, f.last, f.term)
	}
	return f.damage
}

func sizeText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// clusterReason says why this node may have peers that hold its data:
// other servers in the Raft configuration it knows, retry_join, Geo.
func (r *Report) clusterReason(cfg *config.Config) string {
	servers := r.vault.servers
	if r.raft.configInLogs {
		servers = r.raft.servers
	}
	var others []string
	for _, s := range servers {
		if s.id != cfg.NodeID {
			others = append(others, s.id)
		}
	}
	switch {
	case len(others) > 0:
		return "its Raft configuration lists " + strings.Join(others, ", ")
	case cfg.Raft != nil && len(cfg.Raft.RetryJoin) > 0:
		return "its config joins other nodes (raft.retry_join)"
	case cfg.Geo != nil:
		return "its config has a geo block"
	}
	return ""
}

// onlyVoter: vault.db's Raft configuration makes this node its
// cluster's only voter, and nothing in the config says it has peers.
func (r *Report) onlyVoter() (addr string, ok bool) {
	if r.cluster != "" || r.vault.state != FileOK || r.vault.index == 0 {
		return "", false
	}
	for _, s := range r.vault.servers {
		if s.id == r.NodeID && s.voter {
			addr, ok = s.addr, true
		} else if s.voter {
			return "", false
		}
	}
	return addr, ok
}

// StartCheck is a start's check of the data dir (the lock is held): a
// *StorageError when the node must not start on it.
func StartCheck(cfg *config.Config) (*Report, error) {
	if _, err := os.Stat(cfg.DataDir); err != nil {
		return nil, nil // made by Start; nothing in it yet
	}
	r := inspectDataDir(cfg, false)
	if r.StartRefused() {
		return r, &StorageError{Report: r}
	}
	return r, nil
}
