package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
)

// node is one appliance process of the throwaway cluster.
type node struct {
	id, site string
	dir      string // its own directory: config, data, log
	cfgPath  string
	api      string // http://127.0.0.x:port
	cluster  string // https://127.0.0.x:port

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// nodeClient talks to the throwaway cluster's nodes (plain HTTP on
// loopback).
var nodeClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}

func (n *node) dataDir() string { return filepath.Join(n.dir, "data") }

// start runs the node's process (this binary); its output goes to its log
// file in its directory.
func (n *node) start(bin string, env []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	log, err := os.OpenFile(filepath.Join(n.dir, "node.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "server", "--config", n.cfgPath)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlives the drill
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("starting %s: %w", n.id, err)
	}
	n.cmd, n.log, n.done = cmd, log, make(chan struct{})
	go func(done chan struct{}) {
		cmd.Wait()
		log.Close()
		close(done)
	}(n.done)
	return nil
}

// running: the process was started and has not exited.
func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// kill ends the process with SIGKILL (a lost node) and waits for it.
func (n *node) kill() { n.signal(syscall.SIGKILL) }

// stop ends it with SIGTERM (a planned stop) and waits for it.
func (n *node) stop() { n.signal(syscall.SIGTERM) }

func (n *node) signal(sig syscall.Signal) {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil || done == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
	}
}

// logTail is the end of the node's log, for a failed check's detail.
func (n *node) logTail(lines int) string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "node.log"))
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// apiClient is a client of the node's /appliance/v1 through h.
func (n *node) apiClient(h *http.Client) *client.Client {
	return client.New(n.api, client.Options{HTTPClient: h})
}

// status is the node's /appliance/v1/status, or an error if it does not
// answer.
func (n *node) status(ctx context.Context) (client.Status, error) {
	return n.statusWith(ctx, nodeClient)
}

func (n *node) statusWith(ctx context.Context, h *http.Client) (client.Status, error) {
	return n.apiClient(h).Status(ctx)
}

// unseal submits one share; the error is the node's refusal.
func (n *node) unseal(ctx context.Context, share string) (client.UnsealProgress, error) {
	return n.apiClient(nodeClient).Unseal(ctx, share)
}

// write puts a canary value at path through the node with token; it
// reports whether the write was acknowledged, and the answer if not.
func (n *node) write(ctx context.Context, token, path, value string) (bool, string) {
	return n.writeWith(ctx, nodeClient, token, path, value)
}

func (n *node) writeWith(ctx context.Context, client *http.Client, token, path, value string) (bool, string) {
	body, _ := json.Marshal(map[string]string{"v": value})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, n.api+"/v1/"+path, bytes.NewReader(body))
	req.Header.Set("X-Vault-Token", token)
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode/100 == 2, resp.Status
}

// read gets the canary back; it reports whether it holds value.
func (n *node) read(ctx context.Context, token, path, value string) bool {
	return n.readWith(ctx, nodeClient, token, path, value)
}

func (n *node) readWith(ctx context.Context, client *http.Client, token, path, value string) bool {
	got, ok := n.value(ctx, client, token, path)
	return ok && got == value
}

// value is the canary at path ("", false if it cannot be read).
func (n *node) value(ctx context.Context, client *http.Client, token, path string) (string, bool) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.api+"/v1/"+path, nil)
	req.Header.Set("X-Vault-Token", token)
	resp, err := client.Do(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	var out struct {
		Data map[string]any `json:"data"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out) != nil {
		return "", false
	}
	v, ok := out.Data["v"].(string)
	return v, ok
}

// poll calls cond until it holds or the deadline passes.
func poll(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
