// Package systemd speaks systemd's notify protocol (sd_notify(3)) for a
// node that systemd runs as a Type=notify service: READY=1 once the API
// serves, STATUS= saying what the node is and waits for, WATCHDOG=1 while
// the core answers, RELOADING=1 and READY=1 around a reload, STOPPING=1
// when it stops.
//
// FromEnvironment reads the socket's address and the watchdog's timeout
// once and removes NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the
// process's environment, as k3s does for its embedded servers: nothing the
// node loads or starts afterwards (the OpenBao core, a PKCS#11 library, a
// child process) can notify systemd in the node's name. go-systemd's
// daemon.SdNotify reads NOTIFY_SOCKET at every call, so the Notifier sends
// its messages itself, as SdNotify does: one datagram per message, on a
// socket of its own.
package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Environment variables systemd sets for a Type=notify service.
const (
	EnvNotifySocket = "NOTIFY_SOCKET"
	EnvWatchdogUsec = "WATCHDOG_USEC"
	EnvWatchdogPID  = "WATCHDOG_PID"
)

// StatusInterval is how often Run reads the node's summary; STATUS= is
// sent when it changed.
const StatusInterval = time.Second

// MaxStatus bounds the STATUS= text in bytes; a longer one is cut, with
// "..." at the end. systemd reads at most 4 KiB per message.
const MaxStatus = 400

// sendTimeout bounds one send: a service manager that does not read its
// socket must not hold up the node (least of all its shutdown).
const sendTimeout = 2 * time.Second

// Notifier sends a node's notifications to the service manager. All its
// methods are safe for concurrent use, and do nothing when the process was
// not started with NOTIFY_SOCKET (Enabled is false).
type Notifier struct {
	socket   *net.UnixAddr // nil: nobody to notify
	watchdog time.Duration // from WATCHDOG_USEC; 0: no watchdog for this process
	log      func(string)

	statusEvery time.Duration // StatusInterval; tests shorten it
	stallAfter  time.Duration // maxStallAfter; tests shorten it

	mu       sync.Mutex // serializes sends, so that STATUS= updates arrive in order
	summary  string     // the node's, from Source.Summary
	note     string     // why the last reload was refused, until one succeeds
	stall    string     // the watchdog's probe has not returned since ...
	phase    string     // reloading or stopping: STATUS= says that alone
	stopping bool       // STOPPING=1 was sent: no more READY=1 or STATUS=
	sent     string     // the last STATUS= sent
	failing  bool       // the last send failed (reported once)
}

// FromEnvironment reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID, as
// systemd sets them for a Type=notify service with WatchdogSec=, and
// removes them from the process's environment. The watchdog is enabled
// when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is this process
// (daemon.SdWatchdogEnabled's rule). log receives what the Notifier has
// to say later (a send failed, the core stopped answering); nil discards
// it.
//
// The Notifier is always usable; an error says what in the environment
// was ignored (a malformed WATCHDOG_USEC: no watchdog; a NOTIFY_SOCKET
// that is not a unix socket: no notifications).
func FromEnvironment(log func(string)) (*Notifier, error) {
	if log == nil {
		log = func(string) {}
	}
	n := &Notifier{log: log, statusEvery: StatusInterval, stallAfter: maxStallAfter}
	socket := os.Getenv(EnvNotifySocket)
	errUnset := os.Unsetenv(EnvNotifySocket)
	watchdog, errWatchdog := daemon.SdWatchdogEnabled(true)
	var errs []error
	switch {
	case socket == "":
	case strings.HasPrefix(socket, "/") || strings.HasPrefix(socket, "@"):
		// A path, or a name in the abstract namespace ("@name").
		n.socket = &net.UnixAddr{Name: socket, Net: "unixgram"}
	default:
		errs = append(errs, fmt.Errorf("%s=%q is not a unix socket (a path or @name): not notifying systemd", EnvNotifySocket, socket))
	}
	if errWatchdog != nil {
		errs = append(errs, fmt.Errorf("%w: running without the watchdog", errWatchdog))
	} else if n.socket != nil {
		n.watchdog = watchdog
	}
	if errUnset != nil {
		errs = append(errs, fmt.Errorf("cannot remove %s from the environment: %w", EnvNotifySocket, errUnset))
	}
	return n, errors.Join(errs...)
}

// Enabled reports whether there is a service manager to notify.
func (n *Notifier) Enabled() bool { return n.socket != nil }

// Watchdog is the watchdog's timeout (systemd's WatchdogSec=), or 0 when
// the service manager does not watch this process.
func (n *Notifier) Watchdog() time.Duration { return n.watchdog }

// Ready says that the node serves (READY=1), with its status.
func (n *Notifier) Ready() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopping {
		return nil
	}
	return n.sendStatusLocked(true, "READY=1")
}

// Reloading says that a reload of the configuration begins (RELOADING=1
// with MONOTONIC_USEC, which systemd 253 and later want). Reloaded ends it.
func (n *Notifier) Reloading() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopping {
		return nil
	}
	n.phase = "reloading the configuration"
	lines := []string{"RELOADING=1"}
	if mono := strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"); mono != "" {
		lines = append(lines, mono)
	}
	return n.sendStatusLocked(true, lines...)
}

// Reloaded ends a reload (READY=1). refusal, if not empty, says why the
// new configuration was refused; STATUS= says so, after the node's
// status, until a later reload succeeds.
func (n *Notifier) Reloaded(refusal string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopping {
		return nil
	}
	n.phase, n.note = "", ""
	if refusal != "" {
		n.note = "reload refused, running on the previous configuration: " + refusal
	}
	return n.sendStatusLocked(true, "READY=1")
}

// Stopping says that the node begins to stop (STOPPING=1); why, if not
// empty, goes into STATUS=. Nothing but watchdog pings is sent after it.
func (n *Notifier) Stopping(why string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopping {
		return nil
	}
	n.phase = "stopping"
	if why != "" {
		n.phase += ": " + why
	}
	err := n.sendStatusLocked(true, "STOPPING=1")
	n.stopping = true
	return err
}

// setSummary records the node's summary and sends STATUS= if it changed.
func (n *Notifier) setSummary(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.summary = s
	if !n.stopping {
		n.sendStatusLocked(false)
	}
}

// setStall records (or, with "", clears) the watchdog's note and sends
// STATUS= if it changed.
func (n *Notifier) setStall(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stall = s
	if !n.stopping {
		n.sendStatusLocked(false)
	}
}

// ping sends WATCHDOG=1.
func (n *Notifier) ping() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sendLocked("WATCHDOG=1")
}

// statusLocked is the STATUS= text now.
func (n *Notifier) statusLocked() string {
	if n.phase != "" {
		return CleanStatus(n.phase)
	}
	var parts []string
	for _, p := range []string{n.summary, n.note, n.stall} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return CleanStatus(strings.Join(parts, "; "))
}

// sendStatusLocked sends lines with STATUS= after them; without always,
// only if there are lines or STATUS= changed.
func (n *Notifier) sendStatusLocked(always bool, lines ...string) error {
	st := n.statusLocked()
	if st != n.sent || always {
		if st != "" || n.sent != "" {
			lines = append(lines, "STATUS="+st)
		}
	}
	if len(lines) == 0 {
		return nil
	}
	err := n.sendLocked(lines...)
	if err == nil {
		n.sent = st
	}
	return err
}

// sendLocked sends one message: its lines, each a VARIABLE=value, in one
// datagram.
func (n *Notifier) sendLocked(lines ...string) error {
	if n.socket == nil {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.socket)
	if err == nil {
		conn.SetWriteDeadline(time.Now().Add(sendTimeout))
		_, err = conn.Write([]byte(strings.Join(lines, "\n") + "\n"))
		conn.Close()
	}
	switch {
	case err != nil && !n.failing:
		n.failing = true
		n.log(fmt.Sprintf("cannot notify systemd at %s: %v (said again once it works)", n.socket.Name, err))
	case err == nil && n.failing:
		n.failing = false
		n.log("notifying systemd works again")
	}
	return err
}

// CleanStatus makes s fit on STATUS=: one line (control characters become
// spaces, so that no text can add a VARIABLE= of its own), at most
// MaxStatus bytes (cut at a character, with "..." at the end).
func CleanStatus(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= MaxStatus {
		return s
	}
	cut := MaxStatus - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.TrimRight(s[:cut], " ") + "..."
}
