package drill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
)

// LiveOptions say how to rehearse on the real cluster: a planned
// switchover to Site and back.
type LiveOptions struct {
	// Address is any node's API; the drill finds the active node.
	Address string
	// Client talks to the nodes (the CLI's TLS settings).
	Client *http.Client
	// Token needs sudo on sys/appliance/geo (geo promote); the canary
	// writes go to its own cubbyhole.
	Token string
	Site  string
	// MaxSnapshotAge: the newest scheduled snapshot must be younger.
	MaxSnapshotAge time.Duration
	// DryRun runs the pre-flight checks and prints the plan only.
	DryRun   bool
	Progress io.Writer
	Timeout  time.Duration
}

// RunLive rehearses a planned switchover of the running cluster to
// o.Site and back, behind pre-flight checks, with a canary written and
// read through every node before, during and after. The canary's
// acknowledged writes all read back at the end; the report gives the
// longest write gap.
func RunLive(ctx context.Context, o LiveOptions) (*Report, error) {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	d := &run{o: Options{Progress: o.Progress}, r: &Report{Kind: "live", Started: time.Now().UTC()}, timeout: o.Timeout}
	defer func() {
		d.r.Finished = time.Now().UTC()
		d.r.Passed = len(d.r.Checks) > 0
		for _, c := range d.r.Checks {
			d.r.Passed = d.r.Passed && c.OK
		}
	}()
	live := &liveRun{run: d, o: o}
	if err := live.preflight(ctx); err != nil {
		return nil, err
	}
	if o.DryRun || !d.allOK() {
		return d.r, nil
	}
	live.rehearse(ctx)
	return d.r, nil
}

type liveRun struct {
	*run
	o      LiveOptions
	from   string
	nodes  []*node
	active *node
}

func (d *run) allOK() bool {
	for _, c := range d.r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

func (l *liveRun) at(addr string) *node {
	return &node{id: addr, api: strings.TrimRight(addr, "/")}
}

// activeStatus is the active node's status (asked of any node, then of
// the leader it names).
func (l *liveRun) activeStatus(ctx context.Context) (client.Status, *node, error) {
	n := l.at(l.o.Address)
	st, err := n.statusWith(ctx, l.o.Client)
	if err != nil {
		return st, nil, err
	}
	if st.State != client.StateActive && st.LeaderAPIAddr != "" {
		n = l.at(st.LeaderAPIAddr)
		if st, err = n.statusWith(ctx, l.o.Client); err != nil {
			return st, nil, err
		}
	}
	n.id = st.NodeID
	return st, n, nil
}

// preflight checks what a planned switchover needs, and the promote dry
// run's own checks (the quorum math).
func (l *liveRun) preflight(ctx context.Context) error {
	st, active, err := l.activeStatus(ctx)
	if err != nil {
		return err
	}
	if st.Geo == nil {
		return errors.New(st.NodeID + " has no geo block: there is no Geo switchover to rehearse")
	}
	l.active, l.from = active, st.Geo.PrimarySite
	d := l.run
	sites := map[string]int{}
	var order []string
	for _, n := range st.Geo.Nodes {
		if sites[n.Site] == 0 {
			order = append(order, n.Site)
		}
		sites[n.Site]++
		l.nodes = append(l.nodes, &node{id: n.ID, site: n.Site, api: strings.TrimRight(n.APIAddr, "/")})
		ok := n.Reachable && !n.Sealed && n.Ready && n.InRaft
		d.check("node "+n.ID, ok, fmt.Sprintf("site %s: reachable %v, unsealed %v, ready %v, in Raft %v, lag %d", n.Site, n.Reachable, !n.Sealed, n.Ready, n.InRaft, n.Lag))
	}
	for _, s := range order {
		d.r.Shape = append(d.r.Shape, SiteShape{Name: s, Nodes: sites[s], Primary: s == l.from})
	}
	d.check("a site to switch to", l.o.Site != l.from && sites[l.o.Site] > 0, fmt.Sprintf("%s (primary now: %s)", l.o.Site, l.from))
	for _, m := range st.Seal.Mechanisms {
		healthy := m.Enrolled && (m.Healthy == nil || *m.Healthy)
		d.check("seal "+m.Type, healthy, fmt.Sprintf("enrolled %v, healthy %s %s", m.Enrolled, boolPtr(m.Healthy), m.Error))
	}
	switch {
	case st.Snapshots == nil || st.Snapshots.LastSuccess == nil:
		d.check("recent snapshot", false, "the active node has taken no scheduled snapshot: configure a snapshot block, or take one and wait for the schedule")
	default:
		age := time.Since(st.Snapshots.LastSuccess.At)
		d.check("recent snapshot", age <= l.o.MaxSnapshotAge, fmt.Sprintf("%s, %s old (at most %s)", st.Snapshots.LastSuccess.File, age.Round(time.Second), l.o.MaxSnapshotAge))
	}
	var res client.PromoteResult
	err = l.promote(ctx, active, l.o.Site, true, &res)
	for _, c := range res.Checks {
		d.check("promote "+c.Check, c.OK, c.Detail)
	}
	if err != nil && len(res.Checks) == 0 {
		d.check("promote dry run", false, err.Error())
	}
	d.step(fmt.Sprintf("plan: switch %s -> %s (voters %s, leader %s) and back", l.from, l.o.Site, strings.Join(res.Voters, ", "), res.Leader), func() error { return nil })
	return nil
}

func boolPtr(b *bool) string {
	if b == nil {
		return "-"
	}
	return fmt.Sprint(*b)
}

// promote calls geo promote on the active node; out gets its answer,
// a refusal's pre-flight checks too.
func (l *liveRun) promote(ctx context.Context, active *node, site string, dry bool, out *client.PromoteResult) error {
	res, err := active.apiClient(l.o.Client).Promote(ctx, client.PromoteRequest{Site: site, DryRun: dry}, l.o.Token)
	*out = res
	var e *client.Error
	if errors.As(err, &e) {
		return fmt.Errorf("HTTP %d: %s", e.StatusCode, e)
	}
	return err
}

// canary writes and reads through every node.
func (l *liveRun) canary(ctx context.Context, when string) {
	var bad []string
	for _, n := range l.nodes {
		path := "cubbyhole/gitlab-secrets-appliance-drill-" + n.id
		value := when + "-" + time.Now().UTC().Format(time.RFC3339Nano)
		if ok, answer := n.writeWith(ctx, l.o.Client, l.o.Token, path, value); !ok {
			bad = append(bad, n.id+" write: "+answer)
		} else if !n.readWith(ctx, l.o.Client, l.o.Token, path, value) {
			bad = append(bad, n.id+" read")
		}
	}
	detail := fmt.Sprintf("written and read back through each of %d nodes", len(l.nodes))
	if len(bad) > 0 {
		detail = strings.Join(bad, "; ")
	}
	l.check("canary "+when, len(bad) == 0, detail)
}

// switchTo promotes site and waits until it leads, converged.
func (l *liveRun) switchTo(ctx context.Context, site string) bool {
	var ok bool
	l.step("geo promote --site "+site, func() error {
		_, active, err := l.activeStatus(ctx)
		if err == nil {
			var res client.PromoteResult
			err = l.promote(ctx, active, site, false, &res)
		}
		if err != nil {
			return err
		}
		ok = poll(ctx, l.timeout, func() bool {
			st, _, err := l.activeStatus(ctx)
			return err == nil && st.Geo != nil && st.Geo.PrimarySite == site && st.Geo.Reconciler == "converged" && st.Ready
		})
		if !ok {
			return errors.New("did not converge in time")
		}
		return nil
	})
	return l.check("switchover to "+site, ok, "the site's planned voters vote and its node leads")
}

func (l *liveRun) rehearse(ctx context.Context) {
	l.canary(ctx, "before")
	w := &canaryWriter{l: l}
	w.start(ctx)
	switched := l.switchTo(ctx, l.o.Site)
	if switched {
		l.canary(ctx, "during")
	}
	back := l.switchTo(ctx, l.from)
	gap, acked, lost := w.finish(ctx)
	l.r.WriteGap = gap.Seconds()
	l.check("no acknowledged write lost", lost == 0, fmt.Sprintf("%d canary writes acknowledged during the switchovers, %d missing; longest write gap %s", acked, lost, gap.Round(time.Millisecond)))
	if back {
		l.canary(ctx, "after")
	}
}

// canaryWriter writes through the nodes in turn while the switchovers
// run, records what was acknowledged and the longest gap between acks.
type canaryWriter struct {
	l      *liveRun
	mu     sync.Mutex
	acked  []int
	acks   []time.Time
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (w *canaryWriter) path(i int) string {
	return fmt.Sprintf("cubbyhole/gitlab-secrets-appliance-drill-w%d", i%100)
}

func (w *canaryWriter) start(ctx context.Context) {
	ctx, w.cancel = context.WithCancel(ctx)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			n := w.l.nodes[i%len(w.l.nodes)]
			if ok, _ := n.writeWith(ctx, w.l.o.Client, w.l.o.Token, w.path(i), fmt.Sprint(i)); ok {
				w.mu.Lock()
				w.acked = append(w.acked, i)
				w.acks = append(w.acks, time.Now())
				w.mu.Unlock()
			} else {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
}

// finish stops the writer and reads back the last acknowledged value of
// every path through the active node.
func (w *canaryWriter) finish(ctx context.Context) (gap time.Duration, acked, lost int) {
	w.cancel()
	w.wg.Wait()
	for i := 1; i < len(w.acks); i++ {
		gap = max(gap, w.acks[i].Sub(w.acks[i-1]))
	}
	last := map[string]int{}
	for _, i := range w.acked {
		last[w.path(i)] = i
	}
	_, active, err := w.l.activeStatus(ctx)
	if err != nil {
		return gap, len(w.acked), len(last)
	}
	for p, i := range last {
		// A later write whose answer was lost (a 503 "outcome unknown"
		// while leadership moved) may have landed: at least the last
		// acknowledged value must be there.
		v, ok := active.value(ctx, w.l.o.Client, w.l.o.Token, p)
		if n, err := strconv.Atoi(v); !ok || err != nil || n < i {
			lost++
		}
	}
	return gap, len(w.acked), lost
}
