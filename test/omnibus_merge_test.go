package test

// What an omnibus-gitlab reviewer asks before merging (issue 18, item 8):
// the runit service named as its settings, the account through
// AccountHelper, one `gitlab-ctl secrets-appliance <subcommand>` command,
// the scrape config through Prometheus.parse_scrape_configs, GitLab Rails'
// OpenBao URL from the appliance, and OAK's OpenBao refused beside it.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/gitlabsim"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// loopbackRB is gitlab.rb for a node on a loopback listener (plain HTTP).
func (n *omnibusNode) loopbackRB(t *testing.T, listen string) string {
	return n.baseRB() + fmt.Sprintf("gitlab_secrets_appliance['listen_address'] = %q\ngitlab_secrets_appliance['cluster_listen_address'] = %q\n"+
		"gitlab_secrets_appliance['tls_disable'] = true\n", listen, nextAddr(t, listen))
}

// The runit service is gitlab-secrets-appliance, the settings' name
// hyphenated: its sv directory, run scripts and log directory's owner come
// from it, and logrotate's postrotate HUPs it by that name. Omnibus'
// LogfilesHelper and OmnibusHelper#should_notify? look a service's
// settings up by its name: under the old name (secrets-appliance) they
// find none and reconfigure fails. The account is AccountHelper's
// (secrets_appliance_user/_group), which `gitlab-ctl remove-accounts`
// removes with the others, and it owns the log directory
// (LogfilesHelper#default_logdir_ownership).
func TestOmnibusServiceNamedLikeItsSettings(t *testing.T) {
	needRuby(t)
	bin := harness.Binary(t)
	n := newOmnibusNode(t, bin, "gitlab-1.example.com")
	rb := n.loopbackRB(t, harness.FreeAddr(t, "127.0.0.1"))
	n.UpServices = []string{"gitlab-secrets-appliance"}
	n.mustReconfigure(t, rb)

	n.Report.resource(t, "runit_service", "gitlab-secrets-appliance")
	for _, f := range []string{"run", "log/run", "log/config"} {
		if _, err := os.Stat(filepath.Join(n.SvDir, "gitlab-secrets-appliance", f)); err != nil {
			t.Errorf("sv/gitlab-secrets-appliance/%s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(n.SvDir, "secrets-appliance")); !os.IsNotExist(err) {
		t.Errorf("an sv directory under the old name exists (%v)", err)
	}
	if got := n.Report.Logrotate.Options["logrotate_postrotate"]; got != filepath.Join(n.InstallDir, "bin", "gitlab-ctl")+" hup gitlab-secrets-appliance" {
		t.Errorf("logrotate_postrotate = %v", got)
	}

	acct := n.Report.resource(t, "account", "GitLab secrets appliance user and group")
	if acct["username"] != n.Account.User || acct["groupname"] != n.Account.Group || acct["ugid"] != n.Account.Group {
		t.Errorf("account resource: %v, want %s:%s", acct, n.Account.User, n.Account.Group)
	}
	if !slices.Contains(n.Report.Accounts.Users, n.Account.User) || !slices.Contains(n.Report.Accounts.Groups, n.Account.Group) {
		t.Errorf("AccountHelper users %v, groups %v: the service account is missing (gitlab-ctl remove-accounts would leave it)",
			n.Report.Accounts.Users, n.Report.Accounts.Groups)
	}
	if d := n.Report.resource(t, "directory", n.LogDir); d["owner"] != n.Account.User || d["mode"] != "0700" {
		t.Errorf("log directory resource: %v, want owned by %s, 0700", d, n.Account.User)
	}

	// The same cookbook with the old service name: Omnibus' helpers find
	// no settings for it.
	old := copyDir(t, cookbookDir(t))
	helper := filepath.Join(old, "libraries", "secrets_appliance_helper.rb")
	src, _ := os.ReadFile(helper)
	os.WriteFile(helper, []byte(strings.Replace(string(src), "SERVICE = 'gitlab-secrets-appliance'", "SERVICE = 'secrets-appliance'", 1)), 0o644)
	n.Cookbook = old
	code, _, errOut := n.reconfigure(t, rb)
	if code == 0 || !strings.Contains(errOut, "secrets-appliance") || !strings.Contains(errOut, "not a valid service") {
		t.Errorf("reconfigure with the runit service named secrets-appliance: exit %d, want LogfilesHelper's refusal:\n%s", code, errOut)
	}
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s: %v\n%s", src, err, out)
	}
	return dst
}

// `gitlab-ctl secrets-appliance <subcommand>`: one command (category
// secrets-appliance) with OptionParser subcommands, as omnibus-gitlab's
// patroni and geo commands. Each subcommand runs the binary with its words,
// in its mode (this node's address, or its config when offline, or
// neither), the operator's arguments after them, and returns the binary's
// exit code; a flag switches mode where it does (geo promote --force and
// snapshot restore --new-cluster offline, drill --live online). No
// subcommand, an unknown one or half of a two-word one: the usage on
// stderr and exit 64; --help: the usage on stdout, exit 0.
func TestOmnibusCtlSubcommands(t *testing.T) {
	needRuby(t)
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	n := newOmnibusNode(t, bin, "gitlab-1.example.com")
	listen := harness.FreeAddr(t, "127.0.0.1")
	n.mustReconfigure(t, n.loopbackRB(t, listen))

	// A binary that says how it was called, with a distinctive exit code.
	os.Remove(n.binary())
	if err := os.WriteFile(n.binary(), []byte("#!/bin/sh\necho \"ARGV $*\"\nexit 7\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	online := "--address http://" + listen
	offline := "--config " + n.ConfigFile()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"init", "--format", "json"}, "init " + online + " --format json"},
		{[]string{"unseal"}, "unseal " + online},
		{[]string{"status", "--format", "json"}, "status " + online + " --format json"},
		{[]string{"bootstrap", "--token-file", "/t"}, "gitlab bootstrap " + online + " --token-file /t"},
		{[]string{"check", "--set-aside"}, "check " + offline + " --set-aside"},
		{[]string{"snapshot", "save", "/s"}, "snapshot save " + online + " /s"},
		{[]string{"snapshot", "inspect", "/s"}, "snapshot inspect /s"},
		{[]string{"snapshot", "restore", "/s", "--yes"}, "snapshot restore " + online + " /s --yes"},
		{[]string{"snapshot", "restore", "/s", "--new-cluster"}, "snapshot restore " + offline + " /s --new-cluster"},
		{[]string{"geo", "status"}, "geo status " + online},
		{[]string{"geo", "promote", "--site", "b", "--dry-run"}, "geo promote " + online + " --site b --dry-run"},
		{[]string{"geo", "promote", "--site", "b", "--force", "--fenced-site", "a"}, "geo promote " + offline + " --site b --force --fenced-site a"},
		{[]string{"geo", "promote", "--site", "b", "-force=true"}, "geo promote " + offline + " --site b -force=true"},
		{[]string{"geo", "promote", "--site", "b", "--force=false"}, "geo promote " + online + " --site b --force=false"},
		{[]string{"geo", "rejoin", "--yes"}, "geo rejoin " + offline + " --yes"},
		{[]string{"drill", "--snapshot", "/s"}, "drill " + offline + " --snapshot /s"},
		{[]string{"drill", "--live", "--site", "b"}, "drill " + online + " --live --site b"},
		{[]string{"rolling-restart", "--node-timeout", "1m"}, "rolling-restart " + online + " --node-timeout 1m"},
	} {
		out, errOut, code := n.ctl(t, tr, nil, append([]string{"secrets-appliance"}, tc.args...)...)
		if code != 7 || strings.TrimSpace(out) != "ARGV "+tc.want {
			t.Errorf("gitlab-ctl secrets-appliance %s: exit %d, ran %q (stderr %q), want exit 7 from %q",
				strings.Join(tc.args, " "), code, strings.TrimSpace(out), errOut, "ARGV "+tc.want)
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "secrets-appliance: no subcommand given"},
		{[]string{"nope"}, "secrets-appliance: unknown subcommand nope"},
		{[]string{"geo"}, "secrets-appliance geo: no subcommand given (status, promote, rejoin)"},
		{[]string{"snapshot", "--help"}, "secrets-appliance snapshot: no subcommand given (save, inspect, restore)"},
		{[]string{"geo", "nope"}, "secrets-appliance: unknown subcommand geo nope"},
		{[]string{"--no-such-option"}, "invalid option: --no-such-option"},
	} {
		out, errOut, code := n.ctl(t, tr, nil, append([]string{"secrets-appliance"}, tc.args...)...)
		if code != 64 || !strings.HasPrefix(errOut, tc.want+"\n") || !strings.Contains(errOut, "Usage:\n  gitlab-ctl secrets-appliance") || strings.Contains(out, "ARGV") {
			t.Errorf("gitlab-ctl secrets-appliance %s: exit %d, stdout %q, stderr:\n%s\nwant exit 64, %q and the usage on stderr, the binary not run",
				strings.Join(tc.args, " "), code, out, errOut, tc.want)
		}
	}
	out, _, code := n.ctl(t, tr, nil, "secrets-appliance", "--help")
	if code != 0 {
		t.Errorf("gitlab-ctl secrets-appliance --help: exit %d", code)
	}
	for _, sub := range []string{"init", "unseal", "status", "bootstrap", "check", "snapshot save", "snapshot inspect", "snapshot restore",
		"geo status", "geo promote", "geo rejoin", "drill", "rolling-restart", "64 for a missing or unknown subcommand"} {
		if !strings.Contains(out, "\n  "+sub+" ") && !strings.Contains(out, sub) {
			t.Errorf("the usage lacks %q:\n%s", sub, out)
		}
	}
	// The old one-command-per-subcommand names are gone.
	if _, _, code := n.ctl(t, tr, nil, "secrets-appliance-status"); code != 1 {
		t.Errorf("gitlab-ctl secrets-appliance-status: exit %d, want omnibus-ctl's 1 (no such command)", code)
	}
}

// Prometheus.parse_scrape_configs adds the appliance's job as it adds
// registry's and gitaly's: the default job first, the operator's
// prometheus['scrape_configs'] after it; an operator job of the same name
// replaces it.
func TestOmnibusScrapeConfigThroughPrometheus(t *testing.T) {
	needRuby(t)
	bin := harness.Binary(t)
	n := newOmnibusNode(t, bin, "gitlab-1.example.com")
	rb := n.loopbackRB(t, harness.FreeAddr(t, "127.0.0.1"))
	other := "prometheus['scrape_configs'] = [{ 'job_name' => 'other', 'static_configs' => [{ 'targets' => ['127.0.0.1:9999'] }] }]\n"
	n.mustReconfigure(t, rb+other)
	var jobs []any
	for _, sc := range n.Report.ScrapeConfigs {
		jobs = append(jobs, sc["job_name"])
	}
	if !reflect.DeepEqual(jobs, []any{"gitlab-secrets-appliance", "other"}) {
		t.Errorf("scrape jobs %v, want the appliance's then the operator's", jobs)
	}
	mine := "prometheus['scrape_configs'] = [{ 'job_name' => 'gitlab-secrets-appliance', 'static_configs' => [{ 'targets' => ['10.0.0.1:8202'] }] }]\n"
	n.mustReconfigure(t, rb+mine)
	if len(n.Report.ScrapeConfigs) != 1 || !reflect.DeepEqual(n.Report.ScrapeConfigs[0]["static_configs"],
		jsonRoundTrip(t, []any{map[string]any{"targets": []any{"10.0.0.1:8202"}}})) {
		t.Errorf("scrape configs %v, want only the operator's gitlab-secrets-appliance job", n.Report.ScrapeConfigs)
	}
	if !slices.ContainsFunc(n.Report.Warnings, func(w string) bool { return strings.Contains(w, "pre-existing configuration") }) {
		t.Errorf("no warning about the operator's job: %v", n.Report.Warnings)
	}
}

// GitLab Rails' OpenBao URL (gitlab_rails['openbao']['url']) is this
// node's appliance unless gitlab.rb sets it, and it is the gitlab block's
// audience; in a cluster a warning asks for the one URL on every node.
// OAK's OpenBao (oak['components']['openbao']['enable']) beside the
// appliance is refused with one message, and nothing is written; with OAK
// itself off it is not.
func TestOmnibusRailsOpenBaoURLAndOAK(t *testing.T) {
	needRuby(t)
	bin := harness.Binary(t)
	n := newOmnibusNode(t, bin, "gitlab-1.example.com")
	listen := harness.FreeAddr(t, "127.0.0.1")
	keys := n.path("etc/gitlab/gitlab-jwt.pem")
	is, err := gitlabsim.NewIssuer()
	if err != nil {
		t.Fatal(err)
	}
	pemKeys, err := is.PublicKeysPEM()
	is.Close()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(keys, []byte(pemKeys), 0o644)
	rb := n.loopbackRB(t, listen) + "external_url 'https://gitlab.example.com'\ngitlab_secrets_appliance['gitlab']['enable'] = true\n" +
		fmt.Sprintf("gitlab_secrets_appliance['gitlab']['jwt_validation_pubkeys_file'] = %q\n", keys)
	n.mustReconfigure(t, rb)
	if n.Report.RailsOpenBao["url"] != "http://"+listen {
		t.Errorf("gitlab_rails['openbao'] = %v, want url http://%s (this node's listener)", n.Report.RailsOpenBao, listen)
	}
	if g := n.renderedConfig(t)["gitlab"].(map[string]any); g["audience"] != "http://"+listen {
		t.Errorf("gitlab.audience = %v, want GitLab's OpenBao URL http://%s", g["audience"], listen)
	}
	if slices.ContainsFunc(n.Report.Warnings, func(w string) bool { return strings.Contains(w, "gitlab_rails['openbao']['url']") }) {
		t.Errorf("a warning about the URL on a single node: %v", n.Report.Warnings)
	}
	n.mustReconfigure(t, rb+"gitlab_secrets_appliance['raft']['retry_join'] = ['http://127.0.0.2:8200']\n")
	if !slices.ContainsFunc(n.Report.Warnings, func(w string) bool {
		return strings.Contains(w, "set gitlab_rails['openbao']['url'] to the same URL on every node")
	}) {
		t.Errorf("no warning about the per-node URL in a cluster: %v", n.Report.Warnings)
	}
	n.mustReconfigure(t, rb+"gitlab_rails['openbao']['url'] = 'https://openbao.example.com'\n")
	if n.Report.RailsOpenBao["url"] != "https://openbao.example.com" {
		t.Errorf("gitlab_rails['openbao'] = %v: the operator's url must stay", n.Report.RailsOpenBao)
	}

	before, _ := os.ReadFile(n.ConfigFile())
	oak := "oak['enable'] = true\noak['components']['openbao']['enable'] = true\n"
	for _, extra := range []string{oak, "oak['components']['openbao']['enable'] = true\n"} {
		code, _, errOut := n.reconfigure(t, rb+extra)
		if code == 0 || !strings.Contains(errOut, "gitlab_secrets_appliance['enable'] and oak['components']['openbao']['enable'] are both set") {
			t.Errorf("reconfigure with %q: exit %d, want the refusal:\n%s", extra, code, errOut)
		}
		if after, _ := os.ReadFile(n.ConfigFile()); string(after) != string(before) {
			t.Errorf("a refused reconfigure rewrote appliance.json")
		}
	}
	n.mustReconfigure(t, rb+"oak['enable'] = false\noak['components']['openbao']['enable'] = true\n")
}
