package systemd

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
	"golang.org/x/sys/unix"
)

// hangDetector bounds every wait of these tests: what they wait for takes
// milliseconds. Not a timing assertion.
const hangDetector = time.Minute

// logs collects what a Notifier logs.
type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
}

func (l *logs) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// fromEnv sets the environment systemd would set (WATCHDOG_USEC only if
// usec is not empty) and reads it.
func fromEnv(t *testing.T, sock *harness.NotifySocket, usec string) (*Notifier, *logs) {
	t.Helper()
	if sock != nil {
		t.Setenv(EnvNotifySocket, sock.Path)
	}
	if usec != "" {
		t.Setenv(EnvWatchdogUsec, usec)
	}
	l := &logs{}
	n, err := FromEnvironment(l.add)
	if err != nil {
		t.Fatal(err)
	}
	return n, l
}

// A Notifier reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID once and
// removes them: neither this process nor a child it starts afterwards
// sees them.
func TestFromEnvironmentRemovesTheVariables(t *testing.T) {
	sock := harness.NewNotifySocket(t)
	t.Setenv(EnvWatchdogPID, strconv.Itoa(os.Getpid()))
	n, _ := fromEnv(t, sock, "500000")
	if !n.Enabled() || n.Watchdog() != 500*time.Millisecond {
		t.Fatalf("enabled %v, watchdog %s", n.Enabled(), n.Watchdog())
	}
	for _, k := range []string{EnvNotifySocket, EnvWatchdogUsec, EnvWatchdogPID} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s=%q is still in the environment", k, v)
		}
	}
	out, err := exec.Command("/bin/sh", "-c", "env").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		for _, k := range []string{EnvNotifySocket, EnvWatchdogUsec, EnvWatchdogPID} {
			if strings.HasPrefix(l, k+"=") {
				t.Errorf("a child process sees %s", l)
			}
		}
	}
	// The socket still works: the address was kept.
	if err := n.Ready(); err != nil {
		t.Fatal(err)
	}
	sock.WaitFor(t, 0, hangDetector, "READY=1", func(m harness.NotifyMessage) bool { return m.Has("READY", "1") })
}

// The watchdog is this process's only when WATCHDOG_PID is this process
// (or unset), and only with a socket to ping; a malformed WATCHDOG_USEC
// or a NOTIFY_SOCKET that is not a unix socket is said, and ignored.
func TestFromEnvironmentWatchdogRules(t *testing.T) {
	sock := harness.NewNotifySocket(t)
	for _, tc := range []struct {
		name          string
		socket, usec  string
		pid           string
		wantEnabled   bool
		wantWatchdog  time.Duration
		wantErrSubstr string
	}{
		{name: "no socket", usec: "1000000"},
		{name: "socket, no watchdog", socket: sock.Path, wantEnabled: true},
		{name: "watchdog, no PID", socket: sock.Path, usec: "3000000", wantEnabled: true, wantWatchdog: 3 * time.Second},
		{name: "watchdog of this process", socket: sock.Path, usec: "3000000", pid: strconv.Itoa(os.Getpid()), wantEnabled: true, wantWatchdog: 3 * time.Second},
		{name: "watchdog of another process", socket: sock.Path, usec: "3000000", pid: strconv.Itoa(os.Getpid() + 1), wantEnabled: true},
		{name: "malformed WATCHDOG_USEC", socket: sock.Path, usec: "3s", wantEnabled: true, wantErrSubstr: "running without the watchdog"},
		{name: "abstract socket", socket: "@gsa-test-abstract", wantEnabled: true},
		{name: "vsock", socket: "vsock:2:1234", wantErrSubstr: "is not a unix socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range map[string]string{EnvNotifySocket: tc.socket, EnvWatchdogUsec: tc.usec, EnvWatchdogPID: tc.pid} {
				if v != "" {
					t.Setenv(k, v)
				} else {
					t.Setenv(k, "")
					os.Unsetenv(k)
				}
			}
			n, err := FromEnvironment(nil)
			if tc.wantErrSubstr == "" && err != nil || tc.wantErrSubstr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErrSubstr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErrSubstr)
			}
			if n.Enabled() != tc.wantEnabled || n.Watchdog() != tc.wantWatchdog {
				t.Fatalf("enabled %v watchdog %s, want %v %s", n.Enabled(), n.Watchdog(), tc.wantEnabled, tc.wantWatchdog)
			}
			for _, k := range []string{EnvNotifySocket, EnvWatchdogUsec, EnvWatchdogPID} {
				if _, ok := os.LookupEnv(k); ok {
					t.Errorf("%s is still set", k)
				}
			}
		})
	}
}

// Without NOTIFY_SOCKET every call does nothing and says nothing.
func TestNotifierWithoutSystemd(t *testing.T) {
	t.Setenv(EnvNotifySocket, "")
	os.Unsetenv(EnvNotifySocket)
	n, l := fromEnv(t, nil, "")
	for name, f := range map[string]func() error{
		"Ready": n.Ready, "Reloading": n.Reloading,
		"Reloaded": func() error { return n.Reloaded("x") }, "Stopping": func() error { return n.Stopping("") },
	} {
		if err := f(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if got := l.all(); len(got) != 0 {
		t.Fatalf("logged %q", got)
	}
}

// The messages of a node's life, in order, each one datagram: READY=1 with
// the status; RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, as systemd
// 253 wants it) then READY=1; a refused reload says so in STATUS= until a
// reload succeeds; STOPPING=1; nothing but pings after it.
func TestNotifierMessages(t *testing.T) {
	sock := harness.NewNotifySocket(t)
	n, _ := fromEnv(t, sock, "")
	n.setSummary("sealed: waiting for Shamir shares (0 of 3 submitted)")
	at, _ := sock.WaitFor(t, 0, hangDetector, "the first STATUS=", func(m harness.NotifyMessage) bool { _, ok := m.Get("STATUS"); return ok })

	if err := n.Ready(); err != nil {
		t.Fatal(err)
	}
	i, m := sock.WaitFor(t, at+1, hangDetector, "READY=1", func(m harness.NotifyMessage) bool { return m.Has("READY", "1") })
	if !m.Has("STATUS", "sealed: waiting for Shamir shares (0 of 3 submitted)") || m.PID != os.Getpid() {
		t.Fatalf("READY message: %s", m)
	}

	var before unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &before); err != nil {
		t.Fatal(err)
	}
	if err := n.Reloading(); err != nil {
		t.Fatal(err)
	}
	var after unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &after)
	i, m = sock.WaitFor(t, i+1, hangDetector, "RELOADING=1", func(m harness.NotifyMessage) bool { _, ok := m.Get("RELOADING"); return ok })
	mono, _ := m.Get("MONOTONIC_USEC")
	usec, err := strconv.ParseInt(mono, 10, 64)
	if !m.Has("RELOADING", "1") || err != nil || usec < before.Nano()/1000 || usec > after.Nano()/1000 || !m.Has("STATUS", "reloading the configuration") {
		t.Fatalf("RELOADING message: %s (CLOCK_MONOTONIC %d..%d us)", m, before.Nano()/1000, after.Nano()/1000)
	}
	n.setSummary("active") // during the reload: kept for READY, not sent
	if err := n.Reloaded("config file /etc/x.hcl has 1 problem(s) (see the journal)"); err != nil {
		t.Fatal(err)
	}
	i, m = sock.WaitFor(t, i+1, hangDetector, "READY=1 after the reload", func(m harness.NotifyMessage) bool { return m.Has("READY", "1") })
	if want := "active; reload refused, running on the previous configuration: config file /etc/x.hcl has 1 problem(s) (see the journal)"; !m.Has("STATUS", want) {
		t.Fatalf("READY after a refused reload: %s", m)
	}
	n.setSummary("standby, active node gitlab-2:8200")
	i, m = sock.WaitFor(t, i+1, hangDetector, "the new status", func(m harness.NotifyMessage) bool { _, ok := m.Get("STATUS"); return ok })
	if !m.Has("STATUS", "standby, active node gitlab-2:8200; reload refused, running on the previous configuration: config file /etc/x.hcl has 1 problem(s) (see the journal)") {
		t.Fatalf("the refusal left STATUS=: %s", m)
	}
	n.Reloading()
	n.Reloaded("")
	i, m = sock.WaitFor(t, i+1, hangDetector, "READY=1 after a good reload", func(m harness.NotifyMessage) bool { return m.Has("READY", "1") })
	if !m.Has("STATUS", "standby, active node gitlab-2:8200") {
		t.Fatalf("READY after a good reload: %s", m)
	}

	if err := n.Stopping("SIGTERM"); err != nil {
		t.Fatal(err)
	}
	i, m = sock.WaitFor(t, i+1, hangDetector, "STOPPING=1", func(m harness.NotifyMessage) bool { _, ok := m.Get("STOPPING"); return ok })
	if !m.Has("STOPPING", "1") || !m.Has("STATUS", "stopping: SIGTERM") {
		t.Fatalf("STOPPING message: %s", m)
	}
	n.Ready()
	n.Reloading()
	n.Reloaded("")
	n.setSummary("active")
	n.ping()
	_, m = sock.WaitFor(t, i+1, hangDetector, "the next message", func(harness.NotifyMessage) bool { return true })
	if len(m.Lines) != 1 || !m.Has("WATCHDOG", "1") {
		t.Fatalf("after STOPPING=1: %s", m)
	}
}

// A failed send is logged once, and its recovery once.
func TestNotifierSendFailures(t *testing.T) {
	sock := harness.NewNotifySocket(t)
	n, l := fromEnv(t, sock, "")
	n.setSummary("active")
	sock.WaitFor(t, 0, hangDetector, "STATUS=active", func(m harness.NotifyMessage) bool { return m.Has("STATUS", "active") })

	n.socket.Name += ".gone"
	for range 3 {
		if err := n.Ready(); err == nil {
			t.Fatal("a send to no socket succeeded")
		}
	}
	n.socket.Name = strings.TrimSuffix(n.socket.Name, ".gone")
	if err := n.Ready(); err != nil {
		t.Fatal(err)
	}
	got := l.all()
	if len(got) != 2 || !strings.Contains(got[0], "cannot notify systemd at "+sock.Path+".gone") || got[1] != "notifying systemd works again" {
		t.Fatalf("logged %q", got)
	}
}

func TestCleanStatus(t *testing.T) {
	long := strings.Repeat("é", MaxStatus) // two bytes each
	for _, tc := range []struct{ in, want string }{
		{"active", "active"},
		{"sealed:\n  - a\n  - b\r\n", "sealed: - a - b"},
		{"x\nREADY=1\nSTOPPING=1", "x READY=1 STOPPING=1"},
		{"tab\there\x00nul\x7f", "tab here nul"},
		{"bad \xff byte", "bad byte"},
	} {
		if got := CleanStatus(tc.in); got != tc.want {
			t.Errorf("CleanStatus(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	got := CleanStatus(long)
	if len(got) > MaxStatus || !strings.HasSuffix(got, "...") || !strings.HasPrefix(long, strings.TrimSuffix(got, "...")) {
		t.Fatalf("cut to %d bytes: %q", len(got), got)
	}
	if s := CleanStatus(strings.Repeat("a", MaxStatus)); len(s) != MaxStatus || strings.HasSuffix(s, "...") {
		t.Fatalf("a status of exactly MaxStatus bytes was changed: %d", len(s))
	}
}
