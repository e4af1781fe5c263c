package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// drillReport is what `drill --format json` prints.
type drillReport struct {
	Passed         bool     `json:"passed"`
	RTO            float64  `json:"rto_seconds"`
	WriteGap       float64  `json:"write_gap_seconds"`
	SecretsChecked int      `json:"secrets_checked"`
	SecretPaths    []string `json:"secret_paths"`
	Unsealed       string   `json:"unsealed_with"`
	Checks         []struct {
		Name   string `json:"name"`
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	} `json:"checks"`
	RPO *struct {
		LostEntriesAtMost uint64 `json:"lost_entries_at_most"`
	} `json:"rpo"`
}

// The offline drill on a 3+2 Geo cluster's snapshot, unsealed by SoftHSM in
// one run and by Shamir shares on standard input in another: every check
// passes (every secret of the snapshot in the promoted site's storage, a
// write after the promotion, the old site fenced, nothing left behind), the
// report lists them with the RTO and RPO and is written as Markdown and
// JSON. With one wrong share the drill fails and names the holder. No
// token, share or secret value appears in any output or report.
func TestDrill(t *testing.T) {
	hsm := harness.NewSoftHSM(t, "gitlab-secrets")
	hsm.GenerateAESKey(t, "kek")
	t.Setenv("SOFTHSM2_CONF", hsm.Conf)
	c := newCluster(t, clusterOptions{env: hsm.Env(), geo: &geoLayout{sites: []int{3, 2}},
		seal: func(dir string) string { return hsmSeal(t, hsm, dir, "kek", true) }})
	defer c.stop()
	c.waitGeo("site A's voters", converged([]string{"node-1", "node-2", "node-3"}, ""))
	c.mountKV()
	kv := c.client(c.leader()).KVv2("kv")
	const secret = "drill-secret-value-5e1f"
	for i := range 25 {
		if _, err := kv.Put(context.Background(), fmt.Sprintf("app/s%d", i), map[string]any{"v": fmt.Sprintf("%s-%d", secret, i)}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	snap := filepath.Join(dir, "prod.snap")
	if _, errOut, code := harness.Run(t, c.tr, []byte(c.res.RootToken+"\n"), c.bin, "snapshot", "save", snap, "--address", c.leader().addr); code != 0 {
		t.Fatalf("snapshot save: exit %d: %s", code, errOut)
	}
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(c.res.RootToken+"\n"), 0o600)
	prod := c.nodes[0].cfg
	var outputs strings.Builder
	drill := func(name, unseal, stdin string) (drillReport, string, int) {
		reports := filepath.Join(dir, "reports-"+name)
		out, errOut, code := harness.Run(t, c.tr, []byte(stdin), c.bin, "drill", "--config", prod, "--snapshot", snap, "--unseal", unseal,
			"--token-file", tokenFile, "--report-dir", reports, "--work-dir", dir, "--format", "json")
		outputs.WriteString(out + errOut)
		var r drillReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("drill %s: exit %d: %s %s", name, code, out, errOut)
		}
		files, _ := filepath.Glob(filepath.Join(reports, "drill-*"))
		if len(files) != 2 {
			t.Errorf("drill %s wrote %v, want a .md and a .json", name, files)
		}
		for _, f := range files {
			b, _ := os.ReadFile(f)
			outputs.Write(b)
		}
		left, _ := filepath.Glob(filepath.Join(dir, "gsa-drill-*"))
		if len(left) != 0 {
			t.Errorf("drill %s left %v", name, left)
		}
		return r, errOut, code
	}
	passed := func(name string, r drillReport, errOut string, code int) {
		t.Helper()
		if code != 0 || !r.Passed {
			t.Fatalf("drill %s: exit %d, report %+v\n%s", name, code, r, errOut)
		}
		want := map[string]bool{"cluster formed": false, "write after the promotion": false, "the old site cannot lead": false, "nothing left behind": false,
			"secrets on drill-site-b-1": false, "secrets on drill-site-b-2": false, "RPO recorded": false}
		for _, ch := range r.Checks {
			if _, ok := want[ch.Name]; ok {
				want[ch.Name] = ch.OK
			}
		}
		for name, ok := range want {
			if !ok {
				t.Errorf("drill %s: check %q missing or failed: %+v", name, name, r.Checks)
			}
		}
		if r.SecretsChecked < 25 || len(r.SecretPaths) != r.SecretsChecked || r.RTO <= 0 || r.RPO == nil {
			t.Errorf("drill %s: %d secrets checked, RTO %.1f s, RPO %+v", name, r.SecretsChecked, r.RTO, r.RPO)
		}
		t.Logf("drill %s: RTO %.1f s, RPO at most %d entries, %d secrets checked, unsealed with %s", name, r.RTO, r.RPO.LostEntriesAtMost, r.SecretsChecked, r.Unsealed)
	}
	r, errOut, code := drill("hsm", "hsm", "")
	passed("hsm", r, errOut, code)
	if !strings.Contains(r.Unsealed, "token gitlab-secrets, key kek") {
		t.Errorf("unsealed with %q", r.Unsealed)
	}
	r, errOut, code = drill("shares", "shares", strings.Join(c.res.Shares[:2], "\n")+"\n")
	passed("shares", r, errOut, code)
	if r.Unsealed != "Shamir shares of holders 1, 2" {
		t.Errorf("unsealed with %q", r.Unsealed)
	}
	wrong := []byte(c.res.Shares[1])
	wrong[len(wrong)/2] ^= 0x01
	r, errOut, code = drill("wrong-share", "shares", c.res.Shares[0]+"\n"+string(wrong)+"\n")
	if code != 1 || r.Passed || !strings.Contains(errOut, "the share of holder 2 was refused") {
		t.Fatalf("a drill with a wrong share: exit %d, passed %v: %s", code, r.Passed, errOut)
	}
	scanForSecrets(t, outputs.String(), append([]string{c.res.RootToken, secret, string(wrong), hsm.PIN}, c.res.Shares...))
}

// drill --live on a running 3+2 cluster under a writer: --dry-run runs the
// pre-flight checks and changes nothing; the drill switches to site B and
// back with canaries through every node, no acknowledged write (the
// drill's or the writer's) is lost, and the report gives the write gap.
func TestLiveDrill(t *testing.T) {
	c := newCluster(t, clusterOptions{geo: &geoLayout{sites: []int{3, 2}, preferred: map[string]string{"site-a": "node-1", "site-b": "node-4"}},
		extra: "snapshot {\n  interval = \"2s\"\n}\n"})
	defer c.stop()
	primary := []string{"node-1", "node-2", "node-3"}
	c.waitGeo("site A's voters and a snapshot", func(st statusOutput) bool {
		return converged(primary, "node-1")(st) && st.Snapshots != nil && st.Snapshots.LastSuccess != nil
	})
	for _, m := range c.nodes {
		harness.Eventually(t, time.Minute, m.id+" unsealed and ready", func() bool {
			st, ok := tryStatus(t, c.tr, c.bin, m.addr)
			return ok && !st.Sealed && st.Ready
		})
	}
	c.mountKV()
	l := startLoad(c, 4)
	dir := t.TempDir()
	live := func(extra ...string) (drillReport, string, int) {
		args := append([]string{"drill", "--live", "--site", "site-b", "--address", c.nodes[3].addr, "--report-dir", dir, "--format", "json"}, extra...)
		out, errOut, code := harness.Run(t, c.tr, []byte(c.res.RootToken+"\n"), c.bin, args...)
		var r drillReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("drill --live %v: exit %d: %s %s", extra, code, out, errOut)
		}
		return r, errOut, code
	}
	r, errOut, code := live("--dry-run")
	if code != 0 || !r.Passed || len(r.Checks) < 8 {
		t.Fatalf("drill --live --dry-run: exit %d, %+v\n%s", code, r, errOut)
	}
	if st := c.waitGeo("site A still primary after the dry run", converged(primary, "node-1")); st.Geo.PrimarySite != "site-a" {
		t.Fatalf("the dry run moved the primary to %s", st.Geo.PrimarySite)
	}
	r, errOut, code = live()
	if code != 0 || !r.Passed {
		t.Fatalf("drill --live: exit %d, %+v\n%s", code, r, errOut)
	}
	mustGlob(t, filepath.Join(dir, "drill-*.md"))
	mustGlob(t, filepath.Join(dir, "drill-*.json"))
	lostChecked := false
	for _, ch := range r.Checks {
		if ch.Name == "no acknowledged write lost" && ch.OK {
			lostChecked = true
			t.Logf("live drill: %s", ch.Detail)
		}
	}
	if !lostChecked || r.WriteGap <= 0 {
		t.Errorf("the live drill's report: %+v", r)
	}
	c.waitGeo("site A primary again", converged(primary, "node-1"))
	l.finish(t, c.leader(), c.byID("node-5"))
}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil || len(m) == 0 {
		t.Fatalf("no file %s", pattern)
	}
	return m
}
