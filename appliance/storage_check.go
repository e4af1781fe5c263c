package appliance

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/snapshot"

	"github.com/hashicorp/go-msgpack/codec"
	hraft "github.com/hashicorp/raft"
	baoraft "github.com/openbao/openbao/physical/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
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

// States of a file in a DataDirReport.
const (
	FileOK      = "ok"
	FileAbsent  = "absent"  // not there, and nothing needs it
	FileMissing = "missing" // not there (or empty), and the rest of the data needs it
	FileDamaged = "damaged"
	FileNotice  = "notice" // sound, with something an operator must know
)

// DataFile is one file of a data dir as the check found it.
type DataFile struct {
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

// DataDirReport is a data dir as a start or `check` found it.
type DataDirReport struct {
	DataDir string     `json:"data_dir"`
	NodeID  string     `json:"node_id"`
	Files   []DataFile `json:"files"`
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
func (r *DataDirReport) Sound() bool {
	for _, f := range r.Files {
		if f.State == FileDamaged || f.State == FileMissing {
			return false
		}
	}
	return true
}

// StartRefused says whether a node refuses to start on this data dir.
func (r *DataDirReport) StartRefused() bool { return r.Refusal != "" }

// ErrStorageDamaged marks a start refused because a file of the data dir
// is damaged or missing (a *StorageError).
var ErrStorageDamaged = errors.New("the data dir's storage is damaged or incomplete")

// StorageError refuses a start on a damaged or incomplete data dir: it
// names each file, what is wrong, and what to do. Nothing was started and
// nothing was changed.
type StorageError struct {
	Report *DataDirReport
}

func (e *StorageError) Unwrap() error { return ErrStorageDamaged }

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
func (r *DataDirReport) SetConfigFile(path string) { r.configFile = path }

// render fills in the config file of the commands in s.
func (r *DataDirReport) render(s string) string {
	cf := r.configFile
	if cf == "" {
		cf = "<config file>"
	}
	return strings.ReplaceAll(s, "{config}", cf)
}

// RecoveryText is Recovery with the config file filled in.
func (r *DataDirReport) RecoveryText() []string {
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

// CheckDataDir checks a stopped node's data dir (`check`): it takes the
// data dir's lock (refused while the node runs), verifies every file and
// says what the node would do on it.
func CheckDataDir(cfg *config.Config) (*DataDirReport, error) {
	if _, err := os.Stat(cfg.DataDir); errors.Is(err, os.ErrNotExist) {
		r := inspectDataDir(cfg, true)
		return r, nil
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, stopFirst(err)
	}
	defer lock.release()
	return inspectDataDir(cfg, true), nil
}

// inspectDataDir verifies the data dir's files (the caller holds its
// lock); full also inspects what no start needs (the snapshot files).
func inspectDataDir(cfg *config.Config, full bool) *DataDirReport {
	start := time.Now()
	r := &DataDirReport{DataDir: cfg.DataDir, NodeID: cfg.NodeID, cfg: cfg}
	dir := cfg.DataDir
	path := func(name string) string { return filepath.Join(dir, filepath.FromSlash(name)) }

	r.vault = inspectVault(path(vaultDBName))
	r.raft = inspectRaftLog(path(raftDBName)).coveredBy(r.vault)
	r.cluster = r.clusterReason(cfg)

	r.add(vaultDBName, r.vault.state, r.vaultDetail(), "")
	r.add(raftDBName, r.raft.state, r.raftDetail(), "")
	r.checkPeersJSON(path(peersJSONName))
	r.checkRaftSnapshots(path(raftSnapsName))
	r.checkSealHeader(path(SealHeaderFile))
	r.checkGeoEpoch(dir, cfg.Geo != nil)
	r.checkInitMarker(path(initMarker))
	if fi, err := os.Stat(path(DataDirLockFile)); err == nil && fi.Mode().IsRegular() {
		r.add(DataDirLockFile, FileOK, "the data dir's lock, rewritten at every start", "")
	}
	r.listOthers(dir)
	if full {
		r.checkSnapshotFiles(cfg)
	}
	r.judge()
	r.Elapsed = time.Since(start)
	return r
}

func (r *DataDirReport) add(name, state, detail, action string) *DataFile {
	r.Files = append(r.Files, DataFile{Name: name, Path: filepath.Join(r.DataDir, filepath.FromSlash(name)), State: state, Detail: detail, Action: action})
	return &r.Files[len(r.Files)-1]
}

func (r *DataDirReport) file(name string) *DataFile {
	for i := range r.Files {
		if r.Files[i].Name == name {
			return &r.Files[i]
		}
	}
	return nil
}

// inspectVault verifies vault.db and reads what OpenBao reads of it at
// open (the latest index and configuration).
func inspectVault(path string) (f vaultFacts) {
	st, err := verifyBolt(path)
	f.stats = st
	switch {
	case errors.Is(err, os.ErrNotExist):
		f.state = FileAbsent
		return f
	case errors.Is(err, errBoltEmpty):
		f.state, f.damage = FileMissing, "empty (0 bytes)"
		return f
	case err != nil:
		f.state, f.damage = FileDamaged, damageText(err)
		return f
	}
	f.keys = st.Keys
	err = readBolt(path, func(tx *bolt.Tx) error {
		conf := tx.Bucket([]byte("config"))
		if conf == nil {
			return nil
		}
		if v := conf.Get([]byte("latest_indexes")); v != nil {
			var iv baoraft.IndexValue
			if err := proto.Unmarshal(v, &iv); err != nil {
				return damaged("its latest applied index does not decode: %v", err)
			}
			f.index, f.term = iv.Index, iv.Term
		}
		if v := conf.Get([]byte("latest_config")); v != nil {
			var cv baoraft.ConfigurationValue
			if err := proto.Unmarshal(v, &cv); err != nil {
				return damaged("its Raft configuration does not decode: %v", err)
			}
			for _, s := range cv.Servers {
				f.servers = append(f.servers, raftServer{id: s.Id, addr: s.Address, voter: hraft.ServerSuffrage(s.Suffrage) == hraft.Voter})
			}
		}
		return nil
	})
	if err != nil {
		f.state, f.damage = FileDamaged, damageText(err)
		return f
	}
	f.state = FileOK
	return f
}

// inspectRaftLog verifies raft/raft.db (hashicorp/raft-boltdb's: the
// "logs" and "conf" buckets), decodes every log entry as Raft would, and
// checks the log is one run of consecutive indexes of non-decreasing
// terms, and the stable store's numbers are numbers. (A value of the
// wrong size, or a gap, makes Raft panic later, at its first read.)
func inspectRaftLog(path string) (f raftFacts) {
	st, err := verifyBolt(path)
	f.stats = st
	switch {
	case errors.Is(err, os.ErrNotExist):
		f.state = FileAbsent
		return f
	case errors.Is(err, errBoltEmpty):
		f.state = FileMissing
		return f
	case err != nil:
		f.state, f.damage = FileDamaged, damageText(err)
		return f
	}
	err = readBolt(path, func(tx *bolt.Tx) error {
		if conf := tx.Bucket([]byte("conf")); conf != nil {
			for _, k := range []string{"CurrentTerm", "LastVoteTerm"} {
				v := conf.Get([]byte(k))
				if v == nil {
					continue
				}
				if len(v) != 8 {
					return damaged("its stable store's %s is %d bytes, not a number", k, len(v))
				}
				if k == "CurrentTerm" {
					f.term = binary.BigEndian.Uint64(v)
				}
			}
		}
		logs := tx.Bucket([]byte("logs"))
		if logs == nil {
			return nil
		}
		var h codec.MsgpackHandle // raft-boltdb's
		dec := codec.NewDecoderBytes(nil, &h)
		var prevTerm uint64
		c := logs.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 {
				return damaged("a log key of %d bytes, not an index", len(k))
			}
			idx := binary.BigEndian.Uint64(k)
			switch {
			case f.logs > 0 && idx <= f.last:
				return damaged("log entry %d comes after entry %d", idx, f.last)
			case f.logs > 0 && idx != f.last+1:
				// A snapshot may cover it (judge checks): a node that
				// installed one keeps the entries before it until
				// they are compacted.
				f.gaps = append(f.gaps, [2]uint64{f.last, idx})
			}
			var l hraft.Log
			dec.ResetBytes(v)
			if err := dec.Decode(&l); err != nil {
				return damaged("log entry %d does not decode: %v", idx, err)
			}
			switch {
			case l.Index != idx:
				return damaged("log entry %d says it is entry %d", idx, l.Index)
			case l.Term == 0 || l.Term < prevTerm:
				return damaged("log entry %d has term %d after term %d", idx, l.Term, prevTerm)
			case l.Type > hraft.LogConfiguration:
				return damaged("log entry %d has an unknown type %d", idx, l.Type)
			}
			if l.Type == hraft.LogConfiguration {
				servers, err := decodeRaftConfiguration(l.Data)
				if err != nil {
					return damaged("log entry %d, a Raft configuration, does not decode: %v", idx, err)
				}
				f.servers, f.configInLogs = servers, true
			}
			prevTerm = l.Term
			if f.logs == 0 {
				f.first = idx
			}
			f.last = idx
			f.logs++
			if !l.AppendedAt.IsZero() && (f.firstAppend.IsZero() || l.AppendedAt.Before(f.firstAppend)) {
				f.firstAppend = l.AppendedAt
			}
		}
		return nil
	})
	if err != nil {
		f.state, f.damage = FileDamaged, damageText(err)
		return f
	}
	f.state = FileOK
	return f
}

// decodeRaftConfiguration is hraft.DecodeConfiguration, which panics on
// what it cannot decode.
func decodeRaftConfiguration(b []byte) (out []raftServer, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	for _, s := range hraft.DecodeConfiguration(b).Servers {
		out = append(out, raftServer{id: string(s.ID), addr: string(s.Address), voter: s.Suffrage == hraft.Voter})
	}
	return out, nil
}

// readBolt opens a verified bbolt file read-only (no freelist walk, no
// write) and runs fn in a read transaction; a panic is a damaged file.
func readBolt(path string, fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = damaged("unreadable (%v)", r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("cannot open it: %w", err)
	}
	defer db.Close()
	return db.View(fn)
}

func damageText(err error) string {
	var d *boltDamage
	if errors.As(err, &d) {
		return "damaged: " + d.what
	}
	return err.Error()
}

func (r *DataDirReport) vaultDetail() string {
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

func (r *DataDirReport) raftDetail() string {
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
func (r *DataDirReport) clusterReason(cfg *config.Config) string {
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
func (r *DataDirReport) onlyVoter() (addr string, ok bool) {
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

func (r *DataDirReport) checkPeersJSON(path string) {
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

func (r *DataDirReport) checkRaftSnapshots(path string) {
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

func (r *DataDirReport) checkSealHeader(path string) {
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

func (r *DataDirReport) checkGeoEpoch(dir string, geo bool) {
	if _, err := os.Stat(filepath.Join(dir, GeoEpochFile)); errors.Is(err, os.ErrNotExist) {
		return
	}
	e, err := readEpochFile(dir)
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

func (r *DataDirReport) checkInitMarker(path string) {
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
		if why := r.initUnproven(at, perr == nil); why != "" {
			action = "this node's data cannot be shown to come from that init alone (" + why + "): it may hold secrets, keep it. " +
				"If the cluster is in use, the marker is wrong: remove it"
		} else {
			action = "the init's answer never left this node: nobody holds this cluster's shares, recovery keys or root token, and no secret can be in it; " +
				"start the node and see `gitlab-secrets-appliance status`"
		}
	}
	r.add(initMarker, FileNotice, detail, action)
}

// initUnproven says why this node's Raft data cannot be shown to come
// from an init that started at `at` and never answered; "" when it can:
// its log starts at entry 1 (never compacted, no snapshot installed),
// every entry was appended after the init started, and the Raft
// configuration lists this node alone.
func (r *DataDirReport) initUnproven(at time.Time, known bool) string {
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
func (r *DataDirReport) knownSingle() bool {
	return r.cluster == "" && (len(r.vault.servers) > 0 || len(r.raft.servers) > 0)
}

// listOthers names what else is in the data dir: earlier set-aside data.
func (r *DataDirReport) listOthers(dir string) {
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
func (r *DataDirReport) checkSnapshotFiles(cfg *config.Config) {
	for _, c := range snapshotFiles(cfg) {
		info, err := snapshot.InspectFile(c.path)
		var f *DataFile
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
func (r *DataDirReport) newestSnapshot() *snapshotCandidate {
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

// judge decides whether a node starts on the data dir and, if not, what
// to do.
func (r *DataDirReport) judge() {
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
			r.file(vaultDBName).State = FileMissing
		} else {
			r.file(vaultDBName).State = FileMissing
		}
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
func (r *DataDirReport) block(name, action string) {
	f := r.file(name)
	f.BlocksStart = true
	if action != "" {
		f.Action = action
	}
}

func (r *DataDirReport) peersJSON() (string, bool) {
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
func (r *DataDirReport) recoveries() {
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
func SetAside(cfg *config.Config, empty, confirmed bool) (*SetAsideReport, *DataDirReport, error) {
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, nil, stopFirst(err)
	}
	defer lock.release()
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
	names := []string{raftDirName, vaultDBName, initMarker}
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
	if err := ownLikeDir(dir, cfg.DataDir); err != nil {
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
	if err := syncDirs(cfg.DataDir, dir); err != nil {
		return rep, r, err
	}
	if plan == planRebuildRaft {
		raftDir := filepath.Join(cfg.DataDir, raftDirName)
		if err := os.Mkdir(raftDir, 0o700); err != nil {
			return rep, r, err
		}
		if err := ownLikeDir(raftDir, cfg.DataDir); err != nil {
			return rep, r, err
		}
		rep.PeersFile = filepath.Join(raftDir, "peers.json")
		self := hraft.Configuration{Servers: []hraft.Server{{ID: hraft.ServerID(cfg.NodeID), Address: hraft.ServerAddress(addr), Suffrage: hraft.Voter}}}
		if err := writePeersJSON(rep.PeersFile, self); err != nil {
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

// syncDirs makes renames in the directories durable.
func syncDirs(dirs ...string) error {
	for _, d := range dirs {
		f, err := os.Open(d)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// startCheck is a start's check of the data dir (the lock is held): a
// *StorageError when the node must not start on it.
func startCheck(cfg *config.Config) (*DataDirReport, error) {
	if _, err := os.Stat(cfg.DataDir); err != nil {
		return nil, nil // made by Start; nothing in it yet
	}
	r := inspectDataDir(cfg, false)
	if r.StartRefused() {
		return r, &StorageError{Report: r}
	}
	return r, nil
}
