package drill

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/freeport"
)

// The throwaway cluster's shape, addresses, configs and seal.

// layout writes every node's config and the topology file.
func (d *run) layout() error {
	shape, err := d.shape()
	if err != nil {
		return err
	}
	topo := &geo.Topology{}
	host := 10
	for si, s := range shape {
		site := geo.Site{Name: s.Name, Primary: si == 0}
		for j := range s.Nodes {
			h := fmt.Sprintf("127.0.0.%d", host)
			host++
			api, err := freeport.Port(h)
			if err != nil {
				return err
			}
			cl, err := freeport.Port(h)
			if err != nil {
				return err
			}
			n := &node{id: fmt.Sprintf("drill-%s-%d", s.Name, j+1), site: s.Name,
				api: fmt.Sprintf("http://%s:%d", h, api), cluster: fmt.Sprintf("https://%s:%d", h, cl)}
			n.dir = filepath.Join(d.dir, n.id)
			if err := os.Mkdir(n.dir, 0o700); err != nil {
				return err
			}
			site.Nodes = append(site.Nodes, geo.Node{ID: n.id, APIAddr: n.api, ClusterAddr: n.cluster})
			d.nodes = append(d.nodes, n)
		}
		topo.Sites = append(topo.Sites, site)
	}
	for i := range topo.Sites {
		d.sites = append(d.sites, &topo.Sites[i])
	}
	b, err := json.MarshalIndent(topo, "", "  ")
	if err != nil {
		return err
	}
	topoFile := filepath.Join(d.dir, "topology.json")
	if err := os.WriteFile(topoFile, b, 0o600); err != nil {
		return err
	}
	seal, err := d.sealBlock()
	if err != nil {
		return err
	}
	for _, n := range d.nodes {
		host, port, _ := strings.Cut(strings.TrimPrefix(n.cluster, "https://"), ":")
		src := fmt.Sprintf("node_id = %q\ndata_dir = %q\nlistener {\n  address = %q\n  tls_disable = true\n}\ncluster {\n  address = \"%s:%s\"\n}\n%sgeo {\n  topology_file = %q\n  cluster_file = %q\n}\n",
			n.id, n.dataDir(), strings.TrimPrefix(n.api, "http://"), host, port, seal, topoFile, filepath.Join(n.dir, "no-gitlab-cluster.json"))
		n.cfgPath = filepath.Join(n.dir, "appliance.hcl")
		if err := os.WriteFile(n.cfgPath, []byte(src), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// shape is the production topology's sites (names, node counts, primary
// first), or 3 + 2 nodes without a geo block.
func (d *run) shape() ([]SiteShape, error) {
	var out []SiteShape
	if d.o.Config.Geo == nil {
		out = []SiteShape{{Name: "primary", Nodes: 3, Primary: true}, {Name: "secondary", Nodes: 2}}
	} else {
		t, err := d.o.Config.GeoTopology()
		if err != nil {
			return nil, err
		}
		p := t.Primary()
		out = append(out, SiteShape{Name: p.Name, Nodes: len(p.Nodes), Primary: true})
		for _, s := range t.Sites {
			if s.Name != p.Name {
				out = append(out, SiteShape{Name: s.Name, Nodes: len(s.Nodes)})
			}
		}
	}
	if len(out) < 2 {
		return nil, errors.New("the topology has one site: there is no Geo failover to rehearse")
	}
	d.r.Shape = out
	return out, nil
}

// sealBlock is the nodes' seal: the production HSM, or Shamir.
func (d *run) sealBlock() (string, error) {
	s := d.o.Config.Seal
	switch d.o.Unseal {
	case UnsealHSM:
		p := s.PKCS11
		if p == nil {
			return "", errors.New("the config has no pkcs11 seal: unseal the drill with --unseal shares")
		}
		var b strings.Builder
		fmt.Fprintf(&b, "seal {\n  pkcs11 {\n    library = %q\n    key_label = %q\n", p.Library, p.KeyLabel)
		if p.TokenLabel != "" {
			fmt.Fprintf(&b, "    token_label = %q\n", p.TokenLabel)
		}
		if p.Slot != nil {
			fmt.Fprintf(&b, "    slot = %d\n", *p.Slot)
		}
		if p.PINFile != "" {
			fmt.Fprintf(&b, "    pin_file = %q\n", p.PINFile)
		} else {
			fmt.Fprintf(&b, "    pin_env = %q\n", p.PINEnv)
		}
		b.WriteString("  }\n}\n")
		label := p.TokenLabel
		if label == "" && p.Slot != nil {
			label = fmt.Sprintf("slot %d", *p.Slot)
		}
		d.r.Unsealed = fmt.Sprintf("HSM: token %s, key %s (%s)", label, p.KeyLabel, p.Library)
		return b.String(), nil
	case UnsealShares:
		sh := s.Shamir
		shares, threshold := 5, 3
		if sh != nil {
			shares, threshold = sh.Shares, sh.Threshold
		}
		return fmt.Sprintf("seal {\n  shamir {\n    shares = %d\n    threshold = %d\n  }\n}\n", shares, threshold), nil
	}
	return "", fmt.Errorf("unseal with %q: use %s or %s", d.o.Unseal, UnsealHSM, UnsealShares)
}
