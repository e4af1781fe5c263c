package test

// Helpers for the Omnibus tests (omnibus_test.go): a node "installed" by
// the cookbook in packaging/omnibus through its miniature reconfigure
// (packaging/omnibus/test/reconfigure.rb, real Ruby and ERB), its runit
// service started from the rendered run and log/run scripts, and the
// gitlab-ctl commands run through packaging/omnibus/test/gitlab_ctl.rb.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// omnibusDir is packaging/omnibus of this checkout (tests run in test/).
func omnibusDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "packaging", "omnibus"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func cookbookDir(t *testing.T) string {
	return filepath.Join(omnibusDir(t), "files", "gitlab-cookbooks", "gitlab-secrets-appliance")
}

func ctlCommandsDir(t *testing.T) string {
	return filepath.Join(omnibusDir(t), "files", "gitlab-ctl-commands-ee")
}

// needRuby fails (not skips) without Ruby: `make test` installs it
// (scripts/test-deps.sh).
func needRuby(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"ruby", "erb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run scripts/test-deps.sh (make test does)", tool)
		}
	}
}

// account is the service user and group the cookbook is told to use: as
// root, nobody:nogroup, so that the service really runs unprivileged
// (chpst); otherwise the current user, whom nothing can switch from.
type account struct {
	User, Group string
	UID, GID    int
}

func serviceAccount(t *testing.T) account {
	t.Helper()
	var u *user.User
	var err error
	if os.Getuid() == 0 {
		u, err = user.Lookup("nobody")
	} else {
		u, err = user.Current()
	}
	if err != nil {
		t.Fatal(err)
	}
	gid := u.Gid
	g, err := user.LookupGroupId(gid)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gidN, _ := strconv.Atoi(gid)
	return account{User: u.Username, Group: g.Name, UID: uid, GID: gidN}
}

// omnibusNode is one GitLab node's file system, under a root directory
// that stands for / (paths are root+/var/opt/gitlab/..., and so on).
type omnibusNode struct {
	Root, Name, FQDN string
	Account          account
	InstallDir       string // /opt/gitlab
	SvDir            string // /opt/gitlab/sv
	Dir, DataDir     string // /var/opt/gitlab/gitlab-secrets-appliance[/data]
	LogDir, EnvDir   string
	PublicAttrs      string // /var/opt/gitlab/public_attributes.json
	// MetricsAddr is the loopback metrics listener's address
	// (metrics_listen_address), a free port per node.
	MetricsAddr string
	Report      reconfigureReport
	UpServices  []string // the services reconfigure finds running
	Cookbook    string   // the cookbook to converge, if not the repository's
}

type reconfigureReport struct {
	Recipe    string `json:"recipe"`
	Resources []struct {
		Type       string           `json:"type"`
		Name       string           `json:"name"`
		Properties map[string]any   `json:"properties"`
		Notifies   []map[string]any `json:"notifies"`
	} `json:"resources"`
	Warnings      []string         `json:"warnings"`
	ScrapeConfigs []map[string]any `json:"prometheus_scrape_configs"`
	// gitlab_rails['openbao'] after reconfigure.
	RailsOpenBao map[string]any `json:"gitlab_rails_openbao"`
	// AccountHelper's users and groups (gitlab-ctl remove-accounts).
	Accounts struct {
		Users  []string `json:"users"`
		Groups []string `json:"groups"`
	} `json:"accounts"`
	// The resources that changed something, and the delayed
	// notifications that ran (resource, action, target, result).
	Updated          []string            `json:"updated"`
	NotificationsRun []map[string]string `json:"notifications_run"`
	// What Omnibus' logrotate cookbook renders for the service.
	Logrotate struct {
		LogDirectory string         `json:"log_directory"`
		Options      map[string]any `json:"options"`
	} `json:"logrotate"`
}

// resource finds a declared resource by type and name.
func (r reconfigureReport) resource(t *testing.T, typ, name string) map[string]any {
	t.Helper()
	for _, x := range r.Resources {
		if x.Type == typ && x.Name == name {
			return x.Properties
		}
	}
	t.Fatalf("the recipe declares no %s[%s]", typ, name)
	return nil
}

// newOmnibusNode lays out a node's root: the appliance binary at
// /opt/gitlab/embedded/bin, every directory traversable by the service
// user, as on a real node.
func newOmnibusNode(t *testing.T, bin, name string) *omnibusNode {
	t.Helper()
	root, err := os.MkdirTemp("", "gsa-omnibus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	n := &omnibusNode{
		Root: root, Name: name, FQDN: name, Account: serviceAccount(t),
		InstallDir:  filepath.Join(root, "opt", "gitlab"),
		SvDir:       filepath.Join(root, "opt", "gitlab", "sv"),
		Dir:         filepath.Join(root, "var", "opt", "gitlab", "gitlab-secrets-appliance"),
		DataDir:     filepath.Join(root, "var", "opt", "gitlab", "gitlab-secrets-appliance", "data"),
		LogDir:      filepath.Join(root, "var", "log", "gitlab", "gitlab-secrets-appliance"),
		EnvDir:      filepath.Join(root, "opt", "gitlab", "etc", "gitlab-secrets-appliance", "env"),
		PublicAttrs: filepath.Join(root, "var", "opt", "gitlab", "public_attributes.json"),
		MetricsAddr: harness.FreeAddr(t, "127.0.0.1"),
	}
	for _, d := range []string{filepath.Join(n.InstallDir, "embedded", "bin"), n.SvDir, filepath.Dir(n.Dir),
		filepath.Dir(n.LogDir), filepath.Join(root, "etc", "gitlab", "ssl")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	chmodTree(t, root, 0o755)
	dst := n.binary()
	if err := os.Link(bin, dst); err != nil {
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	return n
}

// chmodTree sets mode on dir and each of its directories below it.
func chmodTree(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			os.Chmod(p, mode)
		}
		return nil
	})
}

func (n *omnibusNode) path(p string) string { return filepath.Join(n.Root, p) }

// ConfigFile is where the recipe renders appliance.json.
func (n *omnibusNode) ConfigFile() string { return filepath.Join(n.Dir, "appliance.json") }

// TopologyFile is where the recipe writes the Geo topology (the default
// geo['topology_file']).
func (n *omnibusNode) TopologyFile() string { return filepath.Join(n.Dir, "geo-topology.json") }

// GitlabClusterJSON is Omnibus' /etc/gitlab/gitlab-cluster.json;
// GeoClusterCopy is where reconfigure mirrors its Geo role for the
// service (the default geo['cluster_file']).
func (n *omnibusNode) GitlabClusterJSON() string { return n.path("etc/gitlab/gitlab-cluster.json") }
func (n *omnibusNode) GeoClusterCopy() string    { return filepath.Join(n.Dir, "geo-gitlab-cluster.json") }

// baseRB is the part of gitlab.rb every test node has: this node's paths
// under its root, and the service account.
func (n *omnibusNode) baseRB() string {
	return fmt.Sprintf(`gitlab_secrets_appliance['enable'] = true
gitlab_secrets_appliance['username'] = %q
gitlab_secrets_appliance['group'] = %q
gitlab_secrets_appliance['dir'] = %q
gitlab_secrets_appliance['data_dir'] = %q
gitlab_secrets_appliance['log_directory'] = %q
gitlab_secrets_appliance['env_directory'] = %q
gitlab_secrets_appliance['metrics_listen_address'] = %q
`, n.Account.User, n.Account.Group, n.Dir, n.DataDir, n.LogDir, n.EnvDir, n.MetricsAddr)
}

// reconfigure writes gitlab.rb and runs the miniature reconfigure; it
// returns its exit code and output, and keeps the report on success.
func (n *omnibusNode) reconfigure(t *testing.T, gitlabRB string) (code int, stdout, stderr string) {
	t.Helper()
	rb := n.path("etc/gitlab/gitlab.rb")
	if err := os.WriteFile(rb, []byte(gitlabRB), 0o600); err != nil {
		t.Fatal(err)
	}
	cookbook := n.Cookbook
	if cookbook == "" {
		cookbook = cookbookDir(t)
	}
	args := []string{filepath.Join(omnibusDir(t), "test", "reconfigure.rb"),
		"--cookbook", cookbook, "--gitlab-rb", rb, "--install-dir", n.InstallDir,
		"--sv-dir", n.SvDir, "--public-attributes", n.PublicAttrs,
		"--node-name", n.Name, "--fqdn", n.FQDN, "--gitlab-cluster-json", n.GitlabClusterJSON()}
	if len(n.UpServices) > 0 {
		args = append(args, "--up-services", strings.Join(n.UpServices, ","))
	}
	cmd := exec.Command("ruby", args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	code = cmd.ProcessState.ExitCode()
	if code == 0 {
		n.Report = reconfigureReport{}
		if err := json.Unmarshal([]byte(out.String()), &n.Report); err != nil {
			t.Fatalf("reconfigure printed no report (%v):\n%s", err, out.String())
		}
	}
	return code, out.String(), errb.String()
}

// mustReconfigure is reconfigure that must succeed.
func (n *omnibusNode) mustReconfigure(t *testing.T, gitlabRB string) {
	t.Helper()
	if code, _, errOut := n.reconfigure(t, gitlabRB); code != 0 {
		t.Fatalf("reconfigure of %s: exit %d:\n%s\ngitlab.rb:\n%s", n.Name, code, errOut, gitlabRB)
	}
}

// renderedConfig is appliance.json as the recipe wrote it.
func (n *omnibusNode) renderedConfig(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(n.ConfigFile())
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s is not JSON: %v\n%s", n.ConfigFile(), err, b)
	}
	return c
}

// binary is the appliance installed at /opt/gitlab/embedded/bin.
func (n *omnibusNode) binary() string {
	return filepath.Join(n.InstallDir, "embedded", "bin", "gitlab-secrets-appliance")
}

// validate runs the installed binary's `config validate` on the rendered
// file, as the service user when the test can switch to it: the user must
// be able to run the binary and read everything the config names.
func (n *omnibusNode) validate(t *testing.T) {
	t.Helper()
	cmd := exec.Command(n.binary(), "config", "validate", n.ConfigFile())
	cmd.Env = append(os.Environ(), n.env(t)...)
	if os.Getuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(n.Account.UID), Gid: uint32(n.Account.GID)}}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		b, _ := os.ReadFile(n.ConfigFile())
		t.Fatalf("config validate of %s's rendered config (as %s): %v\n%s\n%s", n.Name, n.Account.User, err, out, b)
	}
}

// env is the service's environment from the rendered env_dir.
func (n *omnibusNode) env(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(n.EnvDir)
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(n.EnvDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, e.Name()+"="+string(b))
	}
	return env
}

// canRunRunit says whether the rendered runit scripts can run as they
// would under runsv: chpst switches to the service user, which needs root.
func canRunRunit() bool {
	_, err1 := exec.LookPath("chpst")
	_, err2 := exec.LookPath("svlogd")
	return os.Getuid() == 0 && err1 == nil && err2 == nil
}

// service is the node's appliance process: the rendered run script (bash,
// chpst, the binary, all one PID) piped into the rendered log/run script
// (svlogd) as runsv would run them; without root, the binary itself with
// the rendered environment and config.
type service struct {
	run, log *exec.Cmd
	done     chan struct{}
	output   *harness.Buffer // without runit: the process's output
}

func (n *omnibusNode) start(t *testing.T, tr *harness.Transcript) *service {
	t.Helper()
	s := &service{done: make(chan struct{}), output: &harness.Buffer{}}
	if canRunRunit() {
		dir := filepath.Join(n.SvDir, "gitlab-secrets-appliance")
		s.run = exec.Command("bash", filepath.Join(dir, "run"))
		s.log = exec.Command("sh", filepath.Join(dir, "log", "run"))
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		s.run.Stdout, s.log.Stdin = pw, pr
		s.log.Stdout, s.log.Stderr = s.output, s.output
		if err := s.log.Start(); err != nil {
			t.Fatal(err)
		}
		if err := s.run.Start(); err != nil {
			t.Fatal(err)
		}
		pr.Close()
		pw.Close()
	} else {
		s.run = exec.Command(n.binary(), "server", "--config", n.ConfigFile())
		s.run.Env = append(os.Environ(), n.env(t)...)
		s.run.Dir = n.Dir
		s.run.Stdout, s.run.Stderr = s.output, s.output
		if err := s.run.Start(); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		s.run.Wait()
		if s.log != nil {
			s.log.Wait()
		}
		close(s.done)
	}()
	t.Cleanup(func() {
		s.run.Process.Kill()
		<-s.done
	})
	return s
}

func (s *service) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, as `gitlab-ctl stop` does through runsv, and waits.
func (s *service) stop(t *testing.T) int {
	t.Helper()
	s.run.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(time.Minute):
		t.Fatal("the appliance did not stop within a minute of SIGTERM")
	}
	return s.run.ProcessState.ExitCode()
}

// logText is what the service logged: svlogd's current file, or the
// process's output without runit.
func (n *omnibusNode) logText(s *service) string {
	if s.log == nil {
		return s.output.String()
	}
	b, _ := os.ReadFile(filepath.Join(n.LogDir, "current"))
	return string(b)
}

// ctl runs a gitlab-ctl command through the miniature gitlab-ctl.
func (n *omnibusNode) ctl(t *testing.T, tr *harness.Transcript, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	full := append([]string{filepath.Join(omnibusDir(t), "test", "gitlab_ctl.rb"),
		"--base-path", n.InstallDir, "--commands", ctlCommandsDir(t), "--public-attributes", n.PublicAttrs, "--"}, args...)
	return harness.Run(t, tr, stdin, "ruby", full...)
}

// waitCtlStatus polls `gitlab-ctl secrets-appliance status` until it
// exits with code want.
func (n *omnibusNode) waitCtlStatus(t *testing.T, tr *harness.Transcript, s *service, want int) {
	t.Helper()
	harness.Eventually(t, 2*time.Minute, fmt.Sprintf("secrets-appliance status to exit %d", want), func() bool {
		if s != nil && s.exited() {
			t.Fatalf("the appliance exited:\n%.4000s", n.logText(s))
		}
		_, _, code := n.ctl(t, tr, nil, "secrets-appliance", "status")
		return code == want
	})
}

func fileMode(t *testing.T, path string) (os.FileMode, int, int) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return st.Mode().Perm(), int(sys.Uid), int(sys.Gid)
}

// processUID is the real UID of a running process.
func processUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid, _ := strconv.Atoi(f[1])
			return uid
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return -1
}
