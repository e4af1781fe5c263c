package geo

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// topo builds a topology of len(sizes) sites named A, B, ... with
// sizes[i] nodes each (ids a1, a2, ... on 127.0.i.j), site A primary.
func topo(sizes ...int) *Topology {
	t := &Topology{}
	for i, n := range sizes {
		s := Site{Name: string(rune('A' + i)), Primary: i == 0}
		for j := 1; j <= n; j++ {
			host := fmt.Sprintf("127.0.%d.%d", i+1, j)
			s.Nodes = append(s.Nodes, Node{
				ID:          fmt.Sprintf("%c%d", 'a'+i, j),
				APIAddr:     "https://" + host + ":8200",
				ClusterAddr: "https://" + host + ":8201",
			})
		}
		t.Sites = append(t.Sites, s)
	}
	return t
}

func problems(t *testing.T, err error) []string {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want a *geo.Error, got %v", err)
	}
	return e.Problems
}

func TestParseTopology(t *testing.T) {
	src := `{
	  "min_voters": 3,
	  "sites": [
	    {"name": "london", "primary": true, "preferred_leader": "gitlab-1", "nodes": [
	      {"id": "gitlab-1", "api_addr": "https://10.0.0.1:8200", "cluster_addr": "https://10.0.0.1:8201"}]},
	    {"name": "paris", "nodes": [
	      {"id": "gitlab-4", "api_addr": "https://10.1.0.1:8200", "cluster_addr": "https://10.1.0.1:8201"},
	      {"id": "gitlab-5", "api_addr": "https://10.1.0.2:8200", "cluster_addr": "https://10.1.0.2:8201"}]}
	  ]
	}`
	top, err := ParseTopology([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if top.Primary().Name != "london" || top.MinVoters != 3 || len(top.Sites[1].Nodes) != 2 {
		t.Fatalf("parsed %+v", top)
	}
	for _, bad := range []struct{ src, want string }{
		{`{"sites": [], "extra": 1}`, `unknown field "extra"`},
		{"{\"sites\": [\n{\"name\": 3}]}", "name must be a JSON string"},
		{"{\"sites\": [\n{\"name\": \"a\",,}]}", "line 2 column"},
		{`{"sites": []} {}`, "more than one JSON value"},
		{`{"sites": []}`, "no sites"},
		{strings.Repeat(" ", MaxTopologySize+1), "more than the"},
	} {
		_, err := ParseTopology([]byte(bad.src))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%.40q: want an error with %q, got %v", bad.src, bad.want, err)
		}
	}
}

func TestTopologyProblemsNameTheOffender(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*Topology)
		wants []string
	}{
		{"no primary", func(t *Topology) { t.Sites[0].Primary = false }, []string{"no primary site"}},
		{"two primaries", func(t *Topology) { t.Sites[1].Primary = true }, []string{"2 primary sites (A, B)"}},
		{"duplicate id in a site", func(t *Topology) { t.Sites[0].Nodes[1].ID = "a1" }, []string{"site A lists node a1 twice"}},
		{"node in two sites", func(t *Topology) { t.Sites[1].Nodes[0].ID = "a1" }, []string{"node a1 is in two sites: A and B"}},
		{"duplicate api address", func(t *Topology) { t.Sites[1].Nodes[0].APIAddr = t.Sites[0].Nodes[0].APIAddr },
			[]string{"node b1: api_addr https://127.0.1.1:8200 is also the address of node a1"}},
		{"cluster address on another's api port", func(t *Topology) { t.Sites[0].Nodes[1].ClusterAddr = "https://127.0.1.1:8200" },
			[]string{"node a2: cluster_addr https://127.0.1.1:8200 is also the address of node a1"}},
		{"bad address", func(t *Topology) { t.Sites[0].Nodes[0].APIAddr = "10.0.0.1:8200" }, []string{`node a1: api_addr "10.0.0.1:8200" is not an address`}},
		{"missing address", func(t *Topology) { t.Sites[0].Nodes[0].ClusterAddr = "" }, []string{"node a1: cluster_addr is missing"}},
		{"preferred leader elsewhere", func(t *Topology) { t.Sites[0].PreferredLeader = "b1" }, []string{"site A: preferred_leader b1 is not a node of site A"}},
		{"duplicate site", func(t *Topology) { t.Sites[1].Name = "A" }, []string{"site A is listed twice"}},
		{"nameless site", func(t *Topology) { t.Sites[1].Name = "" }, []string{"sites[1] has no name"}},
		{"empty site", func(t *Topology) { t.Sites[1].Nodes = nil }, []string{"site B has no nodes"}},
		{"even min_voters", func(t *Topology) { t.MinVoters = 4 }, []string{"min_voters 4 is even", "use 3 or 5"}},
		{"several at once", func(t *Topology) { t.Sites[0].Primary = false; t.Sites[0].PreferredLeader = "zz" },
			[]string{"no primary site", "preferred_leader zz"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			top := topo(3, 2)
			c.edit(top)
			err := top.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			all := strings.Join(problems(t, err), "\n")
			for _, w := range c.wants {
				if !strings.Contains(all, w) {
					t.Errorf("problems %q lack %q", all, w)
				}
			}
			if _, err := PlanFor(top); err == nil {
				t.Error("PlanFor accepted a topology that does not validate")
			}
		})
	}
}

func TestWithPrimary(t *testing.T) {
	top := topo(3, 2)
	b, err := top.WithPrimary("B")
	if err != nil || b.Primary().Name != "B" || top.Primary().Name != "A" {
		t.Fatalf("WithPrimary: %v, primary %q, original %q", err, b.Primary().Name, top.Primary().Name)
	}
	if _, err := top.WithPrimary("Z"); err == nil || !strings.Contains(err.Error(), "no site Z in the topology (sites: A, B)") {
		t.Fatalf("unknown site: %v", err)
	}
}

func TestParseClusterFile(t *testing.T) {
	for _, c := range []struct {
		src  string
		want Role
		err  string
	}{
		// What `gitlab-ctl geo promote` writes on a single-node site.
		{`{"primary": true, "secondary": false}`, RolePrimary, ""},
		// ... on a node of a multi-node site, beside other services' keys.
		{`{"geo_secondary": {"enable": false}, "patroni": {"standby_cluster": {"enable": false}}}`, RolePrimary, ""},
		{`{"primary": false, "secondary": true}`, RoleSecondary, ""},
		{`{"geo_secondary": {"enable": true}}`, RoleSecondary, ""},
		{`{"patroni": {"standby_cluster": {"enable": false}}}`, RoleUnknown, ""},
		{`{}`, RoleUnknown, ""},
		{`{"primary": true, "secondary": true}`, RoleUnknown, "contradicts itself"},
		{`{"primary": true, "geo_secondary": {"enable": true}}`, RoleUnknown, "contradicts itself"},
		{`{"primary": "yes"}`, RoleUnknown, "primary must be a JSON bool"},
		{`not json`, RoleUnknown, "not JSON"},
	} {
		got, err := ParseClusterFile([]byte(c.src))
		if got != c.want || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: got %v, %v; want %v, %q", c.src, got, err, c.want, c.err)
		}
	}
}

func TestRoleJSON(t *testing.T) {
	for _, r := range []Role{RolePrimary, RoleSecondary, RoleUnknown} {
		b, _ := json.Marshal(r)
		var back Role
		if err := json.Unmarshal(b, &back); err != nil || back != r || string(b) != `"`+r.String()+`"` {
			t.Errorf("%v: %s -> %v, %v", r, b, back, err)
		}
	}
}
