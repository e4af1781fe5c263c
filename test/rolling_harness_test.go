package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// rollingRun is what a rolling restart did: the command's output, how
// often each node was started again, and how long it took.
type rollingRun struct {
	out, errOut string
	restarts    map[string]int
	// stopped is the output of each node's process that stopped for
	// its restart.
	stopped map[string]string
	started time.Time
	took    time.Duration
}

// rollingRestart runs `gitlab-secrets-appliance rolling-restart` through
// via with the root token, and is the nodes' supervisor meanwhile: a node
// that exits with 75 (a restart was asked for) is started again, as
// systemd's Restart=on-failure and runit do (neither runs here as PID 1),
// and a node the command says waits for Shamir shares gets them (the share
// holders come). Any other exit, or a command that fails or does not end,
// fails the test.
func rollingRestart(t *testing.T, c *cluster, via *member) rollingRun {
	t.Helper()
	return runRollingRestart(t, c, exec.Command(c.bin, "rolling-restart", "--address", via.addr, "--node-timeout", "5m"))
}

// rollingRestartGitlabCtl is rollingRestart run as on an Omnibus node:
// `gitlab-ctl secrets-appliance rolling-restart` through the miniature
// gitlab-ctl and the real command files, on a node whose
// public_attributes.json records via's address.
func rollingRestartGitlabCtl(t *testing.T, c *cluster, via *member) rollingRun {
	t.Helper()
	needRuby(t)
	base := t.TempDir()
	if err := os.MkdirAll(filepath.Join(base, "embedded", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	bin, err := filepath.Abs(c.bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(base, "embedded", "bin", "gitlab-secrets-appliance")); err != nil {
		t.Fatal(err)
	}
	attrs := filepath.Join(base, "public_attributes.json")
	b, _ := json.Marshal(map[string]any{"gitlab_secrets_appliance": map[string]any{"enable": true, "ctl_address": via.addr}})
	if err := os.WriteFile(attrs, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return runRollingRestart(t, c, exec.Command("ruby", filepath.Join(omnibusDir(t), "test", "gitlab_ctl.rb"),
		"--base-path", base, "--commands", ctlCommandsDir(t), "--public-attributes", attrs, "--",
		"secrets-appliance", "rolling-restart", "--node-timeout", "5m"))
}

func runRollingRestart(t *testing.T, c *cluster, cmd *exec.Cmd) rollingRun {
	t.Helper()
	c.waitAllConnected()
	r := rollingRun{restarts: map[string]int{}, stopped: map[string]string{}, started: time.Now()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // gitlab-ctl and the binary it runs
	cmd.Stdin = strings.NewReader(c.res.RootToken + "\n")
	var out, errOut harness.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	unsealed := map[string]bool{}
	deadline := time.Now().Add(15 * time.Minute)
	var cmdErr error
supervise:
	for {
		select {
		case cmdErr = <-done:
			break supervise
		default:
		}
		if time.Now().After(deadline) {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Fatalf("rolling-restart did not end:\n%s\n%s", out.String(), errOut.String())
		}
		for _, m := range c.nodes {
			if m.n.Exited() {
				if code := m.n.Wait(t, time.Minute); code != 75 {
					t.Fatalf("%s exited with %d, not 75 (restart asked for):\n%s", m.id, code, tail(m.n.Output.String(), 30))
				}
				r.restarts[m.id]++
				r.stopped[m.id] = m.n.Output.String()
				c.start(m)
			}
			if !unsealed[m.id] && strings.Contains(out.String(), m.id+" is back, sealed, and waits for Shamir shares") {
				c.unseal(m) // the share holders come
				unsealed[m.id] = true
			}
		}
		time.Sleep(100 * time.Millisecond) // a supervisor's poll, not a synchronisation
	}
	r.took = time.Since(r.started)
	r.out, r.errOut = out.String(), errOut.String()
	if cmdErr != nil {
		t.Fatalf("rolling-restart: %v\n%s\n%s", cmdErr, r.out, r.errOut)
	}
	return r
}

// restartedAt is where the command's output says id began restarting
// (-1: never).
func (r rollingRun) restartedAt(id string) int {
	return strings.Index(r.out, "  "+id+" is restarting\n")
}

// checkEachOnce fails the test unless every node restarted exactly once.
func (r rollingRun) checkEachOnce(t *testing.T, c *cluster) {
	t.Helper()
	for _, m := range c.nodes {
		if r.restarts[m.id] != 1 || r.restartedAt(m.id) < 0 {
			t.Errorf("%s restarted %d times, want once:\n%s", m.id, r.restarts[m.id], r.out)
		}
	}
}

// checkActiveLast fails the test unless lead handed its leadership over
// before its own restart, which came after every other node's.
//
// An election while the others restarted (a busy machine) may have taken
// its leadership before its turn: the command then says so, and restarts
// it as a follower.
func (r rollingRun) checkActiveLast(t *testing.T, c *cluster, lead *member) {
	t.Helper()
	if i, j := strings.Index(r.out, lead.id+" handed its leadership over"), r.restartedAt(lead.id); (i < 0 || j < i) && !r.lostLeadership(lead) {
		t.Errorf("the active node %s did not hand its leadership over before its restart:\n%s", lead.id, r.out)
	}
	for _, m := range c.others(lead) {
		if r.restartedAt(m.id) > r.restartedAt(lead.id) {
			t.Errorf("the active node %s was restarted before %s:\n%s", lead.id, m.id, r.out)
		}
	}
}

// checkHandedOver fails the test unless lead's stopped process handed its
// leadership over with a Raft transfer when asked to restart, and not
// with sys/step-down: after a step-down OpenBao's core sleeps 10 s before
// it contends again, and the node's stop waits for that sleep to end.
func (r rollingRun) checkHandedOver(t *testing.T, lead *member) {
	t.Helper()
	if r.lostLeadership(lead) {
		t.Logf("%s lost its leadership before its turn: no hand-over to check", lead.id)
		return
	}
	log := r.stopped[lead.id]
	if !strings.Contains(log, "leadership handed over: active_node=") {
		t.Errorf("the active node %s did not log the hand-over of its restart:\n%s", lead.id, tail(log, 30))
	}
	if strings.Contains(log, "stepping down from active operation to standby") {
		t.Errorf("the active node %s stepped down with sys/step-down (10 s back-off before it could stop):\n%s", lead.id, tail(log, 30))
	}
}

// waitAllConnected waits until the active node's sys/ha-status lists
// every node, as the rolling restart requires before it starts: on a busy
// machine a node that joined may not have reached the active node yet.
func (c *cluster) waitAllConnected() {
	c.t.Helper()
	harness.Eventually(c.t, 2*time.Minute, fmt.Sprintf("all %d nodes in the active node's sys/ha-status", len(c.nodes)), func() bool {
		ha, err := c.client(c.leader()).Sys().HAStatus()
		return err == nil && len(ha.Nodes) == len(c.nodes)
	})
}

// lostLeadership: the command found lead no longer active at its turn.
func (r rollingRun) lostLeadership(lead *member) bool {
	return strings.Contains(r.out, "  "+lead.id+" is no longer the active node")
}
