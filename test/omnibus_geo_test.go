package test

// The Omnibus cookbook on Geo nodes: the topology rendered from gitlab.rb
// and gitlab-ctl geo commands (see omnibus_test.go).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// omnibusGeoTopology is the topology omnibusGeoSites must become.
func omnibusGeoTopology() geo.Topology {
	node := func(id string) geo.Node {
		return geo.Node{ID: id, APIAddr: "https://" + id + ":8200", ClusterAddr: "https://" + id + ":8201"}
	}
	return geo.Topology{Sites: []geo.Site{
		{Name: "site-a", Primary: true, PreferredLeader: "gitlab-a2.example.com",
			Nodes: []geo.Node{node("gitlab-a1.example.com"), node("gitlab-a2.example.com"), node("gitlab-a3.example.com")}},
		{Name: "site-b", Nodes: []geo.Node{
			{ID: "gitlab-b1.example.com", APIAddr: "https://secrets-b1.example.com:8200", ClusterAddr: "https://secrets-b1.example.com:8201"},
			node("gitlab-b2.example.com")}},
	}}
}

// readTopology decodes a topology file as the appliance does (unknown keys
// refused) and validates it.
func readTopology(t *testing.T, path string) (geo.Topology, []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var topo geo.Topology
	if err := dec.Decode(&topo); err != nil {
		t.Fatalf("%s is not a topology: %v\n%s", path, err, b)
	}
	if err := topo.Validate(); err != nil {
		t.Fatalf("%s does not validate: %v\n%s", path, err, b)
	}
	return topo, b
}

// A Geo cluster of 3 nodes in site A and 2 in site B, each node with the
// same gitlab.rb (the same sites list) but its own name and certificate.
// Every node gets the same topology file (root:<group> 0644), which the
// appliance's geo package reads as the expected topology, and an
// appliance.json whose geo block names it (with the CA, and the mirrored
// gitlab-cluster.json): no non_voter, no retry_join, no addresses of its
// own (the appliance takes them from the topology: every other node,
// primary site first). Site A unseals with a shared HSM and shares, site B
// with shares only; site B's nodes have a gitlab-cluster.json (root 0600)
// whose Geo role alone is mirrored, with its modification time. The
// snapshots keys become the snapshot block, its directory the service
// user's (0700).
// Every rendered config passes config validate, and a second reconfigure
// rewrites nothing.
func TestOmnibusGeoTopologyConfigs(t *testing.T) {
	needRuby(t)
	bin := harness.Binary(t)
	hsm := harness.NewSoftHSM(t, "gitlab")
	hsm.GenerateAESKey(t, "gitlab-secrets-kek")
	ca := harness.NewCA(t)
	want := omnibusGeoTopology()
	topologies := map[string][]byte{}
	for _, site := range want.Sites {
		for _, node := range site.Nodes {
			name := node.ID
			t.Run(name, func(t *testing.T) {
				n := newOmnibusNode(t, bin, name)
				ssl := n.path("etc/gitlab/ssl")
				caFile := ca.WriteTo(t, ssl)
				certFile, keyFile := ca.IssueIn(t, ssl, name)
				rb := n.baseRB() + fmt.Sprintf(`external_url 'https://gitlab.example.com'
gitlab_rails['openbao']['url'] = 'https://secrets.gitlab.example.com'
gitlab_secrets_appliance['tls_cert_file'] = %q
gitlab_secrets_appliance['tls_key_file'] = %q
gitlab_secrets_appliance['ca_cert_file'] = %q
gitlab_secrets_appliance['gitlab']['enable'] = true
gitlab_secrets_appliance['geo']['enable'] = true
gitlab_secrets_appliance['snapshots']['enable'] = true
gitlab_secrets_appliance['snapshots']['retain_age'] = '168h'
`, certFile, keyFile, caFile) + omnibusGeoSites
				clusterTime := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
				if site.Primary {
					rb += fmt.Sprintf(`gitlab_secrets_appliance['env'] = { 'SOFTHSM2_CONF' => %q }
gitlab_secrets_appliance['seal']['pkcs11']['enable'] = true
gitlab_secrets_appliance['seal']['pkcs11']['library'] = %q
gitlab_secrets_appliance['seal']['pkcs11']['token_label'] = 'gitlab'
gitlab_secrets_appliance['seal']['pkcs11']['pin_file'] = %q
`, hsm.Conf, hsm.Library, hsm.WritePINFile(t, n.path("etc/gitlab")))
				} else {
					// What omnibus-gitlab's GitlabCluster#save writes: root's, 0600.
					src := `{"geo_secondary": {"enable": true}, "patroni": {"standby_cluster": {"enable": true}}}`
					if err := os.WriteFile(n.GitlabClusterJSON(), []byte(src), 0o600); err != nil {
						t.Fatal(err)
					}
					os.Chtimes(n.GitlabClusterJSON(), clusterTime, clusterTime)
				}
				n.mustReconfigure(t, rb)
				cfg := n.renderedConfig(t)
				n.validate(t)

				// appliance.json: the geo block, and nothing the topology decides.
				if cfg["node_id"] != name {
					t.Errorf("node_id %v", cfg["node_id"])
				}
				wantGeo := map[string]any{"topology_file": n.TopologyFile(), "cluster_file": n.GeoClusterCopy(), "ca_cert_file": caFile}
				if !reflect.DeepEqual(cfg["geo"], jsonRoundTrip(t, wantGeo)) {
					t.Errorf("geo block %v, want %v", cfg["geo"], wantGeo)
				}
				for _, k := range []string{"api_addr", "cluster_addr"} {
					if v, ok := cfg[k]; ok {
						t.Errorf("appliance.json sets %s = %v: the topology gives it", k, v)
					}
				}
				if raft := cfg["raft"]; !reflect.DeepEqual(raft, jsonRoundTrip(t, map[string]any{"performance_multiplier": 1})) {
					t.Errorf("raft block %v: want no non_voter and no retry_join with Geo", raft)
				}

				// The topology file: what the appliance reads, on every node the same.
				topo, b := readTopology(t, n.TopologyFile())
				if !reflect.DeepEqual(topo, want) {
					t.Errorf("topology:\n%s\nwant:\n%s", prettyJSON(topo), prettyJSON(want))
				}
				topologies[name] = b
				if mode, uid, gid := fileMode(t, n.TopologyFile()); mode != 0o644 || (os.Getuid() == 0 && (uid != 0 || gid != n.Account.GID)) {
					t.Errorf("topology file: mode %04o uid %d gid %d, want 0644 root:%s", mode, uid, gid, n.Account.Group)
				}
				if f := n.Report.resource(t, "file", n.TopologyFile()); f["owner"] != "root" || f["group"] != n.Account.Group || f["mode"] != "0644" {
					t.Errorf("topology file resource: %v", f)
				}
				// What the appliance derives from it for this node.
				_, self, _ := topo.SiteOf(name)
				plan, err := geo.PlanFor(&topo)
				if err != nil {
					t.Fatal(err)
				}
				joins := plan.RetryJoin(name)
				if len(joins) != 4 || slices.Contains(joins, self.APIAddr) {
					t.Errorf("retry_join from the topology: %v, want the 4 other nodes", joins)
				}
				if site.Name == "site-b" && !strings.HasPrefix(joins[0], "https://gitlab-a") {
					t.Errorf("retry_join from the topology: %v, want site A's nodes first", joins)
				}
				if m, _ := plan.Member(name); m.Voter != site.Primary {
					t.Errorf("planned voter %v in %s", m.Voter, site.Name)
				}

				// gitlab-cluster.json's Geo role, mirrored for the service.
				if site.Primary {
					if _, err := os.Stat(n.GeoClusterCopy()); !os.IsNotExist(err) {
						t.Errorf("a mirror of a gitlab-cluster.json that does not exist: %v", err)
					}
				} else {
					b, _ := os.ReadFile(n.GeoClusterCopy())
					var roles map[string]any
					if json.Unmarshal(b, &roles) != nil || !reflect.DeepEqual(roles, map[string]any{"geo_secondary": map[string]any{"enable": true}}) {
						t.Errorf("mirrored gitlab-cluster.json: %s", b)
					}
					st, err := os.Stat(n.GeoClusterCopy())
					if err != nil || !st.ModTime().Equal(clusterTime) {
						t.Errorf("mirrored gitlab-cluster.json modified at %v (%v), want the source's %v", st.ModTime(), err, clusterTime)
					}
					if mode, uid, gid := fileMode(t, n.GeoClusterCopy()); mode != 0o640 || (os.Getuid() == 0 && (uid != 0 || gid != n.Account.GID)) {
						t.Errorf("mirrored gitlab-cluster.json: mode %04o uid %d gid %d, want 0640 root:%s", mode, uid, gid, n.Account.Group)
					}
				}

				seal := cfg["seal"].(map[string]any)
				if _, hasHSM := seal["pkcs11"]; hasHSM != site.Primary || seal["shamir"] == nil {
					t.Errorf("seal in %s: %v", site.Name, seal)
				}
				g := cfg["gitlab"].(map[string]any)
				if g["url"] != "https://gitlab.example.com" || g["jwks_url"] != "https://gitlab.example.com/oauth/discovery/keys" ||
					g["audience"] != "https://secrets.gitlab.example.com" {
					t.Errorf("gitlab block: %v", g)
				}
				warnings := strings.Join(n.Report.Warnings, "\n")
				snap, _ := cfg["snapshot"].(map[string]any)
				if snap["interval"] != "1h" || snap["retain_count"] != float64(24) || snap["retain_age"] != "168h" ||
					snap["directory"] != filepath.Join(n.Dir, "snapshots") {
					t.Errorf("snapshot block: %v", cfg["snapshot"])
				}
				if mode, uid, _ := fileMode(t, filepath.Join(n.Dir, "snapshots")); mode != 0o700 || (os.Geteuid() == 0 && uid != n.Account.UID) {
					t.Errorf("the snapshot directory: mode %o, uid %d", mode, uid)
				}
				if strings.Contains(warnings, "snapshots") {
					t.Errorf("warnings about snapshots: %v", n.Report.Warnings)
				}
				if strings.Contains(warnings, "geo") {
					t.Errorf("warnings about Geo: %v", n.Report.Warnings)
				}
				// gitlab-ctl reaches this node at its topology address,
				// Prometheus at its loopback metrics listener.
				sc := onlyScrapeConfig(t, n)
				targets := sc["static_configs"].([]any)[0].(map[string]any)["targets"].([]any)
				if targets[0] != n.MetricsAddr || sc["scheme"] != "http" {
					t.Errorf("scrape config: %v, want target %s", sc, n.MetricsAddr)
				}
				var pub map[string]map[string]any
				pb, _ := os.ReadFile(n.PublicAttrs)
				if json.Unmarshal(pb, &pub) != nil || pub["gitlab_secrets_appliance"]["ctl_address"] != self.APIAddr {
					t.Errorf("public attributes: %s, want ctl_address %s", pb, self.APIAddr)
				}

				// Reconfigure again: the same files, not rewritten.
				before := map[string]time.Time{}
				for _, f := range []string{n.TopologyFile(), n.ConfigFile(), n.GeoClusterCopy()} {
					if st, err := os.Stat(f); err == nil {
						before[f] = st.ModTime()
					}
				}
				n.mustReconfigure(t, rb)
				for f, m := range before {
					if st, err := os.Stat(f); err != nil || !st.ModTime().Equal(m) {
						t.Errorf("a second reconfigure rewrote %s", f)
					}
				}
			})
		}
	}
	var first []byte
	for name, b := range topologies {
		if first == nil {
			first = b
		} else if !bytes.Equal(b, first) {
			t.Errorf("%s's topology file differs from another node's:\n%s\n%s", name, b, first)
		}
	}
	if len(topologies) != 5 {
		t.Errorf("%d topology files, want 5", len(topologies))
	}
}

// geoStatusOutput is `geo status --format json`.
type geoStatusOutput struct {
	Site             string `json:"site"`
	PrimarySite      string `json:"primary_site"`
	PrimarySource    string `json:"primary_source"`
	TopologyError    string `json:"topology_error"`
	ClusterFileRole  string `json:"cluster_file_role"`
	ClusterFileError string `json:"cluster_file_error"`
	Reconciler       string `json:"reconciler"`
	Nodes            []struct {
		ID     string `json:"id"`
		Site   string `json:"site"`
		InRaft bool   `json:"in_raft"`
		Voter  bool   `json:"voter"`
		Leader bool   `json:"leader"`
	} `json:"nodes"`
}

// A Geo node installed the Omnibus way and running: the primary site's
// only node, with a secondary site whose node never comes. It follows the
// topology file reconfigure wrote and the Geo role reconfigure mirrored
// from gitlab-cluster.json (root's, 0600, which the service user could not
// read); gitlab-ctl's secrets-appliance geo status and -geo-promote run
// the binary's geo commands against it and pass their exit codes on; a
// reconfigure with another node in the sites reaches the running node
// without a restart. The pre-topology key geo['primary_site'] is logged as
// deprecated and ignored.
func TestOmnibusGeoNode(t *testing.T) {
	needRuby(t)
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	const name = "gitlab-geo1.example.com"
	n := newOmnibusNode(t, bin, name)
	listen := harness.FreeAddr(t, "127.0.0.1")
	if err := os.WriteFile(n.GitlabClusterJSON(), []byte(`{"primary": true, "secondary": false}`), 0o600); err != nil {
		t.Fatal(err)
	}
	sites := func(siteB string) string {
		return fmt.Sprintf(`gitlab_secrets_appliance['geo']['sites'] = [
  { 'name' => 'site-a', 'primary' => true, 'nodes' => [{ 'id' => %q, 'api_addr' => 'http://%s', 'cluster_addr' => 'https://%s' }] },
  { 'name' => 'site-b', 'nodes' => %s }
]
`, name, listen, nextAddr(t, listen), siteB)
	}
	rb := n.baseRB() + fmt.Sprintf(`gitlab_secrets_appliance['listen_address'] = %q
gitlab_secrets_appliance['cluster_listen_address'] = %q
gitlab_secrets_appliance['tls_disable'] = true
gitlab_secrets_appliance['seal']['shamir']['shares'] = 1
gitlab_secrets_appliance['seal']['shamir']['threshold'] = 1
gitlab_secrets_appliance['geo']['enable'] = true
gitlab_secrets_appliance['geo']['primary_site'] = 'site-a'
`, listen, nextAddr(t, listen))
	n.mustReconfigure(t, rb+sites("['gitlab-geo2.invalid']"))
	n.validate(t)
	if w := strings.Join(n.Report.Warnings, "\n"); !strings.Contains(w, "gitlab_secrets_appliance['geo']['primary_site'] is no longer used and is ignored") {
		t.Errorf("no deprecation of geo['primary_site']: %v", n.Report.Warnings)
	}
	var pub map[string]map[string]any
	b, _ := os.ReadFile(n.PublicAttrs)
	if json.Unmarshal(b, &pub) != nil || pub["gitlab_secrets_appliance"]["ctl_address"] != "http://"+listen {
		t.Fatalf("public attributes: %s (want the topology's address for this node)", b)
	}

	s := n.start(t, tr)
	n.waitCtlStatus(t, tr, s, 2)
	initTr := &harness.Transcript{}
	out, errOut, code := n.ctl(t, initTr, nil, "secrets-appliance", "init", "--format", "json")
	var res initOutput
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.RootToken == "" {
		t.Fatalf("secrets-appliance init: exit %d, stderr %q", code, errOut)
	}
	n.waitCtlStatus(t, tr, s, 0)
	tokenFile := n.path("etc/gitlab/root-token")
	if err := os.WriteFile(tokenFile, []byte(res.RootToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	geoStatus := func() (geoStatusOutput, int) {
		out, _, code := n.ctl(t, tr, nil, "secrets-appliance", "geo", "status", "--format", "json")
		var st geoStatusOutput
		if code == 0 && json.Unmarshal([]byte(out), &st) != nil {
			t.Fatalf("secrets-appliance geo status --format json: %q", out)
		}
		return st, code
	}
	hasNode := func(st geoStatusOutput, id string) bool {
		for _, x := range st.Nodes {
			if x.ID == id {
				return true
			}
		}
		return false
	}
	var st geoStatusOutput
	harness.Eventually(t, time.Minute, "geo status with site-a primary and both sites' nodes", func() bool {
		var code int
		st, code = geoStatus()
		return code == 0 && st.PrimarySite == "site-a" && hasNode(st, name) && hasNode(st, "gitlab-geo2.invalid")
	})
	if st.Site != "site-a" || st.TopologyError != "" || st.ClusterFileRole != "primary" || st.ClusterFileError != "" {
		t.Errorf("geo status: %+v; want site-a, the topology taken, and gitlab-cluster.json's role (primary) read from the mirror", st)
	}
	if out, _, code := n.ctl(t, tr, nil, "secrets-appliance", "geo", "status"); code != 0 || !strings.Contains(out, "Primary site site-a") {
		t.Errorf("secrets-appliance geo status: exit %d: %s", code, out)
	}
	if _, _, code := n.ctl(t, tr, nil, "secrets-appliance", "geo", "status", "--no-such-flag"); code != 64 {
		t.Errorf("secrets-appliance geo status --no-such-flag: exit %d, want 64", code)
	}

	// geo promote: the checks pass for the site that is primary, fail for
	// a site whose node is not there; a missing --site is a usage error, a
	// bad token a failure.
	out, errOut, code = n.ctl(t, tr, nil, "secrets-appliance", "geo", "promote", "--site", "site-a", "--dry-run", "--format", "json", "--token-file", tokenFile)
	if code != 0 || !strings.Contains(out, `"started": false`) || !strings.Contains(out, `"check": "quorum"`) {
		t.Errorf("secrets-appliance geo promote --site site-a --dry-run: exit %d: %s %s", code, out, errOut)
	}
	out, errOut, code = n.ctl(t, tr, nil, "secrets-appliance", "geo", "promote", "--site", "site-b", "--dry-run", "--token-file", tokenFile)
	if code != 1 || !strings.Contains(out, "FAIL node gitlab-geo2.invalid") {
		t.Errorf("secrets-appliance geo promote --site site-b --dry-run (its node is not there): exit %d, want 1: %s %s", code, out, errOut)
	}
	if _, _, code := n.ctl(t, tr, nil, "secrets-appliance", "geo", "promote", "--dry-run", "--token-file", tokenFile); code != 64 {
		t.Errorf("secrets-appliance geo promote without --site: exit %d, want 64", code)
	}
	badToken := n.path("etc/gitlab/bad-token")
	os.WriteFile(badToken, []byte("s.not-a-token\n"), 0o600)
	if _, errOut, code := n.ctl(t, tr, nil, "secrets-appliance", "geo", "promote", "--site", "site-a", "--dry-run", "--token-file", badToken); code != 1 ||
		!strings.Contains(errOut, "sys/appliance/geo") {
		t.Errorf("secrets-appliance geo promote with a bad token: exit %d, want 1: %s", code, errOut)
	}
	// The offline commands get the rendered config: on a running node they
	// refuse, saying how to stop it.
	for _, args := range [][]string{
		{"secrets-appliance", "geo", "promote", "--site", "site-a", "--force", "--fenced-site", "site-b"},
		{"secrets-appliance", "geo", "rejoin", "--yes"},
		{"secrets-appliance", "check"},
	} {
		if _, errOut, code := n.ctl(t, tr, nil, args...); code != 3 || !strings.Contains(errOut, "gitlab-ctl stop gitlab-secrets-appliance") {
			t.Errorf("%v on a running node: exit %d, want 3: %s", args, code, errOut)
		}
	}

	// A node added to the sites: reconfigure rewrites the topology file and
	// the running node follows it (no restart, no signal here).
	n.mustReconfigure(t, rb+sites("['gitlab-geo2.invalid', 'gitlab-geo3.invalid']"))
	harness.Eventually(t, time.Minute, "the running node to follow the new topology", func() bool {
		st, code := geoStatus()
		return code == 0 && hasNode(st, "gitlab-geo3.invalid")
	})
	if s.exited() {
		t.Fatal("the appliance exited")
	}
	if code := s.stop(t); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	if _, _, code := n.ctl(t, tr, nil, "secrets-appliance", "geo", "status"); code != 4 {
		t.Errorf("secrets-appliance geo status of a stopped node: exit %d, want 4", code)
	}
	scanForSecrets(t, tr.String()+n.logText(s), []string{res.RootToken})
}
