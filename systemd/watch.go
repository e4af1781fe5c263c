package systemd

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Source is the node as the Notifier watches it.
type Source interface {
	// Summary says in one line what the node is and what it waits for. It
	// must hold no secret: every local user can read STATUS= (systemctl
	// status).
	Summary(ctx context.Context) string
	// Alive returns once the node's core has answered a call that a
	// wedged core never answers. It cannot be interrupted: Run calls it
	// on a goroutine of its own, one call at a time, and sends WATCHDOG=1
	// each time it returns.
	Alive()
}

// maxStallAfter is how long the watchdog's probe may take before STATUS=
// says that the core does not answer (at most; half the watchdog's
// timeout when that is shorter). It is only a note: pings resume, and the
// note goes, as soon as the probe returns.
const maxStallAfter = 10 * time.Second

// Run keeps the service manager informed until ctx ends: it reads
// src.Summary every StatusInterval and sends STATUS= when it changed, and,
// when systemd watches this process, calls src.Alive every half watchdog
// timeout and sends WATCHDOG=1 each time it returns. A probe that has not
// returned is waited for, not repeated: the pings stop until it returns,
// and systemd, after the watchdog's timeout, stops the process (by
// default with SIGABRT). Run returns when ctx ends, without waiting for a
// Summary or Alive that has not returned.
//
// Without a service manager to notify, Run returns at once.
func (n *Notifier) Run(ctx context.Context, src Source) {
	if n.socket == nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { n.pollSummary(ctx, src) })
	if n.watchdog > 0 {
		wg.Go(func() { n.keepWatchdog(ctx, src.Alive) })
	}
	wg.Wait()
}

// pollSummary sends the node's summary in STATUS= when it changes.
func (n *Notifier) pollSummary(ctx context.Context, src Source) {
	tick := time.NewTicker(n.statusEvery)
	defer tick.Stop()
	for {
		// Status may wait for the core: one call at a time, and ctx ends
		// the wait.
		got := make(chan string, 1)
		go func() { got <- src.Summary(ctx) }()
		select {
		case s := <-got:
			n.setSummary(s)
		case <-ctx.Done():
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// keepWatchdog pings while alive returns. Each probe starts half a
// watchdog timeout after the one before it started (or when that one
// returned, if later); a ping follows each return. So the pings stop, and
// systemd acts, once the core has not answered for between half the
// timeout and all of it.
func (n *Notifier) keepWatchdog(ctx context.Context, alive func()) {
	every := n.watchdog / 2
	stallAfter := min(every, n.stallAfter)
	for {
		started := time.Now()
		done := make(chan struct{})
		go func() {
			alive()
			close(done)
		}()
		stall := time.NewTimer(stallAfter)
		select {
		case <-done:
			stall.Stop()
		case <-ctx.Done():
			stall.Stop()
			return
		case <-stall.C:
			since := started.UTC().Format(time.TimeOnly)
			n.log(fmt.Sprintf("watchdog: the core has not answered since %s UTC; pings withheld until it does", since))
			n.setStall(fmt.Sprintf("the core has not answered since %s UTC: watchdog pings withheld", since))
			select {
			case <-done:
			case <-ctx.Done():
				return
			}
			n.log(fmt.Sprintf("watchdog: the core answers again, after %s; pings resume", time.Since(started).Round(time.Millisecond)))
			n.setStall("")
		}
		n.ping()
		next := time.NewTimer(time.Until(started.Add(every)))
		select {
		case <-next.C:
		case <-ctx.Done():
			next.Stop()
			return
		}
	}
}
