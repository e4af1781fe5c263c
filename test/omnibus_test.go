package test

// The Omnibus GitLab cookbook (packaging/omnibus), end to end with real
// Ruby and ERB: gitlab.rb settings are rendered by the cookbook's own
// attributes, library, recipe and templates (packaging/omnibus/test/
// reconfigure.rb runs them), every rendered appliance.json passes the
// appliance's `config validate`, nodes run from the rendered runit
// scripts, and the gitlab-ctl commands run the real binary and pass its
// exit codes on.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/gitlabsim"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// nextAddr is host:port+1 of a FreeAddr (the pair's second port).
func nextAddr(t *testing.T, addr string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(host, strconv.Itoa(p+1))
}

// jsonRoundTrip makes v comparable with a decoded JSON document.
func jsonRoundTrip(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	json.Unmarshal(b, &out)
	return out
}

func prettyJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// One node installed the Omnibus way: gitlab.rb -> reconfigure -> the
// recipe's user, directories and modes, appliance.json (exactly the
// expected keys, accepted by config validate as the service user), runit
// scripts that run the appliance as that user with svlogd logging, the
// Prometheus scrape config that really scrapes it, and gitlab-ctl's
// `gitlab-ctl secrets-appliance` subcommands running the binary: status 2 on a fresh
// node, init, bootstrap, the Geo commands refused on a node without Geo,
// unseal after a restart, status 4 once stopped.
func TestOmnibusSingleNode(t *testing.T) {
	needRuby(t)
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	n := newOmnibusNode(t, bin, "gitlab-1.example.com")
	listen := harness.FreeAddr(t, "127.0.0.1")
	keysAddr := harness.FreeAddr(t, "127.0.0.1")
	is, err := gitlabsim.NewIssuer()
	if err != nil {
		t.Fatal(err)
	}
	pemKeys, err := is.PublicKeysPEM()
	is.Close()
	if err != nil {
		t.Fatal(err)
	}
	keysFile := n.path("etc/gitlab/gitlab-jwt.pem")
	if err := os.WriteFile(keysFile, []byte(pemKeys), 0o644); err != nil {
		t.Fatal(err)
	}
	n.mustReconfigure(t, n.baseRB()+fmt.Sprintf(`external_url 'https://gitlab.example.com/'
gitlab_rails['openbao']['url'] = 'https://secrets.gitlab.example.com:8200'
gitlab_secrets_appliance['listen_address'] = %q
gitlab_secrets_appliance['cluster_listen_address'] = %q
gitlab_secrets_appliance['tls_disable'] = true
gitlab_secrets_appliance['seal']['shamir']['shares'] = 3
gitlab_secrets_appliance['seal']['shamir']['threshold'] = 2
gitlab_secrets_appliance['gitlab']['enable'] = true
gitlab_secrets_appliance['gitlab']['jwt_validation_pubkeys_file'] = %q
gitlab_secrets_appliance['gitlab']['pubkeys_jwks_address'] = %q
`, listen, nextAddr(t, listen), keysFile, keysAddr))

	// appliance.json: the node name as node_id, the gitlab block from
	// GitLab's own settings (external_url without its slash, openbao url
	// as the audience), and nothing the config does not know.
	want := map[string]any{
		"node_id": "gitlab-1.example.com", "data_dir": n.DataDir, "log_level": "info", "log_format": "standard",
		"listener": []any{
			map[string]any{"address": listen, "tls_min_version": "tls12", "unauthenticated_metrics_access": false, "tls_disable": true},
			map[string]any{"address": n.MetricsAddr, "tls_min_version": "tls12", "unauthenticated_metrics_access": true, "tls_disable": true}},
		"cluster": map[string]any{"address": nextAddr(t, listen)},
		"raft":    map[string]any{"performance_multiplier": 1},
		"audit": map[string]any{"file": map[string]any{"options": map[string]any{
			"file_path": filepath.Join(n.LogDir, "audit.log"), "mode": "0600"}}},
		"telemetry": map[string]any{"prometheus_retention_time": "24h", "disable_hostname": true},
		"seal":      map[string]any{"shamir": map[string]any{"shares": 3, "threshold": 2}},
		"gitlab": map[string]any{"url": "https://gitlab.example.com", "jwt_validation_pubkeys_file": keysFile,
			"pubkeys_jwks_address": keysAddr, "audience": "https://secrets.gitlab.example.com:8200"},
	}
	if got := n.renderedConfig(t); !reflect.DeepEqual(got, jsonRoundTrip(t, want)) {
		t.Fatalf("appliance.json:\n%s\nwant:\n%s", prettyJSON(got), prettyJSON(want))
	}
	n.validate(t)

	// The recipe's resources and what they left on disk.
	acct := n.Report.resource(t, "account", "GitLab secrets appliance user and group")
	if acct["username"] != n.Account.User || acct["groupname"] != n.Account.Group || acct["home"] != n.Dir || acct["shell"] != "/usr/sbin/nologin" {
		t.Errorf("account: %v", acct)
	}
	if d := n.Report.resource(t, "directory", n.DataDir); d["mode"] != "0700" || d["owner"] != n.Account.User {
		t.Errorf("data_dir resource: %v", d)
	}
	tmpl := n.Report.resource(t, "template", n.ConfigFile())
	if tmpl["source"] != "appliance.json.erb" || tmpl["mode"] != "0640" || tmpl["owner"] != "root" || tmpl["group"] != n.Account.Group {
		t.Errorf("appliance.json template: %v", tmpl)
	}
	for _, r := range n.Report.Resources {
		if r.Type == "template" && r.Name == n.ConfigFile() {
			if len(r.Notifies) != 1 || r.Notifies[0]["action"] != "hup" || r.Notifies[0]["target"] != "runit_service[gitlab-secrets-appliance]" {
				t.Errorf("appliance.json notifies %v, want a SIGHUP (hup) of runit_service[gitlab-secrets-appliance]", r.Notifies)
			}
		}
	}
	n.Report.resource(t, "runit_service", "gitlab-secrets-appliance")
	root := os.Getuid() == 0
	for _, f := range []struct {
		path     string
		mode     os.FileMode
		uid, gid int
	}{
		{n.DataDir, 0o700, n.Account.UID, n.Account.GID},
		{n.Dir, 0o750, 0, n.Account.GID},
		{n.ConfigFile(), 0o640, 0, n.Account.GID},
		{n.LogDir, 0o700, n.Account.UID, -1},
		{filepath.Join(n.SvDir, "gitlab-secrets-appliance", "run"), 0o755, -1, -1},
		{filepath.Join(n.SvDir, "gitlab-secrets-appliance", "log", "run"), 0o755, -1, -1},
	} {
		mode, uid, gid := fileMode(t, f.path)
		if mode != f.mode || (root && f.uid >= 0 && uid != f.uid) || (root && f.gid >= 0 && gid != f.gid) {
			t.Errorf("%s: mode %04o uid %d gid %d, want %04o uid %d gid %d", f.path, mode, uid, gid, f.mode, f.uid, f.gid)
		}
	}
	runScript, _ := os.ReadFile(filepath.Join(n.SvDir, "gitlab-secrets-appliance", "run"))
	for _, s := range []string{
		"exec chpst -e " + n.EnvDir + " -P",
		fmt.Sprintf("-u %s:%s", n.Account.User, n.Account.Group),
		filepath.Join(n.InstallDir, "embedded/bin/gitlab-secrets-appliance") + " server --config " + n.ConfigFile(),
	} {
		if !strings.Contains(string(runScript), s) {
			t.Errorf("run script lacks %q:\n%s", s, runScript)
		}
	}
	logRun, _ := os.ReadFile(filepath.Join(n.SvDir, "gitlab-secrets-appliance", "log", "run"))
	if !strings.Contains(string(logRun), "svlogd -tt "+n.LogDir) {
		t.Errorf("log/run does not run svlogd on %s:\n%s", n.LogDir, logRun)
	}
	for _, script := range []struct{ shell, file string }{{"bash", "run"}, {"sh", "log/run"}} {
		if out, err := exec.Command(script.shell, "-n", filepath.Join(n.SvDir, "gitlab-secrets-appliance", script.file)).CombinedOutput(); err != nil {
			t.Errorf("%s -n %s: %v\n%s", script.shell, script.file, err, out)
		}
	}
	if link, err := os.Readlink(filepath.Join(n.LogDir, "config")); err != nil || link != filepath.Join(n.SvDir, "gitlab-secrets-appliance", "log", "config") {
		t.Errorf("svlogd's config in the log directory: %q, %v", link, err)
	}
	var pub map[string]map[string]any
	b, _ := os.ReadFile(n.PublicAttrs)
	if json.Unmarshal(b, &pub) != nil || pub["gitlab_secrets_appliance"]["ctl_address"] != "http://"+listen {
		t.Fatalf("public attributes: %s", b)
	}
	sc := onlyScrapeConfig(t, n)
	if sc["scheme"] != "http" || sc["metrics_path"] != "/v1/sys/metrics" || sc["tls_config"] != nil || sc["authorization"] != nil ||
		!reflect.DeepEqual(sc["static_configs"], jsonRoundTrip(t, []any{map[string]any{"targets": []any{n.MetricsAddr}}})) {
		t.Errorf("scrape config: %v, want the loopback metrics listener %s without a token", sc, n.MetricsAddr)
	}
	if n.Report.RailsOpenBao["url"] != "https://secrets.gitlab.example.com:8200" {
		t.Errorf("gitlab_rails['openbao'] = %v: the operator's url must stay", n.Report.RailsOpenBao)
	}

	// The service, as runsv runs it.
	s := n.start(t, tr)
	n.waitCtlStatus(t, tr, s, 2)
	if canRunRunit() {
		if uid := processUID(t, s.run.Process.Pid); uid != n.Account.UID {
			t.Errorf("the appliance runs as uid %d, want %d (%s)", uid, n.Account.UID, n.Account.User)
		}
	}
	harness.Eventually(t, time.Minute, "the start in the service log", func() bool {
		return strings.Contains(n.logText(s), "appliance started: node_id=gitlab-1.example.com")
	})
	if code, body := scrape(t, sc); code != 200 || !strings.Contains(body, "# TYPE ") {
		t.Fatalf("scrape: %d %.300s", code, body)
	}

	// gitlab-ctl: arguments go through, exit codes come back.
	out, errOut, code := n.ctl(t, tr, nil, "secrets-appliance", "status", "--format", "json")
	var st statusOutput
	if code != 2 || json.Unmarshal([]byte(out), &st) != nil || st.NodeID != "gitlab-1.example.com" || st.State != "uninitialized" {
		t.Fatalf("secrets-appliance status on a fresh node: exit %d, %q %q", code, out, errOut)
	}
	if _, errOut, code := n.ctl(t, tr, nil, "secrets-appliance", "rolling-restart", "--no-such-flag"); code != 64 || !strings.Contains(errOut, "no-such-flag") {
		t.Errorf("secrets-appliance rolling-restart with an unknown flag: exit %d, want 64 from the binary's rolling-restart:\n%s", code, errOut)
	}
	if _, _, code := n.ctl(t, tr, nil, "secrets-appliance", "status", "--no-such-flag"); code != 64 {
		t.Errorf("secrets-appliance status --no-such-flag: exit %d, want 64", code)
	}
	initTr := &harness.Transcript{} // the one output that holds secrets
	out, errOut, code = n.ctl(t, initTr, nil, "secrets-appliance", "init", "--format", "json")
	var res initOutput
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || len(res.Shares) != 3 || res.Threshold != 2 || res.RootToken == "" {
		t.Fatalf("secrets-appliance init: exit %d, %d shares (threshold %d), stderr %q", code, len(res.Shares), res.Threshold, errOut)
	}
	secrets := append([]string{res.RootToken}, append(res.Shares, res.RecoveryKeys...)...)
	n.waitCtlStatus(t, tr, s, 0)
	// The API listener (every address, in production) serves no metrics
	// without a token; the loopback listener still does.
	apiSC := map[string]any{"scheme": "http", "metrics_path": "/v1/sys/metrics", "params": sc["params"],
		"static_configs": []any{map[string]any{"targets": []any{listen}}}}
	if code, body := scrape(t, apiSC); code < 400 || code >= 500 || strings.Contains(body, "# TYPE ") {
		t.Errorf("metrics on the API listener without a token: %d %.300s, want a 4xx and no metrics", code, body)
	}
	if code, body := scrape(t, sc); code != 200 || !strings.Contains(body, "# TYPE ") {
		t.Errorf("scrape of the unsealed node: %d %.300s", code, body)
	}
	harness.WaitGitLabBootstrap(t, tr, bin, "http://"+listen)

	tokenFile := n.path("etc/gitlab/root-token")
	if err := os.WriteFile(tokenFile, []byte(res.RootToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := n.ctl(t, tr, nil, "secrets-appliance", "bootstrap", "--token-file", tokenFile); code != 0 {
		t.Fatalf("secrets-appliance bootstrap: exit %d: %s %s", code, out, errOut)
	}
	badToken := n.path("etc/gitlab/bad-token")
	os.WriteFile(badToken, []byte("s.not-a-token\n"), 0o600)
	if _, _, code := n.ctl(t, tr, nil, "secrets-appliance", "bootstrap", "--token-file", badToken); code != 1 {
		t.Errorf("secrets-appliance bootstrap with a bad token: exit %d, want 1", code)
	}
	// The Geo commands on a node without Geo: the binary's refusal and
	// its exit code (TestOmnibusGeoNode runs them on a Geo node).
	if _, errOut, code := n.ctl(t, tr, nil, "secrets-appliance", "geo", "status"); code != 1 || !strings.Contains(errOut, "no geo block") {
		t.Errorf("secrets-appliance geo status without Geo: exit %d, want 1: %q", code, errOut)
	}
	if _, errOut, code := n.ctl(t, tr, nil, "secrets-appliance", "geo", "promote", "--site", "site-b", "--dry-run", "--token-file", tokenFile); code != 1 ||
		!strings.Contains(errOut, "no geo block") {
		t.Errorf("secrets-appliance geo promote without Geo: exit %d, want 1: %q", code, errOut)
	}
	if _, _, code := n.ctl(t, tr, nil, "secrets-appliance", "geo", "promote", "--token-file", tokenFile); code != 64 {
		t.Errorf("secrets-appliance geo promote without --site: exit %d, want 64", code)
	}
	if _, errOut, code := n.ctl(t, tr, nil, "secrets-appliance", "geo", "rejoin"); code != 1 || !strings.Contains(errOut, "no geo block") {
		t.Errorf("secrets-appliance geo rejoin without Geo: exit %d, want 1: %q", code, errOut)
	}
	// Snapshots and drills through gitlab-ctl: a snapshot saved and
	// inspected; restore --new-cluster on the running node's data dir
	// refused; the live drill without Geo refused.
	snap := n.path("var/opt/gitlab/backups/secrets.snap")
	os.MkdirAll(filepath.Dir(snap), 0o700)
	if out, errOut, code := n.ctl(t, tr, nil, "secrets-appliance", "snapshot", "save", snap, "--token-file", tokenFile); code != 0 || !strings.Contains(out, "Saved "+snap) {
		t.Errorf("secrets-appliance snapshot save: exit %d: %s %s", code, out, errOut)
	}
	if out, errOut, code := n.ctl(t, tr, nil, "secrets-appliance", "snapshot", "inspect", snap); code != 0 || !strings.Contains(out, "seal generation 1") {
		t.Errorf("secrets-appliance snapshot inspect: exit %d: %s %s", code, out, errOut)
	}
	if _, errOut, code := n.ctl(t, tr, nil, "secrets-appliance", "snapshot", "restore", snap, "--new-cluster"); code != 3 || !strings.Contains(errOut, "gitlab-ctl stop gitlab-secrets-appliance") {
		t.Errorf("secrets-appliance snapshot restore --new-cluster on a running node: exit %d, want 3: %s", code, errOut)
	}
	if _, errOut, code := n.ctl(t, tr, nil, "secrets-appliance", "drill", "--live", "--site", "b", "--dry-run", "--token-file", tokenFile); code != 1 || !strings.Contains(errOut, "no geo block") {
		t.Errorf("secrets-appliance drill --live without Geo: exit %d, want 1: %s", code, errOut)
	}
	audit := filepath.Join(n.LogDir, "audit.log")
	harness.Eventually(t, time.Minute, "the audit log in the log directory", func() bool {
		st, err := os.Stat(audit)
		return err == nil && st.Size() > 0
	})
	if _, uid, _ := fileMode(t, audit); root && uid != n.Account.UID {
		t.Errorf("audit.log is owned by uid %d, want the service user's %d", uid, n.Account.UID)
	}

	// A restart seals the node: gitlab-ctl's unseal takes the shares.
	if code := s.stop(t); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	s = n.start(t, tr)
	n.waitCtlStatus(t, tr, s, 2)
	if _, _, code := n.ctl(t, tr, []byte("not-a-share\n"), "secrets-appliance", "unseal"); code != 1 {
		t.Errorf("secrets-appliance unseal with a malformed share: exit %d, want 1", code)
	}
	for i, share := range res.Shares[:2] {
		if out, errOut, code := n.ctl(t, tr, []byte(share+"\n"), "secrets-appliance", "unseal"); code != 0 {
			t.Fatalf("secrets-appliance unseal, share %d: exit %d: %s %s", i+1, code, out, errOut)
		}
	}
	n.waitCtlStatus(t, tr, s, 0)
	if code := s.stop(t); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	if out, errOut, code := n.ctl(t, tr, nil, "secrets-appliance", "status"); code != 4 {
		t.Fatalf("secrets-appliance status of a stopped node: exit %d, want 4: %s %s", code, out, errOut)
	}
	ab, _ := os.ReadFile(audit)
	scanForSecrets(t, tr.String()+n.logText(s)+string(ab), secrets)
}

// A node with an HSM (a real SoftHSM2 token) and a TLS listener: the
// recipe makes the operator's PIN file and TLS key root:<group> 0640, the
// token's environment reaches the service (env_dir, chpst -e) and so does
// the token's group (supplementary_groups); gitlab-ctl init enrolls the
// HSM, and after a restart the node unseals by itself. The operator let
// the API listener serve metrics without a token and turned the loopback
// metrics listener off: the scrape config reaches the API listener over
// TLS with the CA. The PIN appears in no output.
func TestOmnibusHSMNode(t *testing.T) {
	needRuby(t)
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	n := newOmnibusNode(t, bin, "gitlab-hsm.example.com")
	hsm := harness.NewSoftHSM(t, "gitlab")
	hsm.GenerateAESKey(t, "gitlab-secrets-kek")
	groups := ""
	if canRunRunit() {
		groups = "gitlab_secrets_appliance['supplementary_groups'] = ['users']\n"
		shareTokenWithGroup(t, hsm, "users")
	}
	ssl := n.path("etc/gitlab/ssl")
	ca := harness.NewCA(t)
	caFile := ca.WriteTo(t, ssl)
	certFile, keyFile := ca.IssueIn(t, ssl, "localhost", "127.0.0.1")
	pinFile := hsm.WritePINFile(t, n.path("etc/gitlab"))
	listen := harness.FreeAddr(t, "127.0.0.1")
	rb := n.baseRB() + groups + fmt.Sprintf(`gitlab_secrets_appliance['env'] = { 'SOFTHSM2_CONF' => %q }
gitlab_secrets_appliance['listen_address'] = %q
gitlab_secrets_appliance['cluster_listen_address'] = %q
gitlab_secrets_appliance['tls_cert_file'] = %q
gitlab_secrets_appliance['tls_key_file'] = %q
gitlab_secrets_appliance['tls_min_version'] = 'tls13'
gitlab_secrets_appliance['ca_cert_file'] = %q
gitlab_secrets_appliance['seal']['pkcs11']['enable'] = true
gitlab_secrets_appliance['seal']['pkcs11']['library'] = %q
gitlab_secrets_appliance['seal']['pkcs11']['token_label'] = %q
gitlab_secrets_appliance['seal']['pkcs11']['pin_file'] = %q
gitlab_secrets_appliance['seal']['shamir']['shares'] = 3
gitlab_secrets_appliance['seal']['shamir']['threshold'] = 2
gitlab_secrets_appliance['metrics_listen_address'] = false
gitlab_secrets_appliance['unauthenticated_metrics_access'] = true
`, hsm.Conf, listen, nextAddr(t, listen), certFile, keyFile, caFile, hsm.Library, hsm.TokenLabel, pinFile)
	code, repOut, repErr := n.reconfigure(t, rb)
	if code != 0 {
		t.Fatalf("reconfigure: exit %d:\n%s", code, repErr)
	}
	cfg := n.renderedConfig(t)
	wantSeal := map[string]any{
		"pkcs11": map[string]any{"library": hsm.Library, "token_label": "gitlab", "key_label": "gitlab-secrets-kek", "pin_file": pinFile},
		"shamir": map[string]any{"shares": 3, "threshold": 2},
	}
	wantListener := map[string]any{"address": listen, "tls_min_version": "tls13", "unauthenticated_metrics_access": true,
		"tls_cert_file": certFile, "tls_key_file": keyFile}
	if !reflect.DeepEqual(cfg["seal"], jsonRoundTrip(t, wantSeal)) || !reflect.DeepEqual(cfg["listener"], jsonRoundTrip(t, []any{wantListener})) {
		t.Fatalf("appliance.json:\n%s", prettyJSON(cfg))
	}
	env, _ := os.ReadFile(filepath.Join(n.EnvDir, "SOFTHSM2_CONF"))
	if string(env) != hsm.Conf {
		t.Fatalf("env_dir SOFTHSM2_CONF = %q, want %q", env, hsm.Conf)
	}
	for _, f := range []string{pinFile, keyFile} {
		mode, uid, gid := fileMode(t, f)
		if mode != 0o640 || (os.Getuid() == 0 && (uid != 0 || gid != n.Account.GID)) {
			t.Errorf("%s after reconfigure: mode %04o uid %d gid %d, want 0640 root:%s", f, mode, uid, gid, n.Account.Group)
		}
	}
	n.validate(t)
	sc := onlyScrapeConfig(t, n)
	if sc["scheme"] != "https" || sc["tls_config"].(map[string]any)["ca_file"] != caFile {
		t.Fatalf("scrape config: %v", sc)
	}

	s := n.start(t, tr)
	n.waitCtlStatus(t, tr, s, 2)
	// The key ceremony through gitlab-ctl, to files: each share and each
	// recovery key named for what it is, each kind with its own quorum.
	initTr := &harness.Transcript{}
	keyDir := n.path("etc/gitlab/secrets-appliance-keys")
	out, errOut, code := n.ctl(t, initTr, nil, "secrets-appliance", "init", "--share-dir", keyDir, "--recovery-shares", "4", "--recovery-threshold", "3")
	if code != 0 {
		t.Fatalf("secrets-appliance init: exit %d, stderr %q", code, errOut)
	}
	var res initOutput
	res.RootToken = lineAfter(t, out, "Initial root token: ")
	for i := 1; i <= 3; i++ {
		f := filepath.Join(keyDir, fmt.Sprintf("unseal-share-%d", i))
		if !strings.Contains(out, fmt.Sprintf("Unseal share %d: %s\n", i, f)) {
			t.Errorf("secrets-appliance init does not name %s unseal share %d:\n%s", f, i, out)
		}
		b, _ := os.ReadFile(f)
		res.Shares = append(res.Shares, strings.TrimSpace(string(b)))
	}
	for i := 1; i <= 4; i++ {
		f := filepath.Join(keyDir, fmt.Sprintf("recovery-key-%d", i))
		if !strings.Contains(out, fmt.Sprintf("Recovery key %d: %s\n", i, f)) {
			t.Errorf("secrets-appliance init does not name %s recovery key %d:\n%s", f, i, out)
		}
	}
	for _, w := range []string{
		"Seal mechanisms: pkcs11, shamir.",
		"Unseal shares: any 2 of the 3 unseal shares unseal a node when the HSM cannot",
		"Recovery keys: any 3 of the 4 recovery keys, each time with a token that has sudo, authorize",
		"Recovery keys never unseal a node.",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("secrets-appliance init does not say %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "Unseal share 4") || strings.Contains(out, "of the 7") {
		t.Errorf("secrets-appliance init counts recovery keys as unseal shares:\n%s", out)
	}
	n.waitCtlStatus(t, tr, s, 0)
	if code := s.stop(t); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	s = n.start(t, tr)
	n.waitCtlStatus(t, tr, s, 0) // no share given: the HSM unsealed it
	out, _, _ = n.ctl(t, tr, nil, "secrets-appliance", "status", "--format", "json")
	var st statusOutput
	json.Unmarshal([]byte(out), &st)
	if m, ok := mechanism(st, "pkcs11"); !ok || !m.Enrolled || !m.LastUsed {
		t.Fatalf("after a restart the HSM did not unseal: %s", out)
	}
	if code, body := scrape(t, sc); code != 200 || !strings.Contains(body, "# TYPE ") {
		t.Fatalf("scrape over TLS: %d %.300s", code, body)
	}
	if code := s.stop(t); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	rendered, _ := os.ReadFile(n.ConfigFile())
	pub, _ := os.ReadFile(n.PublicAttrs)
	scanForSecrets(t, tr.String()+initTr.String()+n.logText(s)+repOut+repErr+string(rendered)+string(pub),
		[]string{hsm.PIN})
	scanForSecrets(t, tr.String()+n.logText(s), append([]string{res.RootToken}, res.Shares...))
}

// shareTokenWithGroup makes the SoftHSM token usable by a group, as an
// operator gives the service user access to a token (Debian's own token
// directory belongs to the softhsm group): the service user gets the
// group through supplementary_groups, not through file ownership.
func shareTokenWithGroup(t *testing.T, hsm *harness.SoftHSM, group string) {
	t.Helper()
	g, err := user.LookupGroup(group)
	if err != nil {
		t.Skipf("no group %s on this machine to share the token with: %v", group, err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	top := filepath.Dir(hsm.Conf)
	for d := top; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o711) // t.TempDir's parents are 0700
	}
	filepath.Walk(top, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		os.Lchown(p, 0, gid)
		switch {
		case fi.IsDir():
			os.Chmod(p, 0o770)
		case p == hsm.Conf:
			os.Chmod(p, 0o640)
		default:
			os.Chmod(p, 0o660)
		}
		return nil
	})
}

// omnibusGeoSites is gitlab_secrets_appliance['geo']['sites'] of the 3 + 2
// nodes, the same in every node's gitlab.rb: site A primary with a
// preferred leader, its nodes by id only (one as a bare String), so their
// addresses default to https://<id>:8200 and :8201; site B's first node
// advertised under another name, its second defaulted.
const omnibusGeoSites = `gitlab_secrets_appliance['geo']['sites'] = [
  { 'name' => 'site-a', 'primary' => true, 'preferred_leader' => 'gitlab-a2.example.com',
    'nodes' => [{ 'id' => 'gitlab-a1.example.com' }, { 'id' => 'gitlab-a2.example.com' }, 'gitlab-a3.example.com'] },
  { 'name' => 'site-b',
    'nodes' => [{ 'id' => 'gitlab-b1.example.com', 'api_addr' => 'https://secrets-b1.example.com:8200',
                  'cluster_addr' => 'https://secrets-b1.example.com:8201' },
                { 'id' => 'gitlab-b2.example.com' }] }
]
`

// Settings the appliance would refuse stop reconfigure with the
// appliance's own message, before appliance.json is replaced; settings the
// cookbook cannot map stop it naming the gitlab.rb key. With Geo: a node
// missing from the sites is named, with the sites; raft['non_voter'] is
// refused; a topology the appliance refuses (two primaries) is not
// written.
func TestOmnibusReconfigureRefusesInvalidSettings(t *testing.T) {
	needRuby(t)
	bin := harness.Binary(t)
	n := newOmnibusNode(t, bin, "gitlab-1.example.com")
	listen := harness.FreeAddr(t, "127.0.0.1")
	good := n.baseRB() + fmt.Sprintf("gitlab_secrets_appliance['listen_address'] = %q\ngitlab_secrets_appliance['tls_disable'] = true\n", listen)
	n.mustReconfigure(t, good)
	before, _ := os.ReadFile(n.ConfigFile())
	const geoOn = "gitlab_secrets_appliance['geo']['enable'] = true\n"
	const geoSites = "gitlab_secrets_appliance['geo']['sites'] = [{ 'name' => 'site-a', 'primary' => true, 'nodes' => ['gitlab-1.example.com'] }, " +
		"{ 'name' => 'site-b', 'nodes' => ['gitlab-2.example.com'] }]\n"
	for _, tc := range []struct{ name, rb, want string }{
		{"HSM without a PIN", "gitlab_secrets_appliance['seal']['pkcs11']['enable'] = true\n" +
			"gitlab_secrets_appliance['seal']['pkcs11']['library'] = '/usr/lib/softhsm/libsofthsm2.so'\n" +
			"gitlab_secrets_appliance['seal']['pkcs11']['token_label'] = 'gitlab'\n", "seal.pkcs11: no PIN"},
		{"plain HTTP on all addresses", "gitlab_secrets_appliance['listen_address'] = '0.0.0.0:8200'\n",
			"plain HTTP is allowed on loopback addresses only"},
		{"bad node id", "gitlab_secrets_appliance['node_id'] = 'gitlab 1'\n", "is not a valid node id"},
		{"unknown retry_join key", "gitlab_secrets_appliance['raft']['retry_join'] = [{ 'leader_api_addr' => 'https://gitlab-2.example.com:8200', 'leader_ca_cert' => '/x' }]\n",
			"gitlab_secrets_appliance['raft']['retry_join'][0]: unknown key(s) leader_ca_cert"},
		{"no seal", "gitlab_secrets_appliance['seal']['shamir']['enable'] = false\n", "gitlab_secrets_appliance['seal']: enable pkcs11, shamir, or both"},
		{"node not in the Geo sites", geoOn + "gitlab_secrets_appliance['geo']['sites'] = [{ 'name' => 'site-a', 'primary' => true, 'nodes' => ['gitlab-2.example.com', 'gitlab-3.example.com'] }, " +
			"{ 'name' => 'site-b', 'nodes' => ['gitlab-4.example.com'] }]\n",
			"this node's node_id gitlab-1.example.com is not a node of any site (site-a: gitlab-2.example.com, gitlab-3.example.com; site-b: gitlab-4.example.com)"},
		{"Geo without sites", geoOn, "gitlab_secrets_appliance['geo']['sites']: list the Geo sites"},
		{"Geo and non_voter", geoOn + geoSites + "gitlab_secrets_appliance['raft']['non_voter'] = true\n",
			"gitlab_secrets_appliance['raft']['non_voter'] cannot be set with gitlab_secrets_appliance['geo']['enable']"},
		{"Geo site with an unknown key", geoOn + "gitlab_secrets_appliance['geo']['sites'] = [{ 'name' => 'site-a', 'primary_site' => true, 'nodes' => ['gitlab-1.example.com'] }]\n",
			"gitlab_secrets_appliance['geo']['sites'][0]: unknown key(s) primary_site"},
		{"two Geo primaries", geoOn + strings.Replace(geoSites, "'name' => 'site-b'", "'name' => 'site-b', 'primary' => true", 1),
			"2 primary sites (site-a, site-b): Geo has exactly one primary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := n.reconfigure(t, good+tc.rb)
			if code == 0 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("reconfigure: exit %d, want a failure saying %q:\n%s", code, tc.want, errOut)
			}
			if after, _ := os.ReadFile(n.ConfigFile()); !bytes.Equal(before, after) {
				t.Fatalf("a refused reconfigure replaced appliance.json:\n%s", after)
			}
			if _, err := os.Stat(n.TopologyFile()); !os.IsNotExist(err) {
				t.Fatalf("a refused reconfigure wrote the topology file (%v)", err)
			}
		})
	}
}

// With gitlab_secrets_appliance['enable'] = false the disable recipe runs:
// the runit service is disabled, the data stays, and gitlab-ctl's
// commands say the appliance is not enabled here (exit 3) without running
// anything.
func TestOmnibusDisabled(t *testing.T) {
	needRuby(t)
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	n := newOmnibusNode(t, bin, "gitlab-1.example.com")
	n.mustReconfigure(t, strings.Replace(n.baseRB(), "['enable'] = true", "['enable'] = false", 1))
	if n.Report.Recipe != "disable" || len(n.Report.Resources) != 1 ||
		n.Report.resource(t, "runit_service", "gitlab-secrets-appliance")["action"] != "disable" {
		t.Fatalf("disable recipe: %+v", n.Report)
	}
	for _, sub := range [][]string{{"status"}, {"init"}, {"unseal"}, {"bootstrap"}, {"check"}, {"geo", "status"}, {"geo", "promote", "--force"},
		{"snapshot", "inspect", "/nonexistent"}, {"drill"}, {"rolling-restart"}} {
		_, errOut, code := n.ctl(t, tr, nil, append([]string{"secrets-appliance"}, sub...)...)
		if code != 3 || !strings.Contains(errOut, "gitlab_secrets_appliance['enable'] = true") {
			t.Errorf("secrets-appliance %s on a node without the appliance: exit %d, %q", strings.Join(sub, " "), code, errOut)
		}
	}
}

// Every Ruby file of the cookbook, the gitlab-ctl commands and the test
// harnesses parses with warnings on, and every template compiles.
func TestOmnibusRubyAndTemplatesParse(t *testing.T) {
	needRuby(t)
	var rb, erb int
	filepath.Walk(omnibusDir(t), func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		switch filepath.Ext(p) {
		case ".rb":
			rb++
			out, err := exec.Command("ruby", "-wc", p).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "Syntax OK" {
				t.Errorf("ruby -wc %s: %v\n%s", p, err, out)
			}
		case ".erb":
			erb++
			src, err := exec.Command("erb", "-x", "-T", "-", p).Output()
			if err != nil {
				t.Fatalf("erb -x %s: %v", p, err)
			}
			cmd := exec.Command("ruby", "-c")
			cmd.Stdin = bytes.NewReader(src)
			if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Syntax OK") {
				t.Errorf("template %s does not compile: %v\n%s", p, err, out)
			}
		}
		return nil
	})
	if rb < 10 || erb < 4 {
		t.Fatalf("found %d Ruby files and %d templates under %s: the cookbook is not where it should be", rb, erb, omnibusDir(t))
	}
}
