package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/testpki"
)

func TestParseFullConfigHCLAndJSON(t *testing.T) {
	dir := t.TempDir()
	cert, key := testpki.WriteCert(t, dir)
	data := filepath.Join(dir, "data")
	hclSrc := `
node_id   = "gitlab-1"
data_dir  = "` + data + `"
api_addr  = "https://gitlab-1.example.com:8200"
log_level = "debug"
log_format = "json"

listener {
  address       = "0.0.0.0:8200"
  tls_cert_file = "` + cert + `"
  tls_key_file  = "` + key + `"
  x_forwarded_for_authorized_addrs = ["10.0.0.0/8"]
}
cluster { address = "0.0.0.0:8201" }
raft {
  performance_multiplier = 2
  retry_join { leader_api_addr = "https://gitlab-2.example.com:8200" }
}
audit "file" {
  options = { file_path = "` + filepath.Join(dir, "audit.log") + `" }
}
telemetry { prometheus_retention_time = "24h" }
seal {
  shamir {
    shares    = 7
    threshold = 4
  }
}
`
	jsonSrc := `{
  "node_id": "gitlab-1", "data_dir": "` + data + `",
  "api_addr": "https://gitlab-1.example.com:8200",
  "log_level": "debug", "log_format": "json",
  "listener": [{"address": "0.0.0.0:8200", "tls_cert_file": "` + cert + `", "tls_key_file": "` + key + `",
                "x_forwarded_for_authorized_addrs": ["10.0.0.0/8"]}],
  "cluster": {"address": "0.0.0.0:8201"},
  "raft": {"performance_multiplier": 2, "retry_join": [{"leader_api_addr": "https://gitlab-2.example.com:8200"}]},
  "audit": {"file": {"options": {"file_path": "` + filepath.Join(dir, "audit.log") + `"}}},
  "telemetry": {"prometheus_retention_time": "24h"},
  "seal": {"shamir": {"shares": 7, "threshold": 4}}
}`
	for name, src := range map[string]string{"appliance.hcl": hclSrc, "appliance.json": jsonSrc} {
		t.Run(name, func(t *testing.T) {
			c, err := Parse([]byte(src), name)
			if err != nil {
				t.Fatal(err)
			}
			if c.NodeID != "gitlab-1" || c.LogFormat != "json" || c.Listeners[0].TLSMinVersion != "tls12" ||
				c.Raft.PerformanceMultiplier != 2 || c.Raft.RetryJoin[0].LeaderAPIAddr != "https://gitlab-2.example.com:8200" ||
				c.Audit[0].Type != "file" || c.Audit[0].Path != "file" || c.Seal.Shamir.Threshold != 4 ||
				c.Telemetry.PrometheusRetentionTime != "24h" || c.Cluster.Address != "0.0.0.0:8201" {
				t.Fatalf("parsed config: %+v", c)
			}
		})
	}
}

func TestMinimalConfigTakesDefaults(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	c, err := Parse([]byte(`node_id = "n1"
data_dir = "`+data+`"`), "min.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listeners[0].Address != DefaultAPIAddress || !c.Listeners[0].TLSDisable || c.Cluster.Address != "127.0.0.1:8201" ||
		c.LogLevel != "info" || c.Raft.PerformanceMultiplier != 1 || c.Raft.HeartbeatTimeout != "500ms" || c.Seal.Shamir.Shares != 5 || c.Seal.Shamir.Threshold != 3 {
		t.Fatalf("defaults: %+v", c)
	}
}

// Each bad config yields its own message naming the key.
func TestBadConfigs(t *testing.T) {
	dir := t.TempDir()
	cert, key := testpki.WriteCert(t, dir)
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	data := filepath.Join(dir, "data")
	base := "node_id = \"n1\"\ndata_dir = \"" + data + "\"\n"
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o644)
	cases := []struct {
		name, file, src string
		key, want       string
	}{
		{"unknown key", "c.hcl", base + "listner { address = \"127.0.0.1:8200\" }", "listner", "unknown key (line 3); Did you mean \"listener\"?"},
		{"unknown nested key", "c.hcl", base + "listener {\n  adress = \"127.0.0.1:8200\"\n}", "listener[0].adress", "unknown key (line 4)"},
		{"unknown key json", "c.json", `{"node_id":"n1","data_dir":"` + data + `","colour":"red"}`, "colour", "unknown key (line 1)"},
		{"missing node id", "c.hcl", "data_dir = \"" + data + "\"", "node_id", "missing; set a name"},
		{"missing data dir", "c.hcl", "node_id = \"n1\"", "data_dir", "missing; set the directory"},
		{"bad node id", "c.hcl", "node_id = \"no spaces\"\ndata_dir = \"" + data + "\"", "node_id", "is not a valid node id"},
		{"unsafe data dir", "c.hcl", "node_id = \"n1\"\ndata_dir = \"" + open + "\"", "data_dir", "unsafe permissions 0777"},
		{"data dir parent missing", "c.hcl", "node_id = \"n1\"\ndata_dir = \"/nonexistent/x/y\"", "data_dir", "neither does its parent"},
		{"bad address", "c.hcl", base + "listener {\n address = \"localhost\"\n tls_disable = true\n}", "listener[0].address", "is not host:port"},
		{"bad port", "c.hcl", base + "listener {\n address = \"127.0.0.1:99999\"\n tls_disable = true\n}", "listener[0].address", "invalid port"},
		{"plain http off loopback", "c.hcl", base + "listener {\n address = \"0.0.0.0:8200\"\n tls_disable = true\n}", "listener[0].tls_disable", "loopback addresses only"},
		{"no cert", "c.hcl", base + "listener { address = \"0.0.0.0:8200\" }", "listener[0]", "no TLS certificate"},
		{"unreadable cert", "c.hcl", base + "listener {\n address = \"0.0.0.0:8200\"\n tls_cert_file = \"/nonexistent.pem\"\n tls_key_file = \"" + key + "\"\n}", "listener[0].tls_cert_file", "cannot read /nonexistent.pem: no such file or directory"},
		{"garbage cert", "c.hcl", base + "listener {\n address = \"0.0.0.0:8200\"\n tls_cert_file = \"" + garbage + "\"\n tls_key_file = \"" + key + "\"\n}", "listener[0].tls_cert_file", "not a usable certificate and key pair"},
		{"key without cert", "c.hcl", base + "listener {\n address = \"0.0.0.0:8200\"\n tls_key_file = \"" + key + "\"\n}", "listener[0].tls_cert_file", "missing; tls_key_file is set"},
		{"bad api addr", "c.hcl", base + "api_addr = \"gitlab-1:8200\"", "api_addr", "is not a URL"},
		{"http cluster addr", "c.hcl", base + "cluster_addr = \"http://127.0.0.1:8201\"", "cluster_addr", "has scheme \"http\"; use [https]"},
		{"bad log level", "c.hcl", base + "log_level = \"loud\"", "log_level", "\"loud\" is not a log level"},
		{"same cluster and api port", "c.hcl", base + "cluster { address = \"127.0.0.1:8200\" }", "cluster.address", "already used by listener[0]"},
		{"bad audit type", "c.hcl", base + "audit \"kafka\" {}", "audit[0].type", "not an audit device type"},
		{"audit without path", "c.hcl", base + "audit \"file\" {}", "audit[0].options.file_path", "missing"},
		{"bad retention", "c.hcl", base + "telemetry { prometheus_retention_time = \"forever\" }", "telemetry.prometheus_retention_time", "not a positive duration"},
		{"threshold above shares", "c.hcl", base + "seal {\n shamir {\n shares = 3\n threshold = 4\n }\n}", "seal.shamir.threshold", "out of range"},
		{"non voter without join", "c.hcl", base + "raft { non_voter = true }", "raft.non_voter", "add a retry_join block"},
		{"gitlab without keys", "c.hcl", base + "gitlab {\n url = \"https://gitlab.example.com\"\n audience = \"https://gsa:8200\"\n}", "gitlab", "no keys: set jwks_url"},
		{"gitlab without audience", "c.hcl", base + "gitlab {\n url = \"https://gitlab.example.com\"\n jwks_url = \"https://gitlab.example.com/oauth/discovery/keys\"\n}", "gitlab.audience", "missing"},
		{"gitlab private key as public", "c.hcl", base + "gitlab {\n url = \"https://g.example.com\"\n audience = \"https://gsa:8200\"\n jwt_validation_pubkeys_file = \"" + key + "\"\n}", "gitlab.jwt_validation_pubkeys_file", "never a private key"},
		{"gitlab ttl above max", "c.hcl", base + "gitlab {\n url = \"https://g.example.com\"\n audience = \"https://gsa:8200\"\n jwks_url = \"https://g.example.com/k\"\n token_ttl = \"1h\"\n}", "gitlab.token_ttl", "longer than token_max_ttl"},
		{"wrong type", "c.hcl", base + "raft { performance_multiplier = \"fast\" }", "raft.performance_multiplier", "wrong type (line 3): a number is required"},
		{"heartbeat below the lease", "c.hcl", base + "raft { heartbeat_timeout = \"200ms\" }", "raft.heartbeat_timeout", "out of range; use 500ms"},
		{"heartbeat below a slower lease", "c.hcl", base + "raft {\n performance_multiplier = 3\n heartbeat_timeout = \"1s\"\n}", "raft.heartbeat_timeout", "use 1.5s"},
		{"heartbeat not a duration", "c.hcl", base + "raft { heartbeat_timeout = \"soon\" }", "raft.heartbeat_timeout", "not a duration"},
		{"syntax error", "c.hcl", base + "listener {", "", "Unclosed configuration block"},
		{"snapshot interval", "c.hcl", base + "snapshot { interval = \"10ms\" }", "snapshot.interval", "at least 1s"},
		{"snapshot retain_age", "c.hcl", base + "snapshot { retain_age = \"forever\" }", "snapshot.retain_age", "not a positive duration"},
		{"snapshot retain_count", "c.hcl", base + "snapshot { retain_count = -1 }", "snapshot.retain_count", "negative"},
		{"snapshot directory relative", "c.hcl", base + "snapshot { directory = \"snaps\" }", "snapshot.directory", "not an absolute path"},
		{"snapshot directory in Raft's", "c.hcl", base + "snapshot { directory = \"" + data + "/raft/snaps\" }", "snapshot.directory", "inside Raft's own directory"},
	}
	_ = cert
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src), tc.file)
			var ce *ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("want a *ConfigError, got %v", err)
			}
			for _, p := range ce.Problems {
				if p.Key == tc.key && strings.Contains(p.Message, tc.want) {
					return
				}
			}
			t.Fatalf("no problem %s: ...%s...; got:\n%v", tc.key, tc.want, err)
		})
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	_, err := Parse([]byte(`
node_id = "bad id"
log_level = "loud"
colour = "red"
listener {
  address = "0.0.0.0:8200"
  tls_disable = true
}`), "many.hcl")
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, p := range ce.Problems {
		keys[p.Key] = true
	}
	for _, k := range []string{"colour", "node_id", "data_dir", "log_level", "listener[0].tls_disable"} {
		if !keys[k] {
			t.Errorf("problem for %s missing from:\n%v", k, err)
		}
	}
	if !strings.HasPrefix(err.Error(), "config file many.hcl has 5 problem(s):") {
		t.Errorf("message: %s", err)
	}
}

// A value of the wrong type names its key with the block path, in HCL and
// in JSON, as Validate names keys.
func TestConfigTypeErrorsNameTheKey(t *testing.T) {
	cases := []struct{ name, file, src, key, want string }{
		{"number", "c.hcl", "seal {\n  shamir {\n    shares = \"five\"\n  }\n}", "seal.shamir.shares", "wrong type (line 3): a number is required"},
		{"bool in the second listener", "c.hcl", "listener {}\nlistener {\n  tls_disable = \"maybe\"\n}", "listener[1].tls_disable", "wrong type (line 3): a bool is required"},
		{"string", "c.hcl", "node_id = [1]", "node_id", "wrong type (line 1): string required"},
		{"null", "c.hcl", "data_dir = null", "data_dir", "wrong type (line 1): null value is not allowed"},
		{"map", "c.hcl", "audit \"file\" {\n  options = \"x\"\n}", "audit[0].options", "wrong type (line 2): map of string required"},
		{"list element", "c.hcl", "listener {\n  x_forwarded_for_authorized_addrs = [[1]]\n}", "listener[0].x_forwarded_for_authorized_addrs", "element 0: string required"},
		{"nested repeated block", "c.hcl", "raft {\n  retry_join {}\n  retry_join { leader_api_addr = {} }\n}", "raft.retry_join[1].leader_api_addr", "wrong type (line 3)"},
		{"slot", "c.hcl", "seal {\n  pkcs11 { slot = \"first\" }\n}", "seal.pkcs11.slot", "a number is required"},
		{"block as attribute", "c.hcl", "raft {\n  retry_join = 1\n}", "raft.retry_join", "unknown key (line 2); Did you mean to define a block"},
		{"missing label", "c.hcl", "audit {}", "audit", "Missing type for audit"},
		{"twice", "c.hcl", "cluster {}\ncluster {}", "cluster", "Duplicate cluster block (line 2)"},
		{"json number", "c.json", `{"seal": {"shamir": {"shares": "five"}}}`, "seal.shamir.shares", "wrong type (line 1): a number is required"},
		{"json bool in the second listener", "c.json", `{"listener": [{}, {"tls_disable": "maybe"}]}`, "listener[1].tls_disable", "a bool is required"},
		{"json single listener object", "c.json", `{"listener": {"tls_disable": "maybe"}}`, "listener[0].tls_disable", "a bool is required"},
		{"json labelled blocks", "c.json", "{\"audit\": {\"file\": {},\n \"socket\": {\"options\": {\"a\": [1]}}}}", "audit[1].options", "wrong type (line 2): element \"a\": string required"},
		{"json block as string", "c.json", `{"raft": {"retry_join": 1}}`, "raft.retry_join", "wrong type (line 1): a block is a JSON object"},
		{"json unknown nested key", "c.json", `{"raft": {"retry_join": [{}, {"x": 2}]}}`, "raft.retry_join[1].x", "unknown key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range configProblems(t, tc.src, tc.file) {
				if p.Key == tc.key && strings.Contains(p.Message, tc.want) {
					return
				}
				if p.Key == "" {
					t.Errorf("a problem names no key: %s", p.Message)
				}
			}
			t.Fatalf("no problem %s: ...%s...; got %v", tc.key, tc.want, configProblems(t, tc.src, tc.file))
		})
	}
}

// A TLS private key others can read is refused, naming the key and the
// fix; group-readable keys are fine, and certificates and CA files may be
// world-readable.
func TestPrivateKeyPermissions(t *testing.T) {
	dir := t.TempDir()
	cert, key := testpki.WriteCert(t, dir) // cert 0644, key 0600
	data := filepath.Join(dir, "data")
	src := func(keyFile string) string {
		return "node_id = \"n1\"\ndata_dir = \"" + data + "\"\n" +
			"listener {\n address = \"0.0.0.0:8200\"\n tls_cert_file = \"" + cert + "\"\n tls_key_file = \"" + keyFile + "\"\n" +
			" tls_client_ca_file = \"" + cert + "\"\n}\n" +
			"raft {\n retry_join {\n  leader_api_addr = \"https://127.0.0.1:8200\"\n  leader_ca_cert_file = \"" + cert + "\"\n" +
			"  leader_client_cert_file = \"" + cert + "\"\n  leader_client_key_file = \"" + keyFile + "\"\n }\n}\n"
	}
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o600, true}, {0o640, true}, {0o400, true}, {0o644, false}, {0o604, false}, {0o660, false}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			if err := os.Chmod(key, tc.mode); err != nil {
				t.Fatal(err)
			}
			problems := configProblems(t, src(key), "c.hcl")
			if tc.ok {
				if len(problems) > 0 {
					t.Fatalf("mode %04o refused: %v", tc.mode, problems)
				}
				return
			}
			want := key + " holds a private key but has unsafe permissions " + fmt.Sprintf("%04o", tc.mode) + ": others must have no access and the group read access at most; run chmod 0600 " + key
			keys := map[string]bool{}
			for _, p := range problems {
				if strings.Contains(p.Message, want) {
					keys[p.Key] = true
				} else {
					t.Errorf("unexpected problem %v", p)
				}
			}
			if !keys["listener[0].tls_key_file"] || !keys["raft.retry_join[0].leader_client_key_file"] || len(keys) != 2 {
				t.Fatalf("want listener[0].tls_key_file and raft.retry_join[0].leader_client_key_file refused, got %v", problems)
			}
		})
	}
}

// Files the config names are read in full later: one that is not a
// regular file (a device that never ends, a FIFO that blocks) is refused.
func TestNamedFilesMustBeRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "ca.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	base := "node_id = \"n1\"\ndata_dir = \"" + filepath.Join(dir, "data") + "\"\n"
	for name, file := range map[string]string{"device": "/dev/zero", "fifo": fifo} {
		t.Run(name, func(t *testing.T) {
			src := base + "raft {\n retry_join {\n  leader_api_addr = \"https://127.0.0.1:8200\"\n  leader_ca_cert_file = \"" + file + "\"\n }\n}\n"
			problems := configProblems(t, src, "c.hcl")
			if len(problems) != 1 || problems[0].Key != "raft.retry_join[0].leader_ca_cert_file" || !strings.Contains(problems[0].Message, "not a regular file") {
				t.Fatalf("got %v", problems)
			}
		})
	}
}

// Diff names what changed as the file names it: nested blocks by their
// path, repeated blocks by their index, a block added or removed whole.
func TestDiff(t *testing.T) {
	a := NewConfig()
	a.NodeID, a.DataDir = "n1", "/d"
	a.LogOutput = os.Stderr // not a file key
	b := NewConfig()
	b.NodeID, b.DataDir = "n1", "/d"
	if d := Diff(a, b); len(d) != 0 {
		t.Fatalf("equal configs differ in %v", d)
	}
	b.Seal = &Seal{Shamir: &ShamirSeal{Shares: 7, Threshold: a.Seal.Shamir.Threshold}}
	b.Listeners = append(slices.Clone(a.Listeners), Listener{Address: "127.0.0.1:9"})
	b.Listeners[0].Address = "127.0.0.2:8200"
	b.Raft = nil
	got := Diff(a, b)
	want := []string{"listener[0].address", "listener[1]", "raft", "seal.shamir.shares"}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("Diff = %v, want %v", got, want)
	}
}
