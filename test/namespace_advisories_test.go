package test

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// projectAdminHCL is what a project's own administrator holds inside the
// project's namespace (the precondition of each advisory below): its
// tokens, its leases, its child namespaces. Nothing outside it.
const projectAdminHCL = `
path "auth/token/*"     { capabilities = ["create", "read", "update", "delete", "list"] }
path "sys/leases/*"     { capabilities = ["create", "read", "update", "delete", "list"] }
path "sys/namespaces/*" { capabilities = ["create", "read", "update", "delete", "list"] }
`

// The namespace advisories of OpenBao 2.4.0, played on a real node laid
// out as GitLab lays out its secrets managers (org_1/group_1/project_<id>):
// a token scoped to project_1, with every right inside project_1, attacks
// its sibling project_2 and its parent org_1 with what leaked from them
// (token accessors, lease ids), and its own namespace through the name
// "root". Each attack is refused and its victim survives; the same
// requests on project_1's own tokens and leases still work.
func TestNamespaceAdvisoriesClosed(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	addr, res := startActive(t, tr, bin, "--shares", "3", "--threshold", "2")
	root := res.RootToken
	hc := &http.Client{Timeout: time.Minute}
	v1 := addr + "/v1/"
	for _, ns := range [][2]string{{"", "org_1"}, {"org_1/", "group_1"}, {"org_1/group_1/", "project_1"}, {"org_1/group_1/", "project_2"}} {
		if code, out := call(t, hc, "POST", v1+ns[0]+"sys/namespaces/"+ns[1], root, map[string]any{}); code/100 != 2 {
			t.Fatalf("namespace %s%s: %d %s", ns[0], ns[1], code, out)
		}
	}
	const p1, p2 = "org_1/group_1/project_1", "org_1/group_1/project_2"
	if code, out := call(t, hc, "PUT", v1+p1+"/sys/policies/acl/project-admin", root, map[string]string{"policy": projectAdminHCL}); code/100 != 2 {
		t.Fatalf("policy: %d %s", code, out)
	}
	attacker, _ := nsToken(t, hc, v1, root, p1, "project-admin")
	sibling, siblingAcc := nsToken(t, hc, v1, root, p2, "default")
	parent, parentAcc := nsToken(t, hc, v1, root, "org_1", "default")
	alive := func(what, tok string) {
		t.Helper()
		if code, out := call(t, hc, "GET", v1+"auth/token/lookup-self", tok, nil); code != http.StatusOK {
			t.Errorf("%s's token no longer works: %d %s", what, code, strings.TrimSpace(out))
		}
	}

	// CVE-2026-40264: the accessors of the sibling's and the parent's
	// tokens, used from project_1 (namespace in the path, and in the
	// header).
	for _, victim := range []struct{ name, acc string }{{"project_2", siblingAcc}, {"org_1", parentAcc}} {
		for _, op := range []string{"lookup-accessor", "renew-accessor", "revoke-accessor"} {
			for _, viaHeader := range []bool{false, true} {
				url, hdr := v1+p1+"/auth/token/"+op, []string(nil)
				if viaHeader {
					url, hdr = v1+"auth/token/"+op, []string{"X-Vault-Namespace", p1}
				}
				code, out := call(t, hc, "POST", url, attacker, map[string]any{"accessor": victim.acc}, hdr...)
				if code != http.StatusForbidden || !strings.Contains(out, "CVE-2026-40264") {
					t.Errorf("%s of %s's token from project_1 (header %v): %d %.300s, want 403 naming CVE-2026-40264", op, victim.name, viaHeader, code, strings.TrimSpace(out))
				}
			}
		}
	}
	alive("project_2", sibling)
	alive("org_1", parent)
	own, ownAcc := nsToken(t, hc, v1, root, p1, "default")
	for _, op := range []string{"lookup-accessor", "renew-accessor"} {
		if code, out := call(t, hc, "POST", v1+p1+"/auth/token/"+op, attacker, map[string]any{"accessor": ownAcc}); code != http.StatusOK {
			t.Errorf("%s of a project_1 token in project_1: %d %s", op, code, out)
		}
	}
	if code, out := call(t, hc, "POST", v1+p1+"/auth/token/revoke-accessor", attacker, map[string]any{"accessor": ownAcc}); code/100 != 2 {
		t.Errorf("revoke-accessor of a project_1 token in project_1: %d %s", code, out)
	}
	if code, _ := call(t, hc, "GET", v1+"auth/token/lookup-self", own, nil); code != http.StatusForbidden {
		t.Errorf("a project_1 token revoked by accessor in project_1 still works: %d", code)
	}

	// GHSA-c36x-h252-g9x2: a lease of a new project_2 token, revoked and renewed
	// from project_1 by path, and by body (which OpenBao checks in
	// project_2 and refuses).
	before := leases(t, hc, v1, root, p2)
	sibling2, _ := nsToken(t, hc, v1, root, p2, "default")
	siblingLease := "auth/token/create/" + newLease(t, hc, v1, root, p2, before)
	for _, a := range []struct{ op, path string }{
		{"revoke", "sys/leases/revoke/" + siblingLease},
		{"renew", "sys/leases/renew/" + siblingLease},
	} {
		code, out := call(t, hc, "PUT", v1+p1+"/"+a.path, attacker, nil)
		if code != http.StatusForbidden || !strings.Contains(out, "GHSA-c36x-h252-g9x2") {
			t.Errorf("%s of project_2's lease by path from project_1: %d %.300s, want 403 naming GHSA-c36x-h252-g9x2", a.op, code, strings.TrimSpace(out))
		}
		code, out = call(t, hc, "PUT", v1+p1+"/sys/leases/"+a.op, attacker, map[string]any{"lease_id": siblingLease})
		if code != http.StatusForbidden {
			t.Errorf("%s of project_2's lease by body from project_1: %d %.300s, want 403", a.op, code, strings.TrimSpace(out))
		}
	}
	// 2.4.0 asserts lease_id and token are strings before any ACL check:
	// a number panicked its handler (the connection dropped, EOF).
	for _, b := range []struct{ path, body string }{
		{"/sys/leases/revoke", `{"lease_id":7}`},
		{"/auth/token/lookup", `{"token":7}`},
	} {
		if code, out, err := tryPut(hc, v1+p1+b.path, attacker, b.body); code != http.StatusBadRequest {
			t.Errorf("PUT %s %s: %d %.300s %v, want 400", b.path, b.body, code, strings.TrimSpace(out), err)
		}
	}
	alive("project_2", sibling2)
	before = leases(t, hc, v1, root, p1)
	own2, _ := nsToken(t, hc, v1, root, p1, "default")
	ownLease := "auth/token/create/" + newLease(t, hc, v1, root, p1, before)
	if code, out := call(t, hc, "PUT", v1+p1+"/sys/leases/revoke/"+ownLease, attacker, nil); code/100 != 2 {
		t.Errorf("revoking a project_1 lease by path in project_1: %d %s", code, out)
	}
	harness.Eventually(t, 30*time.Second, "a project_1 token whose lease was revoked stops working", func() bool {
		code, _ := call(t, hc, "GET", v1+"auth/token/lookup-self", own2, nil)
		return code == http.StatusForbidden
	})

	// GHSA-mwr2-wmgp-crj6 does not reach 2.4.0: it reads "root" as an
	// ordinary, reserved name, not as the namespace itself (that reading
	// came with 2.5.0, GH-1918). From inside project_1, "root" names no
	// namespace and project_1 survives.
	for _, c := range []struct {
		method string
		code   int
		want   string
	}{
		{"PUT", http.StatusBadRequest, "reserved"},
		{"GET", http.StatusNotFound, ""},
		{"DELETE", http.StatusOK, "does not exist"},
	} {
		code, out := call(t, hc, c.method, v1+p1+"/sys/namespaces/root", attacker, nil)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("%s sys/namespaces/root in project_1: %d %.300s, want %d %s", c.method, code, strings.TrimSpace(out), c.code, c.want)
		}
	}
	if code, out := call(t, hc, "PUT", v1+"sys/namespaces/api-lock/lock/root", attacker, nil, "X-Vault-Namespace", p1); !strings.Contains(out, "does not exist") {
		t.Errorf("api-lock/lock/root in project_1 (header): %d %.300s, want: does not exist", code, strings.TrimSpace(out))
	}
	if code, out := call(t, hc, "GET", v1+"org_1/group_1/sys/namespaces/project_1", root, nil); code != http.StatusOK {
		t.Errorf("project_1 after the attacks: %d %s", code, out)
	}
	if code, out := call(t, hc, "GET", v1+"org_1/group_1/sys/namespaces/project_2", root, nil); code != http.StatusOK {
		t.Errorf("project_2 after the attacks: %d %s", code, out)
	}

	// GHSA-vv66-6rp4-wr4f is in the deletion of a namespace whose first
	// deletion was interrupted (its mounts are not loaded, so its leases
	// are dropped unrevoked); GitLab's namespaces hold KV v2 and JWT auth,
	// whose leases are tokens of the namespace itself. What matters here:
	// a project deleted as GitLab deletes it and re-created under its path
	// carries none of the old tokens or leases.
	if code, out := call(t, hc, "DELETE", v1+"org_1/group_1/sys/namespaces/project_2", root, nil); code/100 != 2 {
		t.Fatalf("deleting project_2: %d %s", code, out)
	}
	harness.Eventually(t, time.Minute, "project_2 is deleted", func() bool {
		code, _ := call(t, hc, "GET", v1+"org_1/group_1/sys/namespaces/project_2", root, nil)
		return code == http.StatusNotFound
	})
	if code, out := call(t, hc, "POST", v1+"org_1/group_1/sys/namespaces/project_2", root, map[string]any{}); code/100 != 2 {
		t.Fatalf("re-creating project_2: %d %s", code, out)
	}
	for _, tok := range []string{sibling, sibling2} {
		if code, _ := call(t, hc, "GET", v1+"auth/token/lookup-self", tok, nil); code != http.StatusForbidden {
			t.Errorf("a token of the deleted project_2 works in the re-created one: %d", code)
		}
	}
	if l := leases(t, hc, v1, root, p2); len(l) != 0 {
		t.Errorf("the re-created project_2 has the old one's leases: %v", l)
	}
}

// nsToken creates a token with policy in namespace ns and returns it with
// its accessor.
func nsToken(t *testing.T, hc *http.Client, v1, root, ns, policy string) (string, string) {
	t.Helper()
	code, out := call(t, hc, "POST", v1+ns+"/auth/token/create", root, map[string]any{"policies": []string{policy}, "ttl": "1h"})
	var tok struct {
		Auth struct {
			ClientToken string `json:"client_token"`
			Accessor    string `json:"accessor"`
		} `json:"auth"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(out), &tok) != nil || tok.Auth.Accessor == "" {
		t.Fatalf("token in %s: %d %s", ns, code, out)
	}
	return tok.Auth.ClientToken, tok.Auth.Accessor
}

// leases lists the leases under auth/token/create/ in namespace ns (as
// its operators list them).
func leases(t *testing.T, hc *http.Client, v1, root, ns string) []string {
	t.Helper()
	code, out := call(t, hc, "LIST", v1+ns+"/sys/leases/lookup/auth/token/create/", root, nil)
	var l struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	if code == http.StatusNotFound {
		return nil
	}
	if code != http.StatusOK || json.Unmarshal([]byte(out), &l) != nil {
		t.Fatalf("leases of %s: %d %s", ns, code, out)
	}
	return l.Data.Keys
}

// newLease is the one lease of ns not in before.
func newLease(t *testing.T, hc *http.Client, v1, root, ns string, before []string) string {
	t.Helper()
	var fresh []string
	for _, k := range leases(t, hc, v1, root, ns) {
		if !slices.Contains(before, k) {
			fresh = append(fresh, k)
		}
	}
	if len(fresh) != 1 {
		t.Fatalf("leases of %s: %v new since %v, want one", ns, fresh, before)
	}
	return fresh[0]
}

// tryPut sends body as JSON and returns the status and answer, or the
// error of a connection the server dropped.
func tryPut(hc *http.Client, url, token, body string) (int, string, error) {
	req, err := http.NewRequest("PUT", url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("X-Vault-Token", token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw), nil
}
