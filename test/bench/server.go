package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/freeport"
)

// target is one server under measurement: the appliance or the stock
// OpenBao peer, run as a process on loopback with Raft in its own folder,
// driven through the bao-compatible HTTP API only.
type target struct {
	name   string
	kind   string // appliance or openbao
	hsm    bool   // unseals itself with the HSM
	env    []string
	bin    string
	dir    string
	listen string
	addr   string
	args   []string
	http   *http.Client

	cmd         *exec.Cmd
	exited      chan struct{}
	initialized bool
	token       string
	share       string
}

// newTarget prepares a server of kind (appliance or openbao) with its own
// folder; sealCfg is appended to its config (an HSM seal; none: Shamir).
func newTarget(name, kind, bin, dir string, client *http.Client, sealCfg string, env []string) (*target, error) {
	listen, err := freePortPair()
	if err != nil {
		return nil, err
	}
	t := &target{name: name, kind: kind, hsm: sealCfg != "", env: env, bin: bin, dir: dir, listen: listen, addr: "http://" + listen, http: client}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(listen)
	p, _ := strconv.Atoi(port)
	cluster := net.JoinHostPort(host, strconv.Itoa(p+1))
	var cfg string
	switch kind {
	case "appliance":
		cfg = fmt.Sprintf(`node_id = "bench"
data_dir = %q
log_level = "warn"
listener {
  address     = %q
  tls_disable = true
}
cluster { address = %q }
`, data, listen, cluster)
	default:
		cfg = fmt.Sprintf(`storage "raft" {
  path    = %q
  node_id = "bench"
  performance_multiplier = 1
}
listener "tcp" {
  address     = %q
  tls_disable = true
}
api_addr     = "http://%s"
cluster_addr = "https://%s"
log_level    = "warn"
`, data, listen, listen, cluster)
	}
	cfg += sealCfg
	file := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	t.args = []string{"server", "-config=" + file}
	if kind == "appliance" {
		t.args = []string{"server", "--config", file}
	}
	return t, nil
}

// start runs the server process and returns when it was started.
func (t *target) start() (time.Time, error) {
	log, err := os.OpenFile(filepath.Join(t.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return time.Time{}, err
	}
	t.cmd = exec.Command(t.bin, t.args...)
	t.cmd.Stdout, t.cmd.Stderr = log, log
	t.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.dir}, t.env...)
	t.exited = make(chan struct{})
	began := time.Now()
	if err := t.cmd.Start(); err != nil {
		log.Close()
		return began, err
	}
	go func() {
		t.cmd.Wait()
		log.Close()
		close(t.exited)
	}()
	return began, nil
}

func (t *target) stop() error {
	if t.cmd == nil {
		return nil
	}
	t.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-t.exited:
	case <-time.After(time.Minute):
		t.cmd.Process.Kill()
		<-t.exited
		return fmt.Errorf("%s did not stop within a minute of SIGTERM", t.name)
	}
	t.cmd = nil
	return nil
}

// request sends a bao API request and decodes the JSON answer.
func (t *target) request(method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, t.addr+path, body)
	if t.token != "" {
		req.Header.Set("X-Vault-Token", t.token)
	}
	resp, err := t.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// poll calls cond every 10 ms until it is true, the process exits or the
// deadline passes.
func (t *target) poll(what string, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		select {
		case <-t.exited:
			return fmt.Errorf("%s exited while waiting for %s; see %s", t.name, what, filepath.Join(t.dir, "server.log"))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no %s within %s", t.name, what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// bootToServing starts the process and unseals it, returning the time from
// process start to the first 200 from sys/health (unsealed and active).
func (t *target) bootToServing() (time.Duration, error) {
	began, err := t.start()
	if err != nil {
		return 0, err
	}
	if err := t.poll("API", time.Minute, func() bool {
		code, _ := t.request("GET", "/v1/sys/seal-status", nil, nil)
		return code == 200
	}); err != nil {
		return 0, err
	}
	switch {
	case !t.initialized:
		if err := t.initialize(); err != nil {
			return 0, err
		}
	case !t.hsm:
		// Shamir: the operator's share, submitted as soon as the API answers.
		var st struct {
			Sealed bool `json:"sealed"`
		}
		if _, err := t.request("POST", "/v1/sys/unseal", map[string]string{"key": t.share}, &st); err != nil {
			return 0, err
		}
	}
	if err := t.poll("active node", time.Minute, func() bool {
		code, _ := t.request("GET", "/v1/sys/health", nil, nil)
		return code == 200
	}); err != nil {
		return 0, err
	}
	return time.Since(began), nil
}

// initialize runs sys/init; a Shamir server is then unsealed with its one
// share, an HSM server (and the appliance, which holds its new key)
// unseals itself.
func (t *target) initialize() error {
	var res struct {
		Keys      []string `json:"keys_base64"`
		RootToken string   `json:"root_token"`
	}
	req := map[string]int{"secret_shares": 1, "secret_threshold": 1, "recovery_shares": 1, "recovery_threshold": 1}
	switch {
	case t.kind == "openbao" && t.hsm:
		req = map[string]int{"recovery_shares": 1, "recovery_threshold": 1}
	case t.kind == "openbao":
		req = map[string]int{"secret_shares": 1, "secret_threshold": 1}
	}
	code, err := t.request("POST", "/v1/sys/init", req, &res)
	if err != nil || code != 200 || res.RootToken == "" {
		return fmt.Errorf("%s: sys/init answered %d: %v", t.name, code, err)
	}
	t.initialized, t.token = true, res.RootToken
	if len(res.Keys) > 0 {
		t.share = res.Keys[0]
	}
	if t.kind == "openbao" && !t.hsm {
		if _, err := t.request("POST", "/v1/sys/unseal", map[string]string{"key": t.share}, nil); err != nil {
			return err
		}
	}
	return nil
}

// mountKV mounts KV v2 at secret/ (once per data dir).
func (t *target) mountKV() error {
	code, err := t.request("POST", "/v1/sys/mounts/secret", map[string]any{"type": "kv", "options": map[string]string{"version": "2"}}, nil)
	if err != nil || (code != 204 && code != 200) {
		return fmt.Errorf("%s: mounting KV v2 answered %d: %v", t.name, code, err)
	}
	// A new KV v2 mount answers 400 ("upgrading ...") until its backend
	// has set itself up: wait for it, as the dev node does, on both
	// servers alike.
	deadline := time.Now().Add(time.Minute)
	for {
		code, err := t.request("GET", "/v1/secret/config", nil, nil)
		if err == nil && code == 200 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: KV v2 at secret/ not ready after a minute: %d %v", t.name, code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rssBytes is the server process's resident set size now.
func (t *target) rssBytes() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", t.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for %s", t.name)
}

func freePortPair() (string, error) {
	port, err := freeport.Pair("127.0.0.1")
	return fmt.Sprintf("127.0.0.1:%d", port), err
}
