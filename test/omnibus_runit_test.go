package test

// The Omnibus service under real runit: the service directory the
// cookbook's templates render (run, log/run, log/config) supervised by
// runsv, its output through svlogd, driven with sv as `gitlab-ctl
// restart|stop|start` drive it.

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// runitService is runsv supervising one rendered service directory.
type runitService struct {
	dir    string // /opt/gitlab/sv/gitlab-secrets-appliance
	runsv  *exec.Cmd
	exited chan struct{}
	// exits is where the test's finish script records each exit of the
	// run script: runsv's two arguments (exit code, or -1 when a signal
	// ended it; the wait status' low byte), one line each.
	exits string
}

// startRunsv starts runsv on dir and stops it (service and log/ service
// first) when the test ends, whatever happened.
func startRunsv(t *testing.T, dir, exits string) *runitService {
	t.Helper()
	// runsv runs ./finish after each exit of ./run with the exit code and
	// status; the cookbook ships none, so this one only records them.
	finish := fmt.Sprintf("#!/bin/sh\necho \"$1 $2\" >> %s\n", exits)
	if err := os.WriteFile(filepath.Join(dir, "finish"), []byte(finish), 0o755); err != nil {
		t.Fatal(err)
	}
	rs := &runitService{dir: dir, exited: make(chan struct{}), exits: exits,
		runsv: exec.Command("runsv", dir)}
	rs.runsv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := rs.runsv.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { rs.runsv.Wait(); close(rs.exited) }()
	t.Cleanup(func() {
		// sv exit: runsv stops the service (TERM, CONT), then the log
		// service, and exits. If it does not within a minute, its
		// process group (runsv, run, svlogd: all started here) is killed.
		exec.Command("sv", "-w", "60", "force-stop", dir).Run()
		exec.Command("sv", "exit", dir).Run()
		exec.Command("sv", "exit", filepath.Join(dir, "log")).Run()
		select {
		case <-rs.exited:
		case <-time.After(time.Minute):
			t.Errorf("runsv did not exit within a minute of sv exit: killing its process group")
		}
		for _, pid := range []int{rs.pid(t, ""), rs.pid(t, "log")} {
			if pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		syscall.Kill(-rs.runsv.Process.Pid, syscall.SIGKILL)
		<-rs.exited
	})
	harness.Eventually(t, time.Minute, "runsv to run the service and its log service", func() bool {
		st := rs.status(t)
		return strings.HasPrefix(st, "run: ") && strings.Contains(st, "; run: log: ")
	})
	return rs
}

// sv runs sv with a command on the service, and fails the test if sv does.
func (rs *runitService) sv(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("sv", append(args, rs.dir)...).CombinedOutput()
	if err != nil {
		t.Fatalf("sv %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// status is sv status' line: "run: DIR: (pid N) 3s; run: log: (pid M) 3s".
func (rs *runitService) status(t *testing.T) string {
	out, _ := exec.Command("sv", "status", rs.dir).CombinedOutput()
	return strings.TrimSpace(strings.ReplaceAll(string(out), rs.dir, "DIR"))
}

// pid is what runsv says runs sub ("" for the service, "log"), 0 if none.
func (rs *runitService) pid(t *testing.T, sub string) int {
	b, _ := os.ReadFile(filepath.Join(rs.dir, sub, "supervise", "pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// exitsRecorded are the finish script's lines so far.
func (rs *runitService) exitsRecorded() []string {
	b, _ := os.ReadFile(rs.exits)
	return strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(b)), " ", "/"))
}

// The service the cookbook renders, supervised by runsv as on an Omnibus
// node (a SoftHSM2 token unseals it, so that every start serves without
// share holders): it comes up as the service user with its output in
// svlogd's current; `sv restart` (gitlab-ctl restart) stops it with
// SIGTERM, a clean exit, and a new process serves; `sv down` (gitlab-ctl
// stop) stops it the same way and runsv does not start it again; `sv up`
// brings it back; a node killed with SIGKILL is started again by runsv.
func TestOmnibusUnderRunit(t *testing.T) {
	needRuby(t)
	for _, tool := range []string{"runsv", "sv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: this test runs the service under real runit (apt-get install runit)", tool)
		}
	}
	if !canRunRunit() {
		t.Skip("the rendered run script switches to the service user with chpst -u, which needs root (and chpst, svlogd)")
	}
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	n := newOmnibusNode(t, bin, "gitlab-runit.example.com")
	hsm := harness.NewSoftHSM(t, "gitlab")
	hsm.GenerateAESKey(t, "gitlab-secrets-kek")
	shareTokenWithGroup(t, hsm, "users")
	pinFile := hsm.WritePINFile(t, n.path("etc/gitlab"))
	listen := harness.FreeAddr(t, "127.0.0.1")
	n.mustReconfigure(t, n.loopbackRB(t, listen)+fmt.Sprintf(`gitlab_secrets_appliance['supplementary_groups'] = ['users']
gitlab_secrets_appliance['env'] = { 'SOFTHSM2_CONF' => %q }
gitlab_secrets_appliance['seal']['pkcs11']['enable'] = true
gitlab_secrets_appliance['seal']['pkcs11']['library'] = %q
gitlab_secrets_appliance['seal']['pkcs11']['token_label'] = %q
gitlab_secrets_appliance['seal']['pkcs11']['pin_file'] = %q
gitlab_secrets_appliance['seal']['shamir']['shares'] = 3
gitlab_secrets_appliance['seal']['shamir']['threshold'] = 2
`, hsm.Conf, hsm.Library, hsm.TokenLabel, pinFile))

	rs := startRunsv(t, filepath.Join(n.SvDir, "gitlab-secrets-appliance"), n.path("runit-exits"))
	current := filepath.Join(n.LogDir, "current")
	logged := func(s string) int {
		b, _ := os.ReadFile(current)
		return strings.Count(string(b), s)
	}
	const started = "appliance started: node_id=gitlab-runit.example.com"
	const stopping = "stopping: sealing and shutting down the core"
	hc := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
	health := func() int {
		resp, err := hc.Get("http://" + listen + "/v1/sys/health")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// up waits until runsv runs a process other than old, which serves
	// as the active node (status 0, sys/health 200), and whose start is
	// the starts-th in svlogd's current; it returns its PID.
	up := func(what string, old, starts int) int {
		t.Helper()
		var pid int
		harness.Eventually(t, 2*time.Minute, what+": runsv runs a new process", func() bool {
			pid = rs.pid(t, "")
			return pid != 0 && pid != old && strings.HasPrefix(rs.status(t), "run: ")
		})
		n.waitCtlStatus(t, tr, nil, 0)
		if code := health(); code != http.StatusOK {
			t.Fatalf("%s: sys/health answers %d, want 200 (active, unsealed)", what, code)
		}
		harness.Eventually(t, time.Minute, what+": its start in svlogd's current", func() bool { return logged(started) == starts })
		if now := rs.pid(t, ""); now != pid {
			t.Fatalf("%s: runsv started the node again (pid %d, then %d):\n%s", what, pid, now, rs.exitsRecorded())
		}
		return pid
	}
	// exitedWith waits until the finish script recorded the want-th exit,
	// and checks how that process ended.
	exitedWith := func(what string, want int, how string) {
		t.Helper()
		harness.Eventually(t, 2*time.Minute, what+": the exit recorded by ./finish", func() bool { return len(rs.exitsRecorded()) >= want })
		if got := rs.exitsRecorded(); len(got) != want || got[want-1] != how {
			t.Fatalf("%s: the run script's exits (code/status) are %v, want %d, the last %s", what, got, want, how)
		}
	}

	// The first start: uninitialized, as the service user, logging
	// through svlogd (-tt: a timestamp on each line).
	n.waitCtlStatus(t, tr, nil, 2)
	pid := rs.pid(t, "")
	if uid := processUID(t, pid); uid != n.Account.UID {
		t.Errorf("the appliance runs as uid %d, want %d (%s)", uid, n.Account.UID, n.Account.User)
	}
	if uid := processUID(t, rs.pid(t, "log")); uid != 0 {
		t.Errorf("svlogd runs as uid %d, want root (the log/run template's chpst -u root)", uid)
	}
	harness.Eventually(t, time.Minute, "the start in svlogd's current", func() bool { return logged(started) == 1 })
	if b, _ := os.ReadFile(current); !strings.HasPrefix(string(b), time.Now().UTC().Format("2006-01-02")) {
		t.Errorf("svlogd's current does not start with a -tt timestamp:\n%.300s", b)
	}
	initTr := &harness.Transcript{} // the one output that holds secrets
	if _, errOut, code := n.ctl(t, initTr, nil, "secrets-appliance", "init", "--format", "json"); code != 0 {
		t.Fatalf("secrets-appliance init: exit %d, stderr %q", code, errOut)
	}
	n.waitCtlStatus(t, tr, nil, 0)

	// sv restart (gitlab-ctl restart): SIGTERM, a clean exit, a new
	// process that the HSM unseals.
	rs.sv(t, "restart")
	exitedWith("sv restart", 1, "0/0")
	pid = up("sv restart", pid, 2)
	harness.Eventually(t, time.Minute, "sv restart: the graceful shutdown in current", func() bool { return logged(stopping) == 1 })

	// sv down (gitlab-ctl stop): the same clean exit, then nothing runs.
	rs.sv(t, "down")
	exitedWith("sv down", 2, "0/0")
	harness.Eventually(t, time.Minute, "sv status to say down", func() bool { return strings.HasPrefix(rs.status(t), "down: DIR: ") })
	if _, _, code := n.ctl(t, tr, nil, "secrets-appliance", "status"); code != 4 {
		t.Errorf("secrets-appliance status of a node sv took down: exit %d, want 4 (not running)", code)
	}
	if st := rs.status(t); !strings.HasPrefix(st, "down: DIR: ") || rs.pid(t, "") != 0 || len(rs.exitsRecorded()) != 2 {
		t.Errorf("after sv down runsv started the node again: %s, exits %v", st, rs.exitsRecorded())
	}
	if !strings.Contains(rs.status(t), "normally up; run: log: ") {
		t.Errorf("sv down stopped more than the node: %s", rs.status(t))
	}
	harness.Eventually(t, time.Minute, "sv down: the graceful shutdown in current", func() bool { return logged(stopping) == 2 })

	// sv up (gitlab-ctl start).
	rs.sv(t, "up")
	pid = up("sv up", 0, 3)

	// SIGKILL: no clean exit, and runsv starts it again.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exitedWith("kill -9", 3, "-1/9")
	up("kill -9", pid, 4)
	if logged(stopping) != 2 {
		t.Errorf("%d %q in current, want 2: a SIGKILL leaves no shutdown line", logged(stopping), stopping)
	}
	b, _ := os.ReadFile(current)
	scanForSecrets(t, tr.String()+string(b), []string{hsm.PIN})
}
