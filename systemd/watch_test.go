package systemd

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// fakeNode is a Source whose core is a mutex: a test that holds it wedges
// the core, as a held state lock does.
type fakeNode struct {
	core     sync.Mutex
	polls    atomic.Int64 // Summary calls; the summary is "poll N"
	fixed    atomic.Value // if set, the summary
	probes   atomic.Int64 // Alive calls
	inFlight atomic.Int64
	overlaps atomic.Int64 // Alive calls made while another had not returned
}

func (f *fakeNode) Summary(context.Context) string {
	p := f.polls.Add(1)
	if s, ok := f.fixed.Load().(string); ok {
		return s
	}
	return fmt.Sprintf("poll %d", p)
}

func (f *fakeNode) Alive() {
	f.probes.Add(1)
	if f.inFlight.Add(1) > 1 {
		f.overlaps.Add(1)
	}
	defer f.inFlight.Add(-1)
	f.core.Lock()
	f.core.Unlock()
}

func isPing(m harness.NotifyMessage) bool { return m.Has("WATCHDOG", "1") }

func statusMatches(pred func(string) bool) func(harness.NotifyMessage) bool {
	return func(m harness.NotifyMessage) bool {
		st, ok := m.Get("STATUS")
		return ok && pred(st)
	}
}

const stallNote = "the core has not answered since"

// pollNumber is N of a status that begins "poll N".
func pollNumber(st string) int64 {
	var n int64
	fmt.Sscanf(st, "poll %d", &n)
	return n
}

func startRun(t *testing.T, n *Notifier, src Source) (cancel func()) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		n.Run(ctx, src)
		close(ran)
	}()
	cancel = func() {
		stop()
		select {
		case <-ran:
		case <-time.After(hangDetector):
			t.Fatal("Run did not return after its context ended")
		}
	}
	t.Cleanup(cancel)
	return cancel
}

// STATUS= follows the summary, sent once per change.
func TestRunSendsStatusChanges(t *testing.T) {
	sock := harness.NewNotifySocket(t)
	n, _ := fromEnv(t, sock, "")
	n.statusEvery = 5 * time.Millisecond
	f := &fakeNode{}
	f.fixed.Store("sealed: waiting for Shamir shares (0 of 2 submitted)")
	stop := startRun(t, n, f)

	i := 0
	for _, s := range []string{"sealed: waiting for Shamir shares (1 of 2 submitted)", "active", "standby, active node gitlab-2:8200"} {
		// At least 10 polls of the same summary between changes.
		from := f.polls.Load()
		harness.Eventually(t, hangDetector, "10 polls", func() bool { return f.polls.Load() >= from+10 })
		f.fixed.Store(s)
		i, _ = sock.WaitFor(t, i, hangDetector, "STATUS="+s, func(m harness.NotifyMessage) bool { return m.Has("STATUS", s) })
	}
	stop()
	var prev string
	for _, m := range sock.Messages() {
		st, ok := m.Get("STATUS")
		if !ok || len(m.Lines) != 1 || m.PID != os.Getpid() {
			t.Fatalf("unexpected message %s", m)
		}
		if st == prev {
			t.Fatalf("STATUS=%s sent twice in a row:\n%s", st, sock.Dump(0))
		}
		prev = st
	}
	if len(sock.Messages()) != 4 || f.probes.Load() != 0 {
		t.Fatalf("%d messages, %d probes without a watchdog:\n%s", len(sock.Messages()), f.probes.Load(), sock.Dump(0))
	}
}

// WATCHDOG=1 follows every return of Alive. A wedged core (the test holds
// its lock) gets no ping until it answers again, however long that takes,
// and no second probe; STATUS= and the log say so, and pings resume when it
// answers. Run returns while a probe is still blocked.
func TestRunWatchdog(t *testing.T) {
	sock := harness.NewNotifySocket(t)
	n, l := fromEnv(t, sock, "100000") // WatchdogSec=100ms: a probe every 50ms
	n.statusEvery = 50 * time.Millisecond
	n.stallAfter = 20 * time.Millisecond
	f := &fakeNode{}
	stop := startRun(t, n, f)

	i := 0
	for range 3 {
		i, _ = sock.WaitFor(t, i, hangDetector, "WATCHDOG=1", isPing)
		i++
	}

	f.core.Lock()
	probes := f.probes.Load()
	stalled, m := sock.WaitFor(t, i, hangDetector, "STATUS= to say the core does not answer", statusMatches(func(s string) bool { return strings.Contains(s, stallNote) }))
	st, _ := m.Get("STATUS")
	// The window in which a ping would be wrong: six more polls of the
	// summary, so at least five probe intervals.
	last := pollNumber(st) + 6
	end, _ := sock.WaitFor(t, stalled, hangDetector, fmt.Sprintf("poll %d", last), statusMatches(func(s string) bool { return pollNumber(s) >= last }))
	msgs := sock.Messages()
	for _, m := range msgs[stalled : end+1] {
		st, _ := m.Get("STATUS")
		if isPing(m) || !strings.Contains(st, stallNote) {
			t.Fatalf("while the core was wedged: %s\n%s", m, sock.Dump(stalled))
		}
	}
	if got := f.probes.Load(); got > probes+1 {
		t.Fatalf("%d probes while the first was blocked", got-probes-1)
	}

	f.core.Unlock()
	answered, _ := sock.WaitFor(t, end, hangDetector, "STATUS= without the note", statusMatches(func(s string) bool { return !strings.Contains(s, stallNote) }))
	for _, m := range sock.Messages()[stalled:answered] {
		if isPing(m) {
			t.Fatalf("a ping before the core answered: %s\n%s", m, sock.Dump(stalled))
		}
	}
	i, _ = sock.WaitFor(t, answered, hangDetector, "WATCHDOG=1 once the core answers", isPing)
	sock.WaitFor(t, i+1, hangDetector, "the next WATCHDOG=1", isPing)
	logged := strings.Join(l.all(), "\n")
	if !strings.Contains(logged, "watchdog: "+stallNote) || !strings.Contains(logged, "pings resume") {
		t.Fatalf("log: %s", logged)
	}
	if f.overlaps.Load() != 0 {
		t.Fatalf("%d probes overlapped", f.overlaps.Load())
	}

	// Stopping while wedged: Run returns, the blocked probe is left.
	f.core.Lock()
	sock.WaitFor(t, answered, hangDetector, "the note again", statusMatches(func(s string) bool { return strings.Contains(s, stallNote) }))
	stop()
	f.core.Unlock()
}

// A Summary that waits (for a wedged core) does not hold up Run's return.
func TestRunReturnsWhileSummaryWaits(t *testing.T) {
	sock := harness.NewNotifySocket(t)
	n, _ := fromEnv(t, sock, "")
	src := &blockingSummary{called: make(chan struct{})}
	stop := startRun(t, n, src)
	<-src.called
	stop()
}

type blockingSummary struct {
	called chan struct{}
	once   sync.Once
}

func (b *blockingSummary) Summary(ctx context.Context) string {
	b.once.Do(func() { close(b.called) })
	select {} // never returns, whatever ctx says
}

func (b *blockingSummary) Alive() {}

// Without a service manager, Run returns at once and calls nothing.
func TestRunWithoutSystemd(t *testing.T) {
	t.Setenv(EnvNotifySocket, "")
	os.Unsetenv(EnvNotifySocket)
	n, _ := fromEnv(t, nil, "1000000")
	f := &fakeNode{}
	done := make(chan struct{})
	go func() {
		n.Run(context.Background(), f)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(hangDetector):
		t.Fatal("Run without NOTIFY_SOCKET did not return")
	}
	if f.polls.Load() != 0 || f.probes.Load() != 0 {
		t.Fatalf("%d polls, %d probes", f.polls.Load(), f.probes.Load())
	}
}
