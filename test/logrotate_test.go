package test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// openFiles lists the files process pid holds open (/proc/<pid>/fd).
func openFiles(t *testing.T, pid int) []string {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, fd := range fds {
		if p, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func holds(files []string, path string) bool {
	for _, f := range files {
		if f == path || f == path+" (deleted)" {
			return true
		}
	}
	return false
}

// auditStream sends a steady stream of requests to an active node, each
// with its own path (which the audit log records in clear), and keeps
// which of them were answered.
type auditStream struct {
	mu       sync.Mutex
	answered []int
	stop     chan struct{}
	done     chan struct{}
}

func startAuditStream(t *testing.T, addr, token string) *auditStream {
	c := apiClient(t, addr, token)
	s := &auditStream{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for i := 0; ; i++ {
			select {
			case <-s.stop:
				return
			default:
			}
			if _, err := c.Logical().Read(fmt.Sprintf("cubbyhole/rotation-%d", i)); err == nil {
				s.mu.Lock()
				s.answered = append(s.answered, i)
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(s.end)
	return s
}

func (s *auditStream) count() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.answered) }

// waitMore waits until more requests were answered.
func (s *auditStream) waitMore(t *testing.T, what string, more int) {
	t.Helper()
	from := s.count()
	harness.Eventually(t, time.Minute, what, func() bool { return s.count() >= from+more })
}

func (s *auditStream) end() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// checkNoneLost checks that every request answered has its request and
// its response entry in the audit files' text, read after s.end.
func (s *auditStream) checkNoneLost(t *testing.T, text string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	lost := 0
	for _, i := range s.answered {
		p := fmt.Sprintf("\"cubbyhole/rotation-%d\"", i)
		if n := strings.Count(text, p); n < 2 {
			lost++
			if lost <= 5 {
				t.Errorf("request %d was answered, but its entries are not in the audit files (%d of 2)", i, n)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d answered requests lost in rotation", lost, len(s.answered))
	}
	t.Logf("%d requests across the rotations, none lost", len(s.answered))
}

// readAudit is a rotated or current audit file's text (gunzipped).
func readAudit(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(string(b), "cubbyhole/rotation-") {
		t.Errorf("%s has no request of the stream", path)
	}
	return string(b)
}

// waitReopened waits until the node writes a new audit.log and no longer
// holds moved open.
func waitReopened(t *testing.T, n *harness.Node, audit, moved string) {
	t.Helper()
	harness.Eventually(t, time.Minute, "a new audit.log with "+filepath.Base(moved)+" moved aside", func() bool {
		b, _ := os.ReadFile(audit)
		return strings.Contains(string(b), "cubbyhole/rotation-")
	})
	harness.Eventually(t, time.Minute, "the node to close "+moved, func() bool {
		return !holds(openFiles(t, n.PID()), moved)
	})
	if !holds(openFiles(t, n.PID()), audit) {
		t.Fatalf("the node does not hold the new %s open: %v", audit, openFiles(t, n.PID()))
	}
	if st, err := os.Stat(audit); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the new audit.log: %v, %v", st, err)
	}
}

// The file audit log rotates as logrotate rotates it without copytruncate:
// audit.log is moved aside while requests keep coming, SIGHUP, and the
// node closes the moved file and writes a new audit.log; every request
// answered is in one of the files. A SIGHUP whose config file is refused
// reopens the audit file all the same.
func TestSIGHUPRotatesAuditLog(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	cfg, addr, dir := singleNode(t)
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	res := initCluster(t, bin, addr, "--shares", "1", "--threshold", "1")
	waitState(t, tr, bin, addr, "active")
	audit := filepath.Join(dir, "audit.log")
	s := startAuditStream(t, addr, res.RootToken)

	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		name   string
		config []byte // the config file at the SIGHUP
	}{
		{"audit.log.1", good},
		{"audit.log.2", append(append([]byte{}, good...), "colour = \"red\"\n"...)},
	} {
		s.waitMore(t, "requests before the rotation to "+r.name, 20)
		moved := filepath.Join(dir, r.name)
		if err := os.Rename(audit, moved); err != nil {
			t.Fatal(err)
		}
		s.waitMore(t, "requests after the move", 20)
		if !holds(openFiles(t, n.PID()), moved) {
			t.Fatalf("before SIGHUP the node does not hold %s open: %v", moved, openFiles(t, n.PID()))
		}
		os.WriteFile(cfg, r.config, 0o600)
		n.Notify(syscall.SIGHUP)
		waitReopened(t, n, audit, moved)
	}
	if !strings.Contains(n.Output.String(), "colour: unknown key") {
		t.Fatalf("the second SIGHUP's config was not refused:\n%s", n.Output.String())
	}
	s.waitMore(t, "requests after the rotations", 20)
	s.end() // before the files are read
	var text string
	for _, f := range []string{"audit.log.1", "audit.log.2", "audit.log"} {
		text += readAudit(t, filepath.Join(dir, f))
	}
	s.checkNoneLost(t, text)
}

// The packages' logrotate file (packaging/nfpm/logrotate), run by the real
// logrotate against a running node, twice: audit.log is moved aside (no
// copytruncate), its postrotate reloads the node (here: the SIGHUP that
// `systemctl reload` sends through ExecReload), the node creates the new
// audit.log (0600), the newest old file stays uncompressed (the node may
// still be writing to it until it reopens), the one before is compressed;
// no entry is lost.
func TestPackagedLogrotateRotatesAuditLog(t *testing.T) {
	logrotate, err := exec.LookPath("logrotate")
	if err != nil {
		if logrotate = "/usr/sbin/logrotate"; !isExecutable(logrotate) {
			t.Skip("logrotate is not installed: scripts/test-deps.sh installs it")
		}
	}
	src, err := os.ReadFile("../packaging/nfpm/logrotate")
	if err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile("../systemd/gitlab-secrets-appliance.service")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(src)
	for _, want := range []string{"/var/log/gitlab-secrets-appliance/*.log {", "\tnocopytruncate\n", "\tdelaycompress\n", "\tnocreate\n",
		"\tsu gitlab-secrets-appliance gitlab-secrets-appliance\n", "systemctl reload gitlab-secrets-appliance.service"} {
		if !strings.Contains(conf, want) {
			t.Fatalf("packaging/nfpm/logrotate lacks %q", want)
		}
	}
	if strings.Contains(conf, "\tcopytruncate") || !strings.Contains(string(unit), "\nExecReload=/bin/kill -HUP $MAINPID\n") {
		t.Fatal("the logrotate file copies and truncates, or the unit's reload does not send SIGHUP")
	}

	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	cfg, addr, dir := singleNode(t)
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	res := initCluster(t, bin, addr, "--shares", "1", "--threshold", "1")
	waitState(t, tr, bin, addr, "active")
	audit := filepath.Join(dir, "audit.log")

	// This test's directory, user and node instead of the package's.
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		t.Fatal(err)
	}
	conf = strings.Replace(conf, "/var/log/gitlab-secrets-appliance/", dir+"/", 1)
	conf = strings.Replace(conf, "su gitlab-secrets-appliance gitlab-secrets-appliance", "su "+u.Username+" "+g.Name, 1)
	head, rest, _ := strings.Cut(conf, "\tpostrotate\n")
	_, tail, _ := strings.Cut(rest, "\tendscript\n")
	conf = head + fmt.Sprintf("\tpostrotate\n\t\tkill -HUP %d\n\tendscript\n", n.PID()) + tail
	confFile := filepath.Join(t.TempDir(), "logrotate.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state")

	s := startAuditStream(t, addr, res.RootToken)
	for round := 1; round <= 2; round++ {
		s.waitMore(t, fmt.Sprintf("requests before rotation %d", round), 50)
		out, err := exec.Command(logrotate, "--force", "--state", state, confFile).CombinedOutput()
		if err != nil {
			t.Fatalf("logrotate, round %d: %v\n%s", round, err, out)
		}
		waitReopened(t, n, audit, filepath.Join(dir, "audit.log.1"))
	}
	s.waitMore(t, "requests after the rotations", 50)
	s.end() // before the files are read
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "audit.log") {
			names = append(names, e.Name())
		}
	}
	if strings.Join(names, " ") != "audit.log audit.log.1 audit.log.2.gz" {
		t.Fatalf("after two rotations: %v, want audit.log audit.log.1 audit.log.2.gz", names)
	}
	var text string
	for _, f := range names {
		text += readAudit(t, filepath.Join(dir, f))
	}
	s.checkNoneLost(t, text)
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode()&0o111 != 0
}

// omnibusLogrotateStanza is the stanza Omnibus' logrotate cookbook writes
// for a service (files/gitlab-cookbooks/logrotate/templates/default/
// logrotate-service.erb in omnibus-gitlab), from the options that
// reconfigure reports: the same directives, in the same order.
func omnibusLogrotateStanza(logDir, user, group string, o map[string]any) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, "  "+format+"\n", args...) }
	str := func(k string) string {
		if v, ok := o[k]; ok && v != nil {
			return fmt.Sprint(v)
		}
		return ""
	}
	fmt.Fprintf(&b, "%s/*.log {\n", logDir)
	line("su %s %s", user, group)
	line("%s", str("logrotate_frequency"))
	if v := str("logrotate_size"); v != "" {
		line("size %s", v)
	}
	if v := str("logrotate_maxsize"); v != "" {
		line("maxsize %s", v)
	}
	line("rotate %s", str("logrotate_rotate"))
	if v := str("logrotate_dateformat"); v != "" {
		line("dateext")
		line("dateformat %s", v)
	}
	line("%s", str("logrotate_compress"))
	line("%s", str("logrotate_method"))
	line("missingok")
	line("notifempty")
	line("postrotate")
	line("  %s", str("logrotate_postrotate"))
	line("endscript")
	b.WriteString("}\n")
	return b.String()
}

// On an Omnibus node, Omnibus' logrotate (with the cookbook's logrotate
// options, Omnibus' defaults for the rest) rotates audit.log twice under a
// request stream: moved aside (no copytruncate), `gitlab-ctl hup
// gitlab-secrets-appliance` (here a gitlab-ctl that sends the SIGHUP runsv would
// send to the service's process), a new audit.log, the moved file closed,
// no entry lost.
func TestOmnibusLogrotateRotatesAuditLog(t *testing.T) {
	needRuby(t)
	logrotate, err := exec.LookPath("logrotate")
	if err != nil {
		if logrotate = "/usr/sbin/logrotate"; !isExecutable(logrotate) {
			t.Skip("logrotate is not installed: scripts/test-deps.sh installs it")
		}
	}
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	n := newOmnibusNode(t, bin, "gitlab-1.example.com")
	listen := harness.FreeAddr(t, "127.0.0.1")
	n.mustReconfigure(t, n.baseRB()+fmt.Sprintf(`gitlab_secrets_appliance['listen_address'] = %q
gitlab_secrets_appliance['cluster_listen_address'] = %q
gitlab_secrets_appliance['tls_disable'] = true
gitlab_secrets_appliance['seal']['shamir']['shares'] = 1
gitlab_secrets_appliance['seal']['shamir']['threshold'] = 1
`, listen, nextAddr(t, listen)))
	lr := n.Report.Logrotate
	hup := filepath.Join(n.InstallDir, "bin", "gitlab-ctl") + " hup gitlab-secrets-appliance"
	if lr.LogDirectory != n.LogDir || lr.Options["logrotate_method"] != "nocopytruncate" ||
		lr.Options["logrotate_compress"] != "compress\n  delaycompress" || lr.Options["logrotate_postrotate"] != hup {
		t.Fatalf("logrotate options: %s %v", lr.LogDirectory, lr.Options)
	}

	s := n.start(t, tr)
	n.waitCtlStatus(t, tr, s, 2)
	out, errOut, code := n.ctl(t, &harness.Transcript{}, nil, "secrets-appliance", "init", "--format", "json")
	var res initOutput
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("secrets-appliance init: exit %d: %s", code, errOut)
	}
	n.waitCtlStatus(t, tr, s, 0)
	pid := s.run.Process.Pid // bash, chpst and the appliance: one process
	audit := filepath.Join(n.LogDir, "audit.log")

	// gitlab-ctl hup SERVICE: runsv sends SIGHUP to the service's process.
	ctl := filepath.Join(n.InstallDir, "bin", "gitlab-ctl")
	os.MkdirAll(filepath.Dir(ctl), 0o755)
	if err := os.WriteFile(ctl, []byte(fmt.Sprintf("#!/bin/sh\n[ \"$1 $2\" = \"hup gitlab-secrets-appliance\" ] || exit 64\nexec kill -HUP %d\n", pid)), 0o755); err != nil {
		t.Fatal(err)
	}
	suUser, suGroup := n.Account.User, n.Account.Group
	if os.Getuid() != 0 {
		u, _ := user.Current()
		g, _ := user.LookupGroupId(u.Gid)
		suUser, suGroup = u.Username, g.Name
	}
	confFile := filepath.Join(t.TempDir(), "logrotate.conf")
	if err := os.WriteFile(confFile, []byte(omnibusLogrotateStanza(lr.LogDirectory, suUser, suGroup, lr.Options)), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state")
	st := startAuditStream(t, "http://"+listen, res.RootToken)
	for round := 1; round <= 2; round++ {
		st.waitMore(t, fmt.Sprintf("requests before rotation %d", round), 50)
		out, err := exec.Command(logrotate, "--force", "--state", state, confFile).CombinedOutput()
		if err != nil {
			b, _ := os.ReadFile(confFile)
			t.Fatalf("logrotate, round %d: %v\n%s\n%s", round, err, out, b)
		}
		harness.Eventually(t, time.Minute, "a new audit.log", func() bool {
			b, _ := os.ReadFile(audit)
			return strings.Contains(string(b), "cubbyhole/rotation-")
		})
		harness.Eventually(t, time.Minute, "the appliance to close audit.log.1", func() bool {
			return !holds(openFiles(t, pid), filepath.Join(n.LogDir, "audit.log.1"))
		})
	}
	st.waitMore(t, "requests after the rotations", 50)
	st.end()
	var text string
	for _, f := range []string{"audit.log", "audit.log.1", "audit.log.2.gz"} {
		text += readAudit(t, filepath.Join(n.LogDir, f))
	}
	st.checkNoneLost(t, text)
	if code := s.stop(t); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
}
