package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// restarts lists the restart notifications a reconfigure ran.
func restarts(r reconfigureReport) []map[string]string {
	var out []map[string]string
	for _, n := range r.NotificationsRun {
		if n["action"] == "restart" {
			out = append(out, n)
		}
	}
	return out
}

// Reconfigure restarts the service for a changed environment only while
// it runs (a restart would start a service the operator stopped, and seal
// a node without HSM); a changed appliance.json is a SIGHUP, which leaves
// a stopped service alone. The harness runs the notifications of the
// resources that changed, as Chef does.
func TestOmnibusRestartsOnlyARunningService(t *testing.T) {
	needRuby(t)
	bin := harness.Binary(t)
	n := newOmnibusNode(t, bin, "gitlab-1.example.com")
	listen := harness.FreeAddr(t, "127.0.0.1")
	rb := func(env string) string {
		return n.baseRB() + fmt.Sprintf(`gitlab_secrets_appliance['listen_address'] = %q
gitlab_secrets_appliance['cluster_listen_address'] = %q
gitlab_secrets_appliance['tls_disable'] = true
gitlab_secrets_appliance['log_level'] = %q
gitlab_secrets_appliance['env'] = { 'SSL_CERT_DIR' => %q }
`, listen, nextAddr(t, listen), "info", env)
	}
	const svc = "runit_service[gitlab-secrets-appliance]"

	// A new node: appliance.json is new (SIGHUP to a service not
	// running: nothing), no restart.
	n.mustReconfigure(t, rb("/a"))
	if len(restarts(n.Report)) != 0 {
		t.Errorf("the first reconfigure restarts: %v", n.Report.NotificationsRun)
	}
	if !slices.ContainsFunc(n.Report.NotificationsRun, func(m map[string]string) bool {
		return m["action"] == "hup" && m["target"] == svc && m["result"] == "not running: nothing to do"
	}) {
		t.Errorf("the new appliance.json sends no SIGHUP: %v", n.Report.NotificationsRun)
	}

	// Stopped by the operator: a new environment changes the env dir and
	// starts nothing.
	n.mustReconfigure(t, rb("/b"))
	if !slices.Contains(n.Report.Updated, "env_dir["+n.EnvDir+"]") {
		t.Fatalf("the env dir did not change: %v", n.Report.Updated)
	}
	if r := restarts(n.Report); len(r) != 0 {
		t.Errorf("a changed environment started a stopped service: %v", r)
	}
	if len(n.Report.NotificationsRun) != 0 {
		t.Errorf("an unchanged appliance.json notified: %v", n.Report.NotificationsRun)
	}

	// Running: the new environment restarts it, once.
	n.UpServices = []string{"gitlab-secrets-appliance"}
	n.mustReconfigure(t, rb("/c"))
	if r := restarts(n.Report); len(r) != 1 || r[0]["target"] != svc || r[0]["result"] != "restarted" {
		t.Errorf("a changed environment of a running service: restarts %v", r)
	}
	// Nothing changed: nothing runs.
	n.mustReconfigure(t, rb("/c"))
	if len(n.Report.NotificationsRun) != 0 {
		t.Errorf("a reconfigure that changed nothing notified: %v (updated %v)", n.Report.NotificationsRun, n.Report.Updated)
	}
	// A new binary (gitlab-ctl upgrade runs reconfigure): no restart,
	// which would seal every node without an HSM at once; a warning
	// names the rolling restart instead.
	if err := os.WriteFile(filepath.Join(n.Dir, "VERSION"), []byte("gitlab-secrets-appliance 0.0.1 (the previous package)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n.mustReconfigure(t, rb("/c"))
	if r := restarts(n.Report); len(r) != 0 {
		t.Errorf("a new binary restarted the running service: %v", r)
	}
	if !slices.ContainsFunc(n.Report.Warnings, func(w string) bool { return strings.Contains(w, "gitlab-ctl secrets-appliance rolling-restart") }) {
		t.Errorf("a new binary, and no word of the rolling restart: %v", n.Report.Warnings)
	}
}

// The harness refuses what Chef refuses: a resource property that does
// not exist (a typo such as mdoe '0700' would otherwise pass unnoticed
// and leave the default mode).
func TestOmnibusHarnessRefusesUnknownProperties(t *testing.T) {
	needRuby(t)
	bin := harness.Binary(t)
	n := newOmnibusNode(t, bin, "gitlab-1.example.com")
	cookbook := filepath.Join(t.TempDir(), "gitlab-secrets-appliance")
	if out, err := exec.Command("cp", "-r", cookbookDir(t), cookbook).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	recipe := filepath.Join(cookbook, "recipes", "enable.rb")
	b, err := os.ReadFile(recipe)
	if err != nil {
		t.Fatal(err)
	}
	typo := strings.Replace(string(b), "  mode '0700'\n", "  mdoe '0700'\n", 1)
	if typo == string(b) {
		t.Fatal("enable.rb has no mode '0700' to misspell")
	}
	os.WriteFile(recipe, []byte(typo), 0o644)
	n.Cookbook = cookbook
	listen := harness.FreeAddr(t, "127.0.0.1")
	code, _, errOut := n.reconfigure(t, n.baseRB()+fmt.Sprintf("gitlab_secrets_appliance['listen_address'] = %q\ngitlab_secrets_appliance['tls_disable'] = true\n", listen))
	if code == 0 || !strings.Contains(errOut, "mdoe is not a property of the directory resource") {
		t.Fatalf("a misspelt property: exit %d:\n%s", code, errOut)
	}
}

// high_availability['mountpoint'] (Omnibus' check of every data
// service's run script): the service refuses to start while the mount is
// missing.
func TestOmnibusRunScriptChecksTheMountPoint(t *testing.T) {
	needRuby(t)
	bin := harness.Binary(t)
	n := newOmnibusNode(t, bin, "gitlab-1.example.com")
	listen := harness.FreeAddr(t, "127.0.0.1")
	missing := filepath.Join(n.Root, "mnt", "gitlab-data")
	n.mustReconfigure(t, n.baseRB()+fmt.Sprintf(`high_availability['mountpoint'] = %q
gitlab_secrets_appliance['listen_address'] = %q
gitlab_secrets_appliance['tls_disable'] = true
`, missing, listen))
	run := filepath.Join(n.SvDir, "gitlab-secrets-appliance", "run")
	out, err := exec.Command("bash", run).CombinedOutput()
	want := "Refusing to start because " + missing + " is not a mountpoint."
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), want) {
		t.Fatalf("the run script with %s missing: %v:\n%s", missing, err, out)
	}
	// Without the setting, no check.
	n.mustReconfigure(t, n.baseRB()+fmt.Sprintf("gitlab_secrets_appliance['listen_address'] = %q\ngitlab_secrets_appliance['tls_disable'] = true\n", listen))
	if b, _ := os.ReadFile(run); strings.Contains(string(b), "mountpoint -q") {
		t.Fatalf("a run script without high_availability['mountpoint'] checks one:\n%s", b)
	}
}
