package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openbao/openbao/api/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

type initOutput struct {
	Shares       []string `json:"unseal_shares"`
	Threshold    int      `json:"unseal_threshold"`
	RecoveryKeys []string `json:"recovery_keys"`
	RootToken    string   `json:"root_token"`
	// GitLabBootstrap is "running" when the config has a gitlab block:
	// init answers first, status says how the bootstrap ended.
	GitLabBootstrap string `json:"gitlab_bootstrap"`
}

type statusOutput struct {
	State       string `json:"state"`
	Ready       bool   `json:"ready"`
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	NodeID      string `json:"node_id"`
	// InitInterrupted: the first init stopped before it answered.
	InitInterrupted string `json:"init_interrupted"`
	Raft            struct {
		Voter            bool   `json:"voter"`
		Peers            int    `json:"peers"`
		HeartbeatTimeout string `json:"heartbeat_timeout"`
		AppliedIndex     uint64 `json:"applied_index"`
		CommitIndex      uint64 `json:"commit_index"`
	} `json:"raft"`
	Seal struct {
		Cluster    string `json:"cluster"`
		Generation uint32 `json:"generation"`
		Mechanisms []struct {
			Type      string `json:"type"`
			Enrolled  bool   `json:"enrolled"`
			Healthy   *bool  `json:"healthy"`
			LastUsed  bool   `json:"last_used"`
			Error     string `json:"error"`
			Threshold int    `json:"threshold"`
			Shares    int    `json:"shares"`
			Progress  int    `json:"progress"`
		} `json:"mechanisms"`
	} `json:"seal"`
	Geo *struct {
		Site          string `json:"site"`
		PrimarySite   string `json:"primary_site"`
		PrimarySource string `json:"primary_source"`
		TopologyError string `json:"topology_error"`
		Reconciler    string `json:"reconciler"`
		Fenced        string `json:"fenced"`
		Epoch         struct {
			Number    uint64 `json:"number"`
			Site      string `json:"site"`
			Survivors []struct {
				Node      string `json:"node"`
				LastIndex uint64 `json:"last_index"`
			} `json:"survivors"`
		} `json:"epoch"`
		RPO *struct {
			KeptIndex         uint64  `json:"kept_index"`
			KeptBy            string  `json:"kept_by"`
			NewestIndex       uint64  `json:"newest_index"`
			LostEntriesAtMost uint64  `json:"lost_entries_at_most"`
			LostSeconds       float64 `json:"lost_seconds"`
		} `json:"rpo"`
		Nodes []struct {
			ID           string `json:"id"`
			Site         string `json:"site"`
			DesiredVoter bool   `json:"desired_voter"`
			InRaft       bool   `json:"in_raft"`
			Voter        bool   `json:"voter"`
			Leader       bool   `json:"leader"`
			Lag          uint64 `json:"lag"`
			Epoch        uint64 `json:"epoch"`
		} `json:"nodes"`
	} `json:"geo"`
	Snapshots *struct {
		Directory string `json:"directory"`
		Kept      int    `json:"kept"`
		Last      *struct {
			File  string `json:"file"`
			Index uint64 `json:"index"`
			Error string `json:"error"`
		} `json:"last"`
		LastSuccess *struct {
			File  string `json:"file"`
			Index uint64 `json:"index"`
		} `json:"last_success"`
	} `json:"snapshots"`
}

// singleNode writes a config for one loopback node with a file audit
// device and returns the config path and the API URL.
func singleNode(t *testing.T) (cfg, addr, dir string) {
	t.Helper()
	dir = t.TempDir()
	listen := harness.FreeAddr(t, "127.0.0.1")
	cfg = filepath.Join(dir, "appliance.hcl")
	src := fmt.Sprintf(`node_id  = "node-1"
data_dir = %q
listener {
  address     = %q
  tls_disable = true
}
audit "file" {
  options = { file_path = %q }
}
`, filepath.Join(dir, "data"), listen, filepath.Join(dir, "audit.log"))
	if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, "http://" + listen, dir
}

// tryStatus is status for a node that may not answer (paused, killed).
func tryStatus(t *testing.T, tr *harness.Transcript, bin, addr string) (statusOutput, bool) {
	t.Helper()
	out, _, _ := harness.Run(t, tr, nil, bin, "status", "--format", "json", "--address", addr)
	var st statusOutput
	return st, json.Unmarshal([]byte(out), &st) == nil
}

func status(t *testing.T, tr *harness.Transcript, bin, addr string) (statusOutput, int) {
	t.Helper()
	out, errOut, code := harness.Run(t, tr, nil, bin, "status", "--format", "json", "--address", addr)
	var st statusOutput
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --format json printed %q (stderr %q): %v", out, errOut, err)
	}
	return st, code
}

func unsealWith(t *testing.T, tr *harness.Transcript, bin, addr string, shares []string) {
	t.Helper()
	submitShares(t, tr, bin, addr, shares...)
	waitState(t, tr, bin, addr, "active")
}

func apiClient(t *testing.T, addr, token string) *api.Client {
	t.Helper()
	conf := api.DefaultConfig()
	conf.Address = addr
	c, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	return c
}

// The built binary, driven only through its CLI and API: init, unseal,
// status, and a restart that keeps the data.
func TestCLIInitUnsealStatusRestart(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	cfg, addr, dir := singleNode(t)
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)

	st, code := status(t, tr, bin, addr)
	if code != 2 || st.Initialized || st.State != "uninitialized" || st.NodeID != "node-1" {
		t.Fatalf("fresh node: exit %d, %+v", code, st)
	}

	// init prints the shares: the one place the operator asked for them,
	// so its output stays out of the transcript that is scanned below.
	initTr := &harness.Transcript{}
	out, errOut, code := harness.Run(t, initTr, nil, bin, "init", "--shares", "3", "--threshold", "2", "--format", "json", "--address", addr)
	if code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut)
	}
	var res initOutput
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Shares) != 3 || res.Threshold != 2 || res.RootToken == "" {
		t.Fatalf("init output %q: %v", out, err)
	}
	if _, errOut, code := harness.Run(t, tr, nil, bin, "init", "--address", addr); code != 1 || !strings.Contains(errOut, "already initialized") {
		t.Fatalf("second init: exit %d: %s", code, errOut)
	}

	// The node unsealed itself with the key init made.
	harness.Eventually(t, time.Minute, "the node to become active after init", func() bool {
		st, code := status(t, tr, bin, addr)
		return code == 0 && st.State == "active"
	})
	const secretValue = "hunter2-e7c1f0"
	c := apiClient(t, addr, res.RootToken)
	harness.MountKVv2(t, c, "secret")
	if _, err := c.KVv2("secret").Put(context.Background(), "db", map[string]interface{}{"password": secretValue}); err != nil {
		t.Fatal(err)
	}

	if code := n.Signal(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("SIGTERM: exit code %d\n%s", code, n.Output)
	}
	n = harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	st, code = status(t, tr, bin, addr)
	if code != 2 || st.State != "sealed" || st.Seal.Mechanisms[0].Threshold != 2 || st.Seal.Mechanisms[0].Shares != 3 {
		t.Fatalf("restarted: exit %d %+v", code, st)
	}
	// A share on the command line is refused before it goes anywhere.
	if _, errOut, code := harness.Run(t, tr, nil, bin, "unseal", "--address", addr, "c2hhcmU="); code != 64 || !strings.Contains(errOut, "takes no arguments") {
		t.Fatalf("share in argv: exit %d: %s", code, errOut)
	}
	out, _, code = harness.Run(t, tr, []byte(res.Shares[2]+"\n"), bin, "unseal", "--address", addr)
	if code != 0 || !strings.Contains(out, "1 of 2 submitted") {
		t.Fatalf("first share: exit %d: %s", code, out)
	}
	if _, errOut, code := harness.Run(t, tr, []byte(res.Shares[2]+"\n"), bin, "unseal", "--address", addr); code != 1 || !strings.Contains(errOut, "already submitted") {
		t.Fatalf("duplicate share: exit %d: %s", code, errOut)
	}
	if _, errOut, code := harness.Run(t, tr, []byte("garbage!\n"), bin, "unseal", "--address", addr); code != 1 || !strings.Contains(errOut, "malformed") {
		t.Fatalf("malformed share: exit %d: %s", code, errOut)
	}
	st, _ = status(t, tr, bin, addr)
	if st.Seal.Mechanisms[0].Progress != 1 {
		t.Fatalf("progress after refused shares: %+v", st)
	}
	unsealWith(t, tr, bin, addr, res.Shares[:1])
	got, err := c.KVv2("secret").Get(context.Background(), "db")
	if err != nil || got.Data["password"] != secretValue {
		t.Fatalf("after restart: %v %+v", err, got)
	}
	if code := n.Signal(t, syscall.SIGINT, time.Minute); code != 0 {
		t.Fatalf("SIGINT: exit code %d", code)
	}

	audit, err := os.ReadFile(filepath.Join(dir, "audit.log"))
	if err != nil || !strings.Contains(string(audit), "secret/data/db") {
		t.Fatalf("audit log missing the request: %v", err)
	}
	scanForSecrets(t, tr.String()+string(audit), append(append([]string{secretValue, res.RootToken}, res.Shares...), res.RecoveryKeys...))
}

// SIGTERM in the middle of a write load: every write the API acknowledged
// is there after a restart.
func TestSIGTERMKeepsAcknowledgedWrites(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	cfg, addr, _ := singleNode(t)
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	out, _, code := harness.Run(t, &harness.Transcript{}, nil, bin, "init", "--shares", "1", "--threshold", "1", "--format", "json", "--address", addr)
	var res initOutput
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("init: exit %d", code)
	}
	unsealWith(t, tr, bin, addr, nil)
	c := apiClient(t, addr, res.RootToken)
	c.SetMaxRetries(0)
	harness.MountKVv2(t, c, "kv")

	var (
		mu    sync.Mutex
		acked = map[string]string{}
		count atomic.Int64
		wg    sync.WaitGroup
	)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				key, val := fmt.Sprintf("w%d/k%d", g, i), fmt.Sprintf("v-%d-%d", g, i)
				if _, err := c.KVv2("kv").Put(context.Background(), key, map[string]interface{}{"v": val}); err != nil {
					return // the node is going away
				}
				mu.Lock()
				acked[key] = val
				mu.Unlock()
				count.Add(1)
			}
		}()
	}
	harness.Eventually(t, 2*time.Minute, "200 acknowledged writes", func() bool { return count.Load() >= 200 })
	if code := n.Signal(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("SIGTERM under load: exit code %d\n%s", code, n.Output)
	}
	wg.Wait()

	n = harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	unsealWith(t, tr, bin, addr, res.Shares)
	for key, val := range acked {
		got, err := c.KVv2("kv").Get(context.Background(), key)
		if err != nil || got.Data["v"] != val {
			t.Fatalf("acknowledged write %s lost after SIGTERM and restart: %v", key, err)
		}
	}
	t.Logf("%d acknowledged writes all present after SIGTERM and restart", len(acked))
}

// Bad config files: each its own message, exit code 3, nothing started.
func TestBadConfigFilesExitWithTheirMessage(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	cases := []struct{ name, src, want string }{
		{"unknown.hcl", fmt.Sprintf("node_id = \"n\"\ndata_dir = %q\nstorage \"raft\" {}\n", data), "storage: unknown key (line 3)"},
		{"missing.hcl", "listener {\n address = \"127.0.0.1:8200\"\n tls_disable = true\n}\n", "node_id: missing"},
		{"address.hcl", fmt.Sprintf("node_id = \"n\"\ndata_dir = %q\nlistener {\n address = \"127.0.0.1\"\n tls_disable = true\n}\n", data), "listener[0].address: \"127.0.0.1\" is not host:port"},
		{"cert.hcl", fmt.Sprintf("node_id = \"n\"\ndata_dir = %q\nlistener {\n address = \"0.0.0.0:8200\"\n tls_cert_file = \"/nonexistent/cert.pem\"\n tls_key_file = \"/nonexistent/key.pem\"\n}\n", data), "listener[0].tls_cert_file: cannot read /nonexistent/cert.pem"},
		{"perms.hcl", fmt.Sprintf("node_id = \"n\"\ndata_dir = %q\n", open), "unsafe permissions 0777"},
		{"syntax.json", `{"node_id": "n",}`, "Trailing comma in object (line 1)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(dir, tc.name)
			os.WriteFile(f, []byte(tc.src), 0o600)
			_, errOut, code := harness.Run(t, tr, nil, bin, "config", "validate", f)
			if code != 3 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("config validate: exit %d, want 3 and %q in:\n%s", code, tc.want, errOut)
			}
			_, errOut, code = harness.Run(t, tr, nil, bin, "server", "--config", f)
			if code != 3 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("server: exit %d, want 3 and %q in:\n%s", code, tc.want, errOut)
			}
		})
	}
	if _, errOut, code := harness.Run(t, tr, nil, bin, "server", "--config", filepath.Join(dir, "absent.hcl")); code != 3 || !strings.Contains(errOut, "cannot read the config file: no such file or directory") {
		t.Fatalf("absent config: exit %d: %s", code, errOut)
	}
	out, _, code := harness.Run(t, tr, nil, bin, "config", "validate", "--format", "json", filepath.Join(dir, "missing.hcl"))
	var v struct {
		Valid    bool `json:"valid"`
		Problems []struct{ Key, Message string }
	}
	if code != 3 || json.Unmarshal([]byte(out), &v) != nil || v.Valid || len(v.Problems) != 2 {
		t.Fatalf("validate --format json: exit %d: %s", code, out)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("a refused config created the data dir: %v", err)
	}
}

// SIGHUP reloads the config file: a broken file is refused and the node
// runs on; a valid one adds an audit device without a restart.
func TestSIGHUPReloads(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	cfg, addr, dir := singleNode(t)
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	res := initCluster(t, bin, addr, "--shares", "1", "--threshold", "1")
	waitState(t, tr, bin, addr, "active")
	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}

	os.WriteFile(cfg, append(append([]byte{}, good...), []byte("colour = \"red\"\n")...), 0o600)
	n.Notify(syscall.SIGHUP)
	harness.Eventually(t, time.Minute, "the refusal of a broken config", func() bool {
		return strings.Contains(n.Output.String(), "Reload refused, the node runs on") && strings.Contains(n.Output.String(), "colour: unknown key")
	})
	if _, code := status(t, tr, bin, addr); code != 0 || n.Exited() {
		t.Fatalf("the node stopped serving after a refused reload: exit %d", code)
	}

	second := filepath.Join(dir, "audit2.log")
	os.WriteFile(cfg, append(append([]byte{}, good...), []byte(fmt.Sprintf("audit \"file\" {\n  path = \"second\"\n  options = { file_path = %q }\n}\n", second))...), 0o600)
	n.Notify(syscall.SIGHUP)
	c := apiClient(t, addr, res.RootToken)
	harness.Eventually(t, time.Minute, "the second audit device to log a request", func() bool {
		c.Auth().Token().LookupSelf()
		b, _ := os.ReadFile(second)
		return strings.Contains(string(b), "auth/token/lookup-self")
	})
	if code := n.Signal(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}
