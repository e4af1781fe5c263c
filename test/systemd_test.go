package test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// systemdEnv are the variables systemd's notify protocol sets; none may
// reach what the node loads or starts.
var systemdEnv = []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}

// asSystemd writes a wrapper that starts the binary as systemd starts a
// service's main process: with WATCHDOG_PID set to the process's own PID
// (exec keeps the shell's).
func asSystemd(t *testing.T, bin, dir string) string {
	t.Helper()
	w := filepath.Join(dir, "as-systemd")
	if err := os.WriteFile(w, []byte("#!/bin/sh\nWATCHDOG_PID=$$ exec "+strconv.Quote(bin)+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return w
}

// notifyNode starts a node the way systemd runs a Type=notify unit with
// WatchdogSec=1s: NOTIFY_SOCKET, WATCHDOG_USEC=1000000 and its own
// WATCHDOG_PID.
func notifyNode(t *testing.T, tr *harness.Transcript, wrapper, cfg, addr string, env ...string) (*harness.Node, *harness.NotifySocket) {
	t.Helper()
	sock := harness.NewNotifySocket(t)
	env = append(append(sock.Env(), "WATCHDOG_USEC=1000000"), env...)
	return harness.StartNode(t, tr, wrapper, cfg, addr, env...), sock
}

func isReady(m harness.NotifyMessage) bool { return m.Has("READY", "1") }
func isPing(m harness.NotifyMessage) bool  { return m.Has("WATCHDOG", "1") }

func statusIs(pred func(string) bool) func(harness.NotifyMessage) bool {
	return func(m harness.NotifyMessage) bool {
		st, ok := m.Get("STATUS")
		return ok && pred(st)
	}
}

func notifyStatus(m harness.NotifyMessage) string {
	st, _ := m.Get("STATUS")
	return st
}

const stallNote = "the core has not answered since"

// allFrom checks that every message came from the node's main process:
// with NotifyAccess=main systemd ignores any other sender.
func allFrom(t *testing.T, sock *harness.NotifySocket, n *harness.Node) {
	t.Helper()
	for i, m := range sock.Messages() {
		if m.PID != n.PID() {
			t.Fatalf("message #%d from PID %d, not the node's %d: %s", i, m.PID, n.PID(), m)
		}
	}
}

// A node under systemd's notify protocol, with an HSM (a real SoftHSM2
// token, loaded through the harness's shim, which reports what the
// library sees in its environment) and Shamir shares: READY=1 once the API
// serves, uninitialized; STATUS= follows it to active after init; pings
// arrive; SIGHUP gives RELOADING=1 (with MONOTONIC_USEC) then READY=1, and
// a refused reload says so in STATUS= until a good one; SIGTERM gives
// STOPPING=1. With the token gone, it says it is sealed, why the HSM does
// not unseal it and how many shares are in, up to active. Every message
// comes from the node's PID; the PKCS#11 library loaded after start finds
// none of NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID in its environment.
func TestSystemdNotify(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	wrapper := asSystemd(t, bin, dir)
	hsm := harness.NewSoftHSM(t, "gitlab-secrets")
	hsm.GenerateAESKey(t, "kek")
	shim := harness.NewHangingHSM(t, hsm) // never made to hang here
	section := strings.Replace(hsmSeal(t, hsm, dir, "kek", true), hsm.Library, shim.Library, 1)
	cfg, addr := nodeConfig(t, dir, "node-1", "127.0.0.1", "", section)
	env := append(shim.Env(), shim.EnvReport(append(systemdEnv, "SOFTHSM2_CONF")...))

	n, sock := notifyNode(t, tr, wrapper, cfg, addr, env...)
	i, _ := sock.WaitFor(t, 0, hangDetector, "READY=1", isReady)
	// READY=1 means the API answers already.
	if _, code := status(t, tr, bin, addr); code != 2 {
		t.Fatalf("status right after READY=1: exit %d", code)
	}
	sock.WaitFor(t, 0, hangDetector, "STATUS= uninitialized", statusIs(func(s string) bool {
		return strings.HasPrefix(s, "uninitialized: waiting for `gitlab-secrets-appliance init`")
	}))
	p, _ := sock.WaitFor(t, i, hangDetector, "WATCHDOG=1", isPing)
	sock.WaitFor(t, p+1, hangDetector, "another WATCHDOG=1", isPing)

	res := initCluster(t, bin, addr)
	i, _ = sock.WaitFor(t, i, hangDetector, "STATUS=active", statusIs(func(s string) bool { return s == "active" }))

	// A good reload, a refused one, a good one again.
	reload := func(from int) (int, harness.NotifyMessage) {
		t.Helper()
		n.Notify(syscall.SIGHUP)
		r, m := sock.WaitFor(t, from, hangDetector, "RELOADING=1", func(m harness.NotifyMessage) bool { _, ok := m.Get("RELOADING"); return ok })
		mono, _ := m.Get("MONOTONIC_USEC")
		if usec, err := strconv.ParseUint(mono, 10, 64); !m.Has("RELOADING", "1") || err != nil || usec == 0 {
			t.Fatalf("RELOADING message: %s", m)
		}
		return sock.WaitFor(t, r+1, hangDetector, "READY=1 after the reload", isReady)
	}
	i, m := reload(i)
	if st := notifyStatus(m); !strings.HasPrefix(st, "active") || strings.Contains(st, "refused") {
		t.Fatalf("READY after a good reload: %s", m)
	}
	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(cfg, append(append([]byte{}, good...), "colour = \"red\"\n"...), 0o600)
	i, m = reload(i)
	want := fmt.Sprintf("reload refused, running on the previous configuration: config file %s has 1 problem(s); the log lists them", cfg)
	if st := notifyStatus(m); !strings.HasPrefix(st, "active; "+want) {
		t.Fatalf("READY after a refused reload: %s", m)
	}
	// The log line and the notify message travel on different pipes.
	harness.Eventually(t, hangDetector, "the log lists the problem (colour: unknown key)", func() bool {
		return strings.Contains(n.Output.String(), "colour: unknown key")
	})
	os.WriteFile(cfg, good, 0o600)
	i, m = reload(i)
	if st := notifyStatus(m); !strings.HasPrefix(st, "active") || strings.Contains(st, "refused") {
		t.Fatalf("READY after the config was fixed: %s", m)
	}

	if code := n.Signal(t, syscall.SIGTERM, hangDetector); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	_, m = sock.WaitFor(t, i, hangDetector, "STOPPING=1", func(m harness.NotifyMessage) bool { _, ok := m.Get("STOPPING"); return ok })
	if !m.Has("STOPPING", "1") || notifyStatus(m) != "stopping: terminated signal received" {
		t.Fatalf("STOPPING message: %s", m)
	}
	allFrom(t, sock, n)
	if shim.Count("env", "SOFTHSM2_CONF") == 0 {
		t.Fatal("the shim did not report its environment: the check below would prove nothing")
	}
	for _, v := range systemdEnv {
		if shim.Count("env", v) != 0 {
			t.Errorf("the PKCS#11 library found %s in its environment", v)
		}
	}
	transcript := sock.Dump(0)

	// The token is gone: sealed, why, and the shares as they come in.
	hsm.RemoveToken(t)
	n, sock = notifyNode(t, tr, wrapper, cfg, addr, env...)
	i, _ = sock.WaitFor(t, 0, hangDetector, "READY=1", isReady)
	sealedWith := func(shares string) func(harness.NotifyMessage) bool {
		return statusIs(func(s string) bool {
			return strings.HasPrefix(s, "sealed: waiting for Shamir shares ("+shares+" submitted); HSM: ") && strings.Contains(s, "token was not found")
		})
	}
	i, m = sock.WaitFor(t, 0, hangDetector, "STATUS= sealed, the HSM's error, no shares", sealedWith("0 of 2"))
	t.Logf("STATUS=%s", notifyStatus(m))
	submitShares(t, tr, bin, addr, res.Shares[0])
	i, _ = sock.WaitFor(t, i, hangDetector, "STATUS= with one share in", sealedWith("1 of 2"))
	submitShares(t, tr, bin, addr, res.Shares[2])
	i, m = sock.WaitFor(t, i, hangDetector, "STATUS= active", statusIs(func(s string) bool { return strings.HasPrefix(s, "active; HSM: ") }))
	if !strings.Contains(notifyStatus(m), "token was not found") {
		t.Fatalf("active without the HSM: %s", m)
	}
	p, _ = sock.WaitFor(t, i, hangDetector, "WATCHDOG=1 once active", isPing)
	sock.WaitFor(t, p+1, hangDetector, "another WATCHDOG=1", isPing)
	if code := n.Signal(t, syscall.SIGTERM, hangDetector); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	sock.WaitFor(t, i, hangDetector, "STOPPING=1", func(m harness.NotifyMessage) bool { return m.Has("STOPPING", "1") })
	allFrom(t, sock, n)
	scanForSecrets(t, tr.String()+transcript+sock.Dump(0), append([]string{hsm.PIN, res.RootToken}, res.Shares...))
}

// The watchdog under a real wedge: the node's file audit device writes to
// a FIFO nobody reads (as a hung NFS mount or a stuck disk would hold its
// writes), so the unseal at boot, which opens the audit devices, holds the
// OpenBao core's state lock while the open waits. READY=1 comes all the
// same (the API serves, and takes shares); then the pings stop: STATUS=
// says the core does not answer, and no WATCHDOG=1 comes while the lock
// is held. Once a reader opens the FIFO, the unseal lets the lock go,
// pings resume, and the node goes active. (A hung HSM no longer wedges the
// core: the seal asks the token before OpenBao takes its lock.)
func TestSystemdWatchdogStopsWhileTheCoreIsWedged(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	wrapper := asSystemd(t, bin, dir)
	hsm := harness.NewSoftHSM(t, "gitlab-secrets")
	hsm.GenerateAESKey(t, "kek")
	section := hsmSeal(t, hsm, dir, "kek", true)
	cfg, addr := nodeConfig(t, dir, "node-1", "127.0.0.1", "", section)

	n := harness.StartNode(t, tr, bin, cfg, addr, hsm.Env()...)
	n.WaitServing(t, tr)
	res := initCluster(t, bin, addr)
	waitState(t, tr, bin, addr, "active")
	if code := n.Signal(t, syscall.SIGTERM, hangDetector); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}

	fifo := filepath.Join(dir, "audit.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	src, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(src, fmt.Sprintf("audit \"file\" {\n  options = { file_path = %q }\n}\n", fifo)...), 0o600)
	n, sock := notifyNode(t, tr, wrapper, cfg, addr, hsm.Env()...)
	sock.WaitFor(t, 0, hangDetector, "READY=1", isReady)
	stalled, m := sock.WaitFor(t, 0, hangDetector, "STATUS= to say the core does not answer", statusIs(func(s string) bool { return strings.Contains(s, stallNote) }))
	t.Logf("STATUS=%s", notifyStatus(m))
	// The stall note came after a ping interval without an answer; now
	// the reader comes.
	reader := make(chan struct{})
	go func() {
		defer close(reader)
		f, err := os.Open(fifo)
		if err == nil {
			io.Copy(io.Discard, f)
			f.Close()
		}
	}()
	answered, _ := sock.WaitFor(t, stalled, hangDetector, "STATUS= without the note", statusIs(func(s string) bool { return !strings.Contains(s, stallNote) }))
	for _, m := range sock.Messages()[stalled:answered] {
		if isPing(m) {
			t.Fatalf("WATCHDOG=1 while the core was wedged:\n%s", sock.Dump(stalled))
		}
	}
	p, _ := sock.WaitFor(t, answered, hangDetector, "WATCHDOG=1 once the core answers", isPing)
	sock.WaitFor(t, p+1, hangDetector, "another WATCHDOG=1", isPing)
	sock.WaitFor(t, answered, hangDetector, "STATUS=active", statusIs(func(s string) bool { return s == "active" }))
	harness.Eventually(t, hangDetector, "the log to say the watchdog waited", func() bool {
		out := n.Output.String()
		return strings.Contains(out, "systemd: watchdog: "+stallNote) && strings.Contains(out, "pings resume")
	})
	if code := n.Signal(t, syscall.SIGTERM, hangDetector); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	allFrom(t, sock, n)
	scanForSecrets(t, tr.String()+sock.Dump(0), append([]string{hsm.PIN, res.RootToken}, res.Shares...))
}
