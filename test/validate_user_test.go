package test

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// nobody is the unprivileged account the checks run as.
func nobody(t *testing.T) (name string, uid, gid int) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("checking paths as another user needs root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return u.Username, uid, gid
}

// config validate runs as root in reconfigure and in an operator's shell,
// where every path is writable. With --user it tries the paths with the
// service user's credentials: a snapshot directory below a directory the
// user cannot enter (omnibus-gitlab's /var/opt/gitlab/backups is git's,
// 0700) is refused, naming that directory, its owner and mode; so is an
// audit log in a directory it cannot write, and a TLS key it cannot read.
// The same config with paths the user owns is valid; nothing is left
// behind.
func TestConfigValidateAsServiceUser(t *testing.T) {
	name, uid, gid := nobody(t)
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	root, err := os.MkdirTemp("", "gsa-validate-user-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)
	os.Chmod(root, 0o755)
	data := filepath.Join(root, "data")
	backups := filepath.Join(root, "backups") // git's, 0700
	logs := filepath.Join(root, "log")
	for _, d := range []struct {
		path string
		mode os.FileMode
		uid  int
	}{{data, 0o700, uid}, {backups, 0o700, 0}, {logs, 0o755, 0}} {
		os.Mkdir(d.path, d.mode)
		os.Chmod(d.path, d.mode)
		os.Chown(d.path, d.uid, gid)
	}
	ca := harness.NewCA(t)
	certFile, keyFile := ca.IssueIn(t, root, "localhost", "127.0.0.1")
	os.Chmod(keyFile, 0o600) // root's alone
	write := func(snapDir, auditFile string) string {
		cfg := filepath.Join(root, "appliance.hcl")
		src := fmt.Sprintf(`node_id  = "node-1"
data_dir = %q
listener {
  address       = "127.0.0.1:8200"
  tls_cert_file = %q
  tls_key_file  = %q
}
snapshot {
  directory = %q
}
audit "file" {
  options = { file_path = %q }
}
`, data, certFile, keyFile, snapDir, auditFile)
		if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	cfg := write(filepath.Join(backups, "secrets-appliance"), filepath.Join(logs, "audit.log"))
	if out, errOut, code := harness.Run(t, tr, nil, bin, "config", "validate", cfg); code != 0 {
		t.Fatalf("as root: exit %d: %s %s", code, out, errOut)
	}
	out, errOut, code := harness.Run(t, tr, nil, bin, "config", "validate", "--user", name, cfg)
	for _, want := range []string{
		"3 problem(s)",
		fmt.Sprintf("snapshot.directory: user %s (uid %d) cannot create files in %s: permission denied: %s cannot be entered (owner uid 0 gid %d, mode 0700)",
			name, uid, filepath.Join(backups, "secrets-appliance"), backups, gid),
		fmt.Sprintf("audit[0].options.file_path: user %s (uid %d) cannot append to %s: permission denied (%s is owner uid 0 gid %d, mode 0755)", name, uid, filepath.Join(logs, "audit.log"), logs, gid),
		fmt.Sprintf("listener[0].tls_key_file: user %s (uid %d) cannot read %s: permission denied", name, uid, keyFile),
	} {
		if code != 3 || !strings.Contains(errOut, want) {
			t.Errorf("--user %s: exit %d, want 3 and %q:\n%s%s", name, code, want, out, errOut)
		}
	}

	// The service's own paths.
	os.Chown(keyFile, 0, gid)
	os.Chmod(keyFile, 0o640)
	os.Chown(logs, uid, gid)
	cfg = write(filepath.Join(data, "snapshots"), filepath.Join(logs, "audit.log"))
	out, errOut, code = harness.Run(t, tr, nil, bin, "config", "validate", "--user", name, cfg)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("is valid, and user %s (uid %d) can use its paths", name, uid)) {
		t.Fatalf("--user %s with its own paths: exit %d: %s %s", name, code, out, errOut)
	}
	for _, d := range []string{data, logs, root} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".gsa-validate") {
				t.Errorf("left behind: %s", filepath.Join(d, e.Name()))
			}
		}
	}
	if _, _, code := harness.Run(t, tr, nil, bin, "config", "validate", "--user", "no-such-user-here", cfg); code != 64 {
		t.Errorf("--user no-such-user-here: exit %d, want 64", code)
	}
}

// On an Omnibus node (reconfigure as root, the service as its user):
// snapshots into a directory below /var/opt/gitlab/backups (git's, 0700)
// fail reconfigure, which validates as the service user, naming the
// directory it cannot enter; the default directory, <dir>/snapshots, is
// the service user's, and the running node takes its snapshots there.
func TestOmnibusSnapshotDirectoryIsTheServiceUsers(t *testing.T) {
	needRuby(t)
	nobody(t)
	if !canRunRunit() {
		t.Skip("the service runs as its user only under chpst (runit)")
	}
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	n := newOmnibusNode(t, bin, "gitlab-1.example.com")
	backups := n.path("var/opt/gitlab/backups")
	if err := os.Mkdir(backups, 0o700); err != nil { // git's: root stands for it
		t.Fatal(err)
	}
	listen := harness.FreeAddr(t, "127.0.0.1")
	base := n.baseRB() + fmt.Sprintf(`gitlab_secrets_appliance['listen_address'] = %q
gitlab_secrets_appliance['cluster_listen_address'] = %q
gitlab_secrets_appliance['tls_disable'] = true
gitlab_secrets_appliance['seal']['shamir']['shares'] = 1
gitlab_secrets_appliance['seal']['shamir']['threshold'] = 1
gitlab_secrets_appliance['snapshots']['enable'] = true
gitlab_secrets_appliance['snapshots']['interval'] = '2s'
`, listen, nextAddr(t, listen))

	code, _, errOut := n.reconfigure(t, base+fmt.Sprintf("gitlab_secrets_appliance['snapshots']['directory'] = %q\n", filepath.Join(backups, "secrets-appliance")))
	want := fmt.Sprintf("snapshot.directory: user %s (uid %d) cannot create files in %s: permission denied: %s cannot be entered (owner uid 0 gid 0, mode 0700)",
		n.Account.User, n.Account.UID, filepath.Join(backups, "secrets-appliance"), backups)
	if code == 0 || !strings.Contains(errOut, want) {
		t.Fatalf("reconfigure with snapshots below backups: exit %d, want a failure saying %q:\n%s", code, want, errOut)
	}

	n.mustReconfigure(t, base)
	snaps := filepath.Join(n.Dir, "snapshots")
	if cfg := n.renderedConfig(t); cfg["snapshot"].(map[string]any)["directory"] != snaps {
		t.Fatalf("snapshot block: %v", cfg["snapshot"])
	}
	if mode, uid, _ := fileMode(t, snaps); mode != 0o700 || uid != n.Account.UID {
		t.Fatalf("%s: mode %04o uid %d, want 0700 %s", snaps, mode, uid, n.Account.User)
	}
	s := n.start(t, tr)
	n.waitCtlStatus(t, tr, s, 2)
	if _, errOut, code := n.ctl(t, &harness.Transcript{}, nil, "secrets-appliance", "init"); code != 0 {
		t.Fatalf("secrets-appliance init: exit %d: %s", code, errOut)
	}
	n.waitCtlStatus(t, tr, s, 0)
	harness.Eventually(t, 2*time.Minute, "a scheduled snapshot in "+snaps, func() bool {
		entries, _ := os.ReadDir(snaps)
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".snap") {
				_, uid, _ := fileMode(t, filepath.Join(snaps, e.Name()))
				return uid == n.Account.UID
			}
		}
		return false
	})
	if code := s.stop(t); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
}
