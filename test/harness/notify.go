package harness

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// NotifySocket plays systemd's end of the notify protocol (sd_notify(3)):
// a unixgram socket in a temp dir that records every message with the
// PID the kernel says sent it (SCM_CREDENTIALS, which systemd checks for
// NotifyAccess=main). Give a process Env, then wait for its messages with
// WaitFor.
type NotifySocket struct {
	Path string
	conn *net.UnixConn

	mu      sync.Mutex
	msgs    []NotifyMessage
	changed chan struct{} // closed (and replaced) at each message
	err     error         // why reading stopped, other than Close
	done    chan struct{}
}

// NotifyMessage is one datagram: its VARIABLE=value lines in order.
type NotifyMessage struct {
	PID   int
	Lines []string
}

// Get is the value of the variable key, if the message sets it.
func (m NotifyMessage) Get(key string) (string, bool) {
	for _, l := range m.Lines {
		if k, v, ok := strings.Cut(l, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// Has reports whether the message has the line key=value.
func (m NotifyMessage) Has(key, value string) bool {
	v, ok := m.Get(key)
	return ok && v == value
}

func (m NotifyMessage) String() string {
	return fmt.Sprintf("[pid %d] %s", m.PID, strings.Join(m.Lines, " | "))
}

// NewNotifySocket listens on a new socket; it is closed when the test
// ends.
func NewNotifySocket(t testing.TB) *NotifySocket {
	t.Helper()
	// Not t.TempDir: a socket's path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "gsa-notify-")
	if err != nil {
		t.Fatal(err)
	}
	s := &NotifySocket{Path: filepath.Join(dir, "notify.sock"), changed: make(chan struct{}), done: make(chan struct{})}
	s.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.Path, Net: "unixgram"})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	raw, err := s.conn.SyscallConn()
	if err == nil {
		cerr := raw.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
		})
		if cerr != nil {
			err = cerr
		}
	}
	if err != nil {
		s.conn.Close()
		os.RemoveAll(dir)
		t.Fatalf("SO_PASSCRED: %v", err)
	}
	go s.read()
	t.Cleanup(func() {
		s.conn.Close()
		<-s.done
		os.RemoveAll(dir)
	})
	return s
}

// Env is the environment a process needs to notify this socket.
func (s *NotifySocket) Env() []string { return []string{"NOTIFY_SOCKET=" + s.Path} }

func (s *NotifySocket) read() {
	defer close(s.done)
	buf := make([]byte, 64<<10)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
	for {
		n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
			}
			return
		}
		m := NotifyMessage{PID: -1}
		if cmsgs, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil && len(cmsgs) > 0 {
			if cred, err := syscall.ParseUnixCredentials(&cmsgs[0]); err == nil {
				m.PID = int(cred.Pid)
			}
		}
		for _, l := range strings.Split(string(buf[:n]), "\n") {
			if l != "" {
				m.Lines = append(m.Lines, l)
			}
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
}

// Messages is every message received so far.
func (s *NotifySocket) Messages() []NotifyMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]NotifyMessage(nil), s.msgs...)
}

// WaitFor waits until a message at index from or later matches, and
// returns its index and the message. It fails the test after timeout (a
// hang detector, not a timing assertion), listing what arrived.
func (s *NotifySocket) WaitFor(t testing.TB, from int, timeout time.Duration, what string, match func(NotifyMessage) bool) (int, NotifyMessage) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for i := from; ; {
		s.mu.Lock()
		msgs, changed, err := s.msgs, s.changed, s.err
		s.mu.Unlock()
		for ; i < len(msgs); i++ {
			if match(msgs[i]) {
				return i, msgs[i]
			}
		}
		if err != nil {
			t.Fatalf("notify socket: %v", err)
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("gave up after %s waiting for %s; messages from #%d on:\n%s", timeout, what, from, s.Dump(from))
		}
	}
}

// Dump lists the messages from index from on.
func (s *NotifySocket) Dump(from int) string {
	var b strings.Builder
	for i, m := range s.Messages() {
		if i >= from {
			fmt.Fprintf(&b, "  #%d %s\n", i, m)
		}
	}
	return b.String()
}
