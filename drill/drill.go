// Package drill rehearses a Geo failover offline: from a snapshot it
// builds a throwaway cluster of the production topology's shape on
// loopback addresses in a temporary directory, with this binary only;
// unseals it with the real mechanism the operator chose (the HSM, or the
// Shamir shares typed in by their holders); loses the primary site (kill
// -9), promotes the secondary (geo promote --force), and checks that every
// secret of the snapshot is there (by keyed hash: no value leaves the
// storage), that writes work after the promotion, and that the old site
// cannot lead. It then removes everything it made, and reports.
package drill

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/snapshot"
)

// Mechanisms the drill unseals with.
const (
	UnsealHSM    = "hsm"
	UnsealShares = "shares"
)

// Options say what to rehearse with.
type Options struct {
	// Binary is this program (os.Executable), run for every node.
	Binary string
	// Config is the production node's config: its seal, its topology's
	// shape, its snapshot directory.
	Config *config.Config
	// Snapshot is the file to start from; "" is the newest scheduled one.
	Snapshot string
	// Unseal is UnsealHSM or UnsealShares; Share returns the share of
	// holder i (1-based) of threshold, as the holder types it.
	Unseal string
	Share  func(i, threshold int) (string, error)
	// Token is a token of the cluster, valid at the snapshot's time: the
	// canary writes use it (a cubbyhole of its own).
	Token string
	// WorkDir holds the throwaway cluster (removed at the end); "" is the
	// system's temporary directory.
	WorkDir string
	// Env is the nodes' environment (the HSM module's settings).
	Env []string
	// Progress gets one line per step for the operator.
	Progress io.Writer
	// Timeout bounds each wait (default 3 minutes).
	Timeout time.Duration
	// RestoreNewCluster makes the node of cfg the first node of a new
	// cluster holding the snapshot at path (snapshot restore
	// --new-cluster); PromoteDisaster promotes the stopped node of cfg
	// with its site (geo promote --force), the fenced sites' nodes gone.
	// They are the server's offline operations, run in this process: the
	// caller passes them so that the drill does not link the server.
	RestoreNewCluster func(cfg *config.Config, path string) error
	PromoteDisaster   func(cfg *config.Config, site string, fenced []string) error
}

// Report is what the drill did and found. No value, share, PIN or token
// is in it.
type Report struct {
	// Kind is "offline" or "live".
	Kind     string      `json:"kind"`
	Started  time.Time   `json:"started"`
	Finished time.Time   `json:"finished"`
	Passed   bool        `json:"passed"`
	Snapshot SnapshotRef `json:"snapshot"`
	Shape    []SiteShape `json:"shape"`
	Unsealed string      `json:"unsealed_with"`
	Steps    []Step      `json:"steps"`
	Checks   []Check     `json:"checks"`
	RTO      float64     `json:"rto_seconds,omitempty"`
	// WriteGap (live) is the longest time without an acknowledged write
	// during the switchovers.
	WriteGap float64  `json:"write_gap_seconds,omitempty"`
	RPO      *geo.RPO `json:"rpo,omitempty"`
	// SecretsChecked counts the snapshot's secret-engine entries compared
	// (every one under logical/).
	SecretsChecked int `json:"secrets_checked"`
	// SecretPaths are their storage paths (opaque: engine UUIDs and, for
	// KV v2, salted hashes of the secrets' paths).
	SecretPaths []string `json:"secret_paths,omitempty"`
}

// SnapshotRef names the snapshot the drill started from.
type SnapshotRef struct {
	File       string    `json:"file"`
	Index      uint64    `json:"index"`
	SHA256     string    `json:"sha256"`
	Cluster    string    `json:"cluster"`
	Generation uint32    `json:"seal_generation"`
	Created    time.Time `json:"created,omitzero"`
}

// SiteShape is one site of the rehearsed topology.
type SiteShape struct {
	Name    string `json:"name"`
	Nodes   int    `json:"nodes"`
	Primary bool   `json:"primary"`
}

// Step is one thing the drill did, when, and how long it took.
type Step struct {
	At   time.Time `json:"at"`
	What string    `json:"what"`
	Took string    `json:"took"`
}

// Check is one verdict.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// run is one drill's state.
type run struct {
	o       Options
	r       *Report
	dir     string
	nodes   []*node
	sites   []*geo.Site
	shares  []string
	timeout time.Duration
}

// Run rehearses. It returns an error only when the drill could not run
// (no snapshot, no work directory); a failed check is in the report, with
// Passed false. Whatever it started is stopped and removed before it
// returns.
func Run(ctx context.Context, o Options) (*Report, error) {
	d := &run{o: o, r: &Report{Kind: "offline", Started: time.Now().UTC()}, timeout: o.Timeout}
	if d.timeout == 0 {
		d.timeout = 3 * time.Minute
	}
	if o.Progress == nil {
		d.o.Progress = io.Discard
	}
	if o.Token == "" {
		return nil, errors.New("the drill needs a token of the cluster, valid at the snapshot's time, for its canary writes")
	}
	if o.RestoreNewCluster == nil || o.PromoteDisaster == nil {
		return nil, errors.New("the drill needs the server's offline operations (Options.RestoreNewCluster, Options.PromoteDisaster)")
	}
	path := o.Snapshot
	if path == "" {
		if o.Config.Snapshot == nil {
			return nil, errors.New("no snapshot given and the config has no snapshot block: name one with --snapshot")
		}
		p, err := snapshot.Newest(o.Config.Snapshot.Directory)
		if err != nil {
			return nil, err
		}
		path = p
	}
	info, err := snapshot.InspectFile(path)
	if err != nil {
		return nil, err
	}
	d.r.Snapshot = SnapshotRef{File: path, Index: info.Index, SHA256: info.SHA256, Cluster: info.Seal.Cluster, Generation: info.Seal.Generation, Created: info.Created}
	if d.dir, err = os.MkdirTemp(o.WorkDir, "gsa-drill-"); err != nil {
		return nil, err
	}
	defer func() {
		d.cleanup()
		d.r.Passed = len(d.r.Checks) > 1
		for _, c := range d.r.Checks {
			d.r.Passed = d.r.Passed && c.OK
		}
	}()
	d.step("snapshot "+filepath.Base(path)+" checked whole", func() error { return nil })
	d.rehearse(ctx, path)
	return d.r, nil
}

// step runs one step and records it.
func (d *run) step(what string, do func() error) error {
	start := time.Now()
	err := do()
	s := Step{At: start.UTC(), What: what, Took: time.Since(start).Round(time.Millisecond).String()}
	if err != nil {
		s.What += ": " + err.Error()
	}
	d.r.Steps = append(d.r.Steps, s)
	fmt.Fprintf(d.o.Progress, "drill: %s (%s)\n", s.What, s.Took)
	return err
}

func (d *run) check(name string, ok bool, detail string) bool {
	d.r.Checks = append(d.r.Checks, Check{Name: name, OK: ok, Detail: detail})
	mark := "ok"
	if !ok {
		mark = "FAILED"
	}
	fmt.Fprintf(d.o.Progress, "drill: check %s: %s: %s\n", name, mark, detail)
	return ok
}

func (d *run) rehearse(ctx context.Context, path string) {
	key := make([]byte, 32)
	rand.Read(key)
	var want snapshot.Digests
	if err := d.step("snapshot's secret-engine entries digested", func() error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		want, err = snapshot.DigestSnapshot(f, key, "logical/")
		return err
	}); err != nil {
		d.check("snapshot readable", false, err.Error())
		return
	}
	d.r.SecretsChecked = len(want)
	for p := range want {
		d.r.SecretPaths = append(d.r.SecretPaths, p)
	}
	sort.Strings(d.r.SecretPaths)
	if err := d.step("throwaway cluster laid out in "+d.dir, d.layout); err != nil {
		d.check("cluster built", false, err.Error())
		return
	}
	first := d.nodes[0]
	if err := d.step(first.id+" made the first node of a new cluster holding the snapshot", func() error {
		cfg, err := config.Load(first.cfgPath)
		if err != nil {
			return err
		}
		return d.o.RestoreNewCluster(cfg, path)
	}); err != nil {
		d.check("cluster built", false, err.Error())
		return
	}
	if !d.startAndUnseal(ctx, d.nodes, true) {
		return
	}
	primary, secondary := d.siteNodes(d.sites[0]), d.siteNodes(d.sites[1])
	active, ok := d.waitActive(ctx, primary, func(st client.Status) bool {
		return st.Geo != nil && st.Geo.Reconciler == "converged"
	})
	if !d.check("cluster formed", ok, fmt.Sprintf("%d nodes in %d sites, the primary site's nodes vote, %s leads", len(d.nodes), len(d.sites), nodeID(active))) {
		return
	}
	canary := "cubbyhole/gitlab-secrets-appliance-drill"
	if ok, answer := active.write(ctx, d.o.Token, canary, "before"); !d.check("write before the failover", ok, "through "+active.id+": "+answer) {
		return
	}

	// The primary site is lost.
	lost := time.Now()
	d.step("site "+d.sites[0].Name+" lost: kill -9 of "+strings.Join(ids(primary), ", "), func() error {
		for _, n := range primary {
			n.kill()
		}
		return nil
	})
	var promoteErr error
	d.step("geo promote --site "+d.sites[1].Name+" --force on "+strings.Join(ids(secondary), ", ")+" (stopped, promoted, started)", func() error {
		for _, n := range secondary {
			n.stop()
		}
		for _, n := range secondary {
			cfg, err := config.Load(n.cfgPath)
			if err == nil {
				err = d.o.PromoteDisaster(cfg, d.sites[1].Name, []string{d.sites[0].Name})
			}
			if err != nil {
				promoteErr = fmt.Errorf("%s: %w", n.id, err)
				return promoteErr
			}
		}
		return nil
	})
	if !d.check("disaster promotion", promoteErr == nil, errText(promoteErr, "every node of site "+d.sites[1].Name+" promoted")) {
		return
	}
	if !d.startAndUnseal(ctx, secondary, false) {
		return
	}
	var firstWrite *node
	written := poll(ctx, d.timeout, func() bool {
		for _, n := range secondary {
			if ok, _ := n.write(ctx, d.o.Token, canary, "after"); ok {
				firstWrite = n
				return true
			}
		}
		return false
	})
	rto := time.Since(lost)
	d.r.RTO = rto.Seconds()
	if !d.check("write after the promotion", written, fmt.Sprintf("first acknowledged write through %s %.1f s after the site was lost (the RTO, commands and unseals included)", nodeID(firstWrite), rto.Seconds())) {
		return
	}
	d.check("read after the promotion", firstWrite.read(ctx, d.o.Token, canary, "after"), "the canary reads back through "+firstWrite.id)
	var rpo *geo.RPO
	if _, ok := d.waitActive(ctx, secondary, func(st client.Status) bool {
		if st.Geo != nil && st.Geo.RPO != nil && len(st.Geo.Epoch.Survivors) == len(secondary) {
			rpo = st.Geo.RPO
		}
		return rpo != nil
	}); ok {
		d.r.RPO = rpo
		d.check("RPO recorded", true, fmt.Sprintf("kept index %d; at most %d entries, %.3f s lost", d.r.RPO.KeptIndex, d.r.RPO.LostEntriesAtMost, d.r.RPO.LostSeconds))
	} else {
		d.check("RPO recorded", false, "the promoted site's active node never recorded the epoch's RPO")
	}

	// An old-site node back with its data must not lead.
	old := primary[0]
	fenced := false
	d.step(old.id+" of the old site restarted with its data", func() error {
		if err := old.start(d.o.Binary, d.o.Env); err != nil {
			return err
		}
		fenced = poll(ctx, d.timeout, func() bool {
			st, err := old.status(ctx)
			return err == nil && st.Sealed && st.Geo != nil && st.Geo.Fenced != ""
		})
		old.kill()
		return nil
	})
	d.check("the old site cannot lead", fenced, old.id+" refuses to unseal: it is fenced by the new epoch")

	// Every secret of the snapshot is in the promoted site's storage.
	for _, n := range secondary {
		n.stop()
	}
	for _, n := range secondary {
		got, err := datadir.StorageDigests(n.dataDir(), key, "logical/")
		if err != nil {
			d.check("secrets on "+n.id, false, err.Error())
			continue
		}
		missing := want.Missing(got)
		detail := fmt.Sprintf("%d of %d secret-engine entries of the snapshot, identical by keyed hash", len(want)-len(missing), len(want))
		if len(missing) > 0 {
			detail += fmt.Sprintf("; missing or different: %d (e.g. %s)", len(missing), missing[0])
		}
		d.check("secrets on "+n.id, len(missing) == 0, detail)
	}
}

// startAndUnseal starts nodes and waits until each is unsealed: by
// itself with the HSM, or with the holders' shares (asked for once, at
// the first node that needs them; a refused share fails the drill, naming
// its holder).
func (d *run) startAndUnseal(ctx context.Context, nodes []*node, check bool) bool {
	for _, n := range nodes {
		if err := n.start(d.o.Binary, d.o.Env); err != nil {
			return d.check("nodes started", false, err.Error())
		}
	}
	for _, n := range nodes {
		if !poll(ctx, d.timeout, func() bool { _, err := n.status(ctx); return err == nil }) {
			return d.check("nodes started", false, n.id+" never served its API:\n"+n.logTail(20))
		}
	}
	for _, n := range nodes {
		if d.o.Unseal == UnsealShares {
			if ok := d.giveShares(ctx, n); !ok {
				return false
			}
		}
		if !poll(ctx, d.timeout, func() bool { st, err := n.status(ctx); return err == nil && !st.Sealed }) {
			return d.check("unseal", false, n.id+" did not unseal:\n"+n.logTail(20))
		}
	}
	if check {
		d.check("unseal", true, fmt.Sprintf("%d nodes unsealed with %s", len(nodes), d.r.Unsealed))
	}
	return true
}

func (d *run) giveShares(ctx context.Context, n *node) bool {
	st, err := n.status(ctx)
	if err != nil {
		return d.check("unseal", false, n.id+": "+err.Error())
	}
	threshold := 0
	for _, m := range st.Seal.Mechanisms {
		if m.Type == "shamir" {
			threshold = m.Threshold
		}
	}
	if threshold == 0 {
		// A node that has not joined yet knows no header: the first
		// node's threshold holds.
		threshold = len(d.shares)
	}
	if threshold == 0 {
		return d.check("unseal", false, n.id+" knows no Shamir threshold: the snapshot's seal has no shares")
	}
	for i := 1; i <= threshold; i++ {
		if len(d.shares) < i {
			s, err := d.o.Share(i, threshold)
			if err != nil {
				return d.check("unseal", false, fmt.Sprintf("share of holder %d: %v", i, err))
			}
			d.shares = append(d.shares, s)
		}
		if _, err := n.unseal(ctx, d.shares[i-1]); err != nil {
			return d.check("unseal", false, fmt.Sprintf("the share of holder %d was refused by %s: %v", i, n.id, err))
		}
	}
	if d.r.Unsealed == "" {
		var holders []string
		for i := range d.shares {
			holders = append(holders, fmt.Sprint(i+1))
		}
		d.r.Unsealed = "Shamir shares of holders " + strings.Join(holders, ", ")
	}
	return true
}

// waitActive waits for a ready active node among nodes whose status
// satisfies cond.
func (d *run) waitActive(ctx context.Context, nodes []*node, cond func(client.Status) bool) (*node, bool) {
	var found *node
	ok := poll(ctx, d.timeout, func() bool {
		for _, n := range nodes {
			st, err := n.status(ctx)
			if err == nil && st.State == client.StateActive && st.Ready && cond(st) {
				found = n
				return true
			}
		}
		return false
	})
	return found, ok
}

func (d *run) siteNodes(s *geo.Site) []*node {
	var out []*node
	for _, n := range d.nodes {
		if n.site == s.Name {
			out = append(out, n)
		}
	}
	return out
}

// cleanup stops every process, forgets the shares and removes the work
// directory, and checks that nothing is left.
func (d *run) cleanup() {
	for _, n := range d.nodes {
		n.kill()
	}
	for i := range d.shares {
		d.shares[i] = ""
	}
	err := os.RemoveAll(d.dir)
	left := false
	for _, n := range d.nodes {
		left = left || n.running()
	}
	if _, serr := os.Stat(d.dir); err == nil && serr == nil {
		err = errors.New("the directory is still there")
	}
	d.check("nothing left behind", err == nil && !left, errText(err, "every process stopped, "+d.dir+" removed"))
	d.r.Finished = time.Now().UTC()
}

func ids(nodes []*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.id)
	}
	return out
}

func nodeID(n *node) string {
	if n == nil {
		return "(none)"
	}
	return n.id
}

func errText(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}
