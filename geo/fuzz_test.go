package geo

import (
	"encoding/json"
	"testing"
)

// FuzzTopology: any input either is refused with problems or gives a
// topology that plans, whose plan has an odd number of voters (at least
// one) and converges from a freshly formed cluster; gitlab-cluster.json
// parsing never panics.
func FuzzTopology(f *testing.F) {
	b, _ := json.Marshal(topo(3, 2))
	f.Add(b)
	b, _ = json.Marshal(&Topology{MinVoters: 3, Sites: topo(1, 1, 2).Sites})
	f.Add(b)
	f.Add([]byte(`{"sites": [{"name": "a", "primary": true, "preferred_leader": "x", "nodes": [{"id": "x", "api_addr": "https://h:1", "cluster_addr": "https://h:2"}]}]}`))
	f.Add([]byte(`{"primary": true, "geo_secondary": {"enable": false}}`))
	f.Fuzz(func(t *testing.T, src []byte) {
		ParseClusterFile(src)
		top, err := ParseTopology(src)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("not a *geo.Error: %v", err)
			}
			return
		}
		p, err := PlanFor(top)
		if err != nil {
			t.Fatalf("a validated topology does not plan: %v", err)
		}
		if n := len(p.Voters()); n%2 == 0 {
			t.Fatalf("%d voters", n)
		}
		if len(p.Members) > 64 {
			return // keep each input fast
		}
		first := top.Primary().Nodes[0].ID
		var live []Server
		for _, m := range p.Members {
			live = append(live, Server{ID: m.ID, Voter: m.ID == first, Leader: m.ID == first, Healthy: true, CaughtUp: true})
		}
		d, err := converge(t.Context(), p, newFakeRaft(live...), 3*len(p.Members)+2)
		if err != nil || !d.Converged {
			t.Fatalf("no convergence: %v %s", err, d.Describe())
		}
	})
}
