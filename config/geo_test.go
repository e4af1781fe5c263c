package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// geoHCL is a node config with the given geo block.
func geoHCL(data, node, geo string) string {
	return `node_id = "` + node + `"
data_dir = "` + data + `"
geo {
` + geo + `
}`
}

const geoSites = `  site "london" {
    primary          = true
    preferred_leader = "gitlab-2"
    node "gitlab-1" {
      api_addr     = "https://10.0.0.1:8200"
      cluster_addr = "https://10.0.0.1:8201"
    }
    node "gitlab-2" {
      api_addr     = "https://10.0.0.2:8200"
      cluster_addr = "https://10.0.0.2:8201"
    }
  }
  site "paris" {
    node "gitlab-3" {
      api_addr     = "https://10.1.0.1:8200"
      cluster_addr = "https://10.1.0.1:8201"
    }
  }`

// The geo block inline (site blocks) and as a topology file give the
// same topology; withGeo takes this node's addresses and joins through
// every other node, primary site first, as a non-voter.
func TestGeoBlock(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	c, err := Parse([]byte(geoHCL(data, "gitlab-3", geoSites+"\n  min_voters = 3")), "a.hcl")
	if err != nil {
		t.Fatal(err)
	}
	top, err := c.Geo.Topology()
	if err != nil {
		t.Fatal(err)
	}
	if top.Primary().Name != "london" || top.MinVoters != 3 || c.Geo.ClusterFile != "/etc/gitlab/gitlab-cluster.json" {
		t.Fatalf("topology %+v, cluster_file %q", top, c.Geo.ClusterFile)
	}
	run := c.WithGeo(top)
	if run.APIAddr != "https://10.1.0.1:8200" || run.ClusterAddr != "https://10.1.0.1:8201" || !run.Raft.NonVoter {
		t.Fatalf("withGeo: api %s cluster %s non_voter %v", run.APIAddr, run.ClusterAddr, run.Raft.NonVoter)
	}
	var joins []string
	for _, j := range run.Raft.RetryJoin {
		joins = append(joins, j.LeaderAPIAddr)
	}
	if strings.Join(joins, " ") != "https://10.0.0.1:8200 https://10.0.0.2:8200" {
		t.Fatalf("retry_join %v", joins)
	}
	if c.Raft.NonVoter || c.APIAddr != "" || len(c.Raft.RetryJoin) != 0 {
		t.Fatal("withGeo changed the config it was given")
	}

	file := filepath.Join(dir, "topology.json")
	os.WriteFile(file, []byte(`{"sites": [{"name": "london", "primary": true, "nodes": [
	  {"id": "gitlab-1", "api_addr": "https://10.0.0.1:8200", "cluster_addr": "https://10.0.0.1:8201"}]}]}`), 0o644)
	c, err = Parse([]byte(`{"node_id": "gitlab-1", "data_dir": "`+data+`", "geo": {"topology_file": "`+file+`"}}`), "a.json")
	if err != nil {
		t.Fatal(err)
	}
	top, _ = c.Geo.Topology()
	if run := c.WithGeo(top); run.Raft.NonVoter || len(run.Raft.RetryJoin) != 0 {
		t.Fatalf("a one-node topology: non_voter %v, retry_join %v", run.Raft.NonVoter, run.Raft.RetryJoin)
	}

	// What Start and the offline commands run on is the topology Validate
	// read: the file changed since (here: to one without this node) is
	// not read again behind the validation's back.
	os.WriteFile(file, []byte(`{"sites": [{"name": "paris", "primary": true, "nodes": [
	  {"id": "gitlab-9", "api_addr": "https://10.9.0.1:8200", "cluster_addr": "https://10.9.0.1:8201"}]}]}`), 0o644)
	if v := c.Geo.Validated(); v == nil || v.Primary().Name != "london" {
		t.Fatalf("the validated topology: %+v", v)
	}
	if gt, err := c.GeoTopology(); err != nil || gt.Primary().Name != "london" {
		t.Fatalf("GeoTopology after the file changed: %+v %v", gt, err)
	}
	if d := c.GeoDerived(); d.APIAddr != "https://10.0.0.1:8200" {
		t.Fatalf("GeoDerived after the file changed: api_addr %q", d.APIAddr)
	}
	// Validating again reads the file again, and finds the node gone.
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "not a node of the topology") || c.Geo.Validated() != nil {
		t.Fatalf("Validate after the change: %v, validated %+v", err, c.Geo.Validated())
	}
}

func TestBadGeoBlocks(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	badFile := filepath.Join(dir, "bad.json")
	os.WriteFile(badFile, []byte(`{"sites": [{"name": "a", "nodes": [{"id": "gitlab-1", "api_addr": "x", "cluster_addr": "https://h:1"}]}]}`), 0o644)
	for name, tc := range map[string]struct{ src, key, want string }{
		"no topology":     {geoHCL(data, "gitlab-1", ""), "geo", "no topology: set topology_file or add site blocks"},
		"both":            {geoHCL(data, "gitlab-1", `topology_file = "`+badFile+`"`+"\n"+geoSites), "geo", "both topology_file and site blocks"},
		"node not listed": {geoHCL(data, "gitlab-9", geoSites), "geo.site", "node_id gitlab-9 is not a node of the topology"},
		"file problems":   {geoHCL(data, "gitlab-1", `topology_file = "`+badFile+`"`), "geo.topology_file", "no primary site"},
		"file missing":    {geoHCL(data, "gitlab-1", `topology_file = "`+filepath.Join(dir, "none.json")+`"`), "geo.topology_file", "cannot read"},
		"site problems":   {geoHCL(data, "gitlab-1", strings.Replace(geoSites, `preferred_leader = "gitlab-2"`, `preferred_leader = "gitlab-3"`, 1)), "geo.site", "preferred_leader gitlab-3 is not a node of site london"},
		"address differs": {`api_addr = "https://10.9.9.9:8200"` + "\n" + geoHCL(data, "gitlab-1", geoSites), "api_addr", "differs from the topology's api_addr for node gitlab-1 (https://10.0.0.1:8200)"},
		"non_voter":       {"raft {\n  non_voter = true\n  retry_join { leader_api_addr = \"https://10.0.0.2:8200\" }\n}\n" + geoHCL(data, "gitlab-1", geoSites), "raft.non_voter", "set by the geo topology"},
	} {
		t.Run(name, func(t *testing.T) {
			problems := configProblems(t, tc.src, "a.hcl")
			for _, p := range problems {
				if p.Key == tc.key && strings.Contains(p.Message, tc.want) {
					return
				}
			}
			t.Fatalf("want %s: %q, got %v", tc.key, tc.want, problems)
		})
	}
}
