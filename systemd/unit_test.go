package systemd_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const unitFile = "gitlab-secrets-appliance.service"

// unit is a parsed unit file: section -> key -> every value given, in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		case strings.Contains(line, "=") && section != "":
			k, v, _ := strings.Cut(line, "=")
			u[section][k] = append(u[section][k], v)
		default:
			t.Fatalf("%s:%d: not a section, an assignment or a comment: %q", path, n, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// The settings the appliance relies on, each as docs/operations/systemd.md
// documents it (The unit).
func TestUnitSettings(t *testing.T) {
	u := parseUnit(t, unitFile)
	want := map[string]map[string]string{
		"Unit": {"After": "network-online.target", "Wants": "network-online.target"},
		"Service": {
			"Type":                     "notify",
			"NotifyAccess":             "main",
			"ExecStart":                "/usr/bin/gitlab-secrets-appliance server --config /etc/gitlab-secrets-appliance/appliance.hcl",
			"ExecReload":               "/bin/kill -HUP $MAINPID",
			"User":                     "gitlab-secrets-appliance",
			"Group":                    "gitlab-secrets-appliance",
			"WatchdogSec":              "2min",
			"Restart":                  "on-failure",
			"RestartPreventExitStatus": "3 5",
			"TimeoutStartSec":          "5min",
			"TimeoutStopSec":           "60s",
			"ProtectSystem":            "strict",
			"ReadWritePaths":           "/var/lib/gitlab-secrets-appliance /var/log/gitlab-secrets-appliance",
			"StateDirectory":           "gitlab-secrets-appliance",
			"StateDirectoryMode":       "0700",
			"UMask":                    "0077",
			"LimitCORE":                "0",
			"NoNewPrivileges":          "yes",
			"PrivateTmp":               "yes",
			"PrivateDevices":           "yes",
			"ProtectHome":              "yes",
			"CapabilityBoundingSet":    "",
			"AmbientCapabilities":      "",
			"RestrictAddressFamilies":  "AF_UNIX AF_INET AF_INET6",
			"MemoryDenyWriteExecute":   "yes",
			"LockPersonality":          "yes",
			"RestrictRealtime":         "yes",
			"RestrictNamespaces":       "yes",
			"ProtectKernelTunables":    "yes",
			"ProtectKernelModules":     "yes",
			"ProtectKernelLogs":        "yes",
			"ProtectControlGroups":     "yes",
			"ProtectClock":             "yes",
			"ProtectHostname":          "yes",
			"SystemCallArchitectures":  "native",
			"SystemCallErrorNumber":    "EPERM",
		},
		"Install": {"WantedBy": "multi-user.target"},
	}
	for section, keys := range want {
		for k, v := range keys {
			got := u[section][k]
			if len(got) != 1 || got[0] != v {
				t.Errorf("[%s] %s = %q, want exactly %q", section, k, got, v)
			}
		}
	}
	if got := u["Service"]["SystemCallFilter"]; !slices.Equal(got, []string{"@system-service", "~@privileged @resources"}) {
		t.Errorf("[Service] SystemCallFilter = %q, want @system-service without @privileged and @resources", got)
	}
	// The drain (10 s) and Raft's close fit in the stop timeout.
	if stop := seconds(t, u["Service"]["TimeoutStopSec"][0]); stop < 30 {
		t.Errorf("TimeoutStopSec %ds leaves too little for a 10 s drain and Raft's close", stop)
	}
}

func seconds(t *testing.T, v string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSuffix(v, "s"))
	if err != nil {
		t.Fatalf("%q is not a number of seconds", v)
	}
	return n
}

// systemdAnalyze runs systemd-analyze, or skips where it is missing.
func systemdAnalyze(t *testing.T, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd)")
	}
	out, err := exec.Command("systemd-analyze", args...).CombinedOutput()
	return string(out), err
}

// verifiableCopy is the unit with ExecStart's binary replaced by one that
// exists here (verify insists that it does); nothing else changes.
func verifiableCopy(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const bin = "ExecStart=/usr/bin/gitlab-secrets-appliance "
	if !strings.Contains(string(src), bin) {
		t.Fatalf("%s has no %q line", unitFile, bin)
	}
	dst := filepath.Join(t.TempDir(), unitFile)
	if err := os.WriteFile(dst, []byte(strings.Replace(string(src), bin, "ExecStart="+self+" ", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// systemd-analyze verify accepts the unit without a word: no unknown
// keys, bad values or missing commands.
func TestUnitVerifies(t *testing.T) {
	out, err := systemdAnalyze(t, "verify", verifiableCopy(t))
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// MaxExposure is the highest `systemd-analyze security` exposure accepted:
// below 2.0 is rated "OK".
const MaxExposure = 2.0

var exposureLine = regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+) (\S+)`)

// The unit's exposure, as systemd-analyze security rates it offline.
func TestUnitSecurityExposure(t *testing.T) {
	out, err := systemdAnalyze(t, "security", "--offline=yes", "--no-pager", verifiableCopy(t))
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := exposureLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure level in:\n%s", out)
	}
	score, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security --offline=yes: exposure %.1f %s", score, m[2])
	if score >= MaxExposure {
		t.Fatalf("exposure %.1f %s, want below %.1f:\n%s", score, m[2], MaxExposure, out)
	}
}
