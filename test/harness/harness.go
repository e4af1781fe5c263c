// Package harness runs real appliance processes for the tests under test/:
// it builds the binary once, writes config files, starts and stops nodes
// and runs CLI commands against them. Nothing in it is a fake.
package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openbao/openbao/api/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/freeport"
)

// EnvBinary names a prebuilt binary to test instead of building one.
const EnvBinary = "GSA_TEST_BINARY"

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary returns the path of the appliance binary under test: $GSA_TEST_BINARY,
// or one built from this checkout once per test process.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(EnvBinary); p != "" {
		return p
	}
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "gsa-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "gitlab-secrets-appliance")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/gitlab-secrets-appliance")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// RemoveBuild deletes the binary Binary built and the PKCS#11 shim
// NewHangingHSM built, if any; call it from TestMain after m.Run.
func RemoveBuild() {
	for _, p := range []string{buildPath, shimPath} {
		if p != "" {
			os.RemoveAll(filepath.Dir(p))
		}
	}
}

// moduleRoot finds the appliance module's directory, from this module or
// from a test module nested in it (test/runner).
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	for dir := filepath.Dir(mod); ; dir = filepath.Dir(dir) {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module gitlab.com/gitlab-org/gitlab-secrets-appliance\n") {
			return dir, nil
		}
		if dir == filepath.Dir(dir) {
			return "", errors.New("the appliance module (gitlab.com/gitlab-org/gitlab-secrets-appliance) is not above " + mod)
		}
	}
}

// FreeAddr returns host:port on a loopback address with that port and the
// next one (the cluster port) free.
func FreeAddr(t testing.TB, host string) string {
	t.Helper()
	port, err := freeport.Pair(host)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(host, fmt.Sprint(port))
}

// Eventually polls cond until it holds or the deadline passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Within runs f and fails the test if it has not returned after timeout:
// a call that must not hang (it returns at its own, shorter, bounds).
func Within[T any](t testing.TB, timeout time.Duration, what string, f func() T) T {
	t.Helper()
	done := make(chan T, 1)
	go func() { done <- f() }()
	select {
	case v := <-done:
		return v
	case <-time.After(timeout):
		t.Fatalf("%s hung (no return within %s)", what, timeout)
		panic("unreachable")
	}
}

// HungServer is an HTTP server that never answers: each request waits
// until its client gives up or the test ends.
func HungServer(t testing.TB) *httptest.Server {
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() {
		close(release)
		hung.Close()
	})
	return hung
}

// Buffer is a goroutine-safe output sink.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Transcript collects everything the processes of one test printed, so a
// test can scan it for secrets at the end.
type Transcript struct {
	mu    sync.Mutex
	parts []*Buffer
}

func (tr *Transcript) add(b *Buffer) *Buffer {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.parts = append(tr.parts, b)
	return b
}

// String is every output collected so far.
func (tr *Transcript) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var s strings.Builder
	for _, p := range tr.parts {
		s.WriteString(p.String())
	}
	return s.String()
}

// Node is one appliance process started from a config file.
type Node struct {
	Bin    string
	Config string
	Addr   string // API URL
	Output *Buffer
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
}

// StartNode runs `server --config cfg` and returns once the process runs;
// use WaitServing before talking to it. The process is killed at cleanup
// if the test left it running.
func StartNode(t testing.TB, tr *Transcript, bin, cfg, addr string, env ...string) *Node {
	t.Helper()
	return StartNodeIn(t, tr, nil, bin, cfg, addr, env...)
}

// StartNodeIn is StartNode with the command run through prefix (for
// example ip netns exec NS): prefix must exec the binary, so that the
// process signalled is the node's.
func StartNodeIn(t testing.TB, tr *Transcript, prefix []string, bin, cfg, addr string, env ...string) *Node {
	t.Helper()
	n := &Node{Bin: bin, Config: cfg, Addr: addr, Output: tr.add(&Buffer{}), done: make(chan struct{})}
	args := append(append(append([]string(nil), prefix...), bin), "server", "--config", cfg)
	n.cmd = exec.Command(args[0], args[1:]...)
	n.cmd.Stdout, n.cmd.Stderr = n.Output, n.Output
	n.cmd.Env = append(os.Environ(), env...)
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		n.err = n.cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		n.cmd.Process.Kill()
		<-n.done
	})
	return n
}

// WaitServing polls `status` until the node's API answers (sealed or not).
func (n *Node) WaitServing(t testing.TB, tr *Transcript) {
	t.Helper()
	Eventually(t, 2*time.Minute, n.Addr+" to serve", func() bool {
		select {
		case <-n.done:
			t.Fatalf("node exited before serving (%v):\n%s", n.err, n.Output)
		default:
		}
		_, _, code := Run(t, tr, nil, n.Bin, "status", "--address", n.Addr)
		return code == 0 || code == 2
	})
}

// Signal sends sig and waits for the process to exit; it returns the exit
// code (-1 if killed by a signal).
func (n *Node) Signal(t testing.TB, sig syscall.Signal, timeout time.Duration) int {
	t.Helper()
	n.cmd.Process.Signal(sig)
	select {
	case <-n.done:
	case <-time.After(timeout):
		// A hung node: SIGQUIT makes Go print every goroutine's stack.
		n.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-n.done:
		case <-time.After(5 * time.Second):
		}
		t.Fatalf("node did not exit within %s of %v (its goroutines follow its log):\n%s", timeout, sig, n.Output)
	}
	return n.cmd.ProcessState.ExitCode()
}

// Kill sends SIGKILL without waiting (a fault in the middle of something);
// Wait then collects the process.
func (n *Node) Kill() { n.cmd.Process.Kill() }

// Wait waits for the process to exit and returns its exit code (-1 if
// killed by a signal).
func (n *Node) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-n.done:
	case <-time.After(timeout):
		t.Fatalf("node did not exit within %s:\n%s", timeout, n.Output)
	}
	return n.cmd.ProcessState.ExitCode()
}

// Notify sends sig without waiting (SIGHUP: reload).
func (n *Node) Notify(sig syscall.Signal) { n.cmd.Process.Signal(sig) }

// PID is the process's ID.
func (n *Node) PID() int { return n.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (n *Node) Exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// Run runs the binary with args (and stdin, if any) to completion and
// returns its stdout, stderr and exit code.
func Run(t testing.TB, tr *Transcript, stdin []byte, bin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb Buffer
	cmd.Stdout, cmd.Stderr = tr.add(&out), tr.add(&errb)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running %s %v: %v", bin, args, err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// MountKVv2 mounts KV v2 at path and waits until the mount has finished
// its upgrade to versioned data (until then writes are refused with
// "Upgrading from non-versioned to versioned data").
func MountKVv2(t testing.TB, c *api.Client, path string) {
	t.Helper()
	if err := c.Sys().Mount(path, &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		t.Fatalf("mounting KV v2 at %s: %v", path, err)
	}
	Eventually(t, time.Minute, "KV v2 at "+path+" to be ready", func() bool {
		_, err := c.Logical().Read(path + "/config")
		return err == nil
	})
}

// WaitGitLabBootstrap polls status until the GitLab bootstrap that init
// started in the background has been applied; it fails the test at once
// if the bootstrap failed.
func WaitGitLabBootstrap(t testing.TB, tr *Transcript, bin, addr string) {
	t.Helper()
	Eventually(t, 2*time.Minute, "the GitLab bootstrap after init", func() bool {
		out, _, _ := Run(t, tr, nil, bin, "status", "--format", "json", "--address", addr)
		var st struct {
			GitLabBootstrap string `json:"gitlab_bootstrap"`
		}
		json.Unmarshal([]byte(out), &st)
		switch st.GitLabBootstrap {
		case "applied":
			return true
		case "", "running":
			return false
		}
		t.Fatalf("GitLab bootstrap after init: %s", st.GitLabBootstrap)
		return false
	})
}
