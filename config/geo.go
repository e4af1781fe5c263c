package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
)

// Geo makes Raft follow GitLab Geo: the topology names the sites and
// their nodes, one site primary; primary-site nodes vote, the others are
// replicas, and the active node converges the Raft membership to that
// plan (see the geo package). With a geo block every node joins as a
// non-voter through the topology's other nodes, the reconciler promotes
// it once it caught up, and OpenBao's autopilot is off (the reconciler
// takes its place).
type Geo struct {
	// TopologyFile is the topology as JSON (what Omnibus renders from
	// gitlab.rb on every node), re-read on SIGHUP and when it changes.
	// Either it or site blocks.
	TopologyFile string    `hcl:"topology_file,optional"`
	Sites        []GeoSite `hcl:"site,block"`
	MinVoters    int       `hcl:"min_voters,optional"`
	// ClusterFile is Omnibus's gitlab-cluster.json, where
	// `gitlab-ctl geo promote` records that this node's site is now
	// primary; it overrides the topology's primary flag. Default
	// geo.DefaultClusterFile; a missing file says nothing.
	ClusterFile string `hcl:"cluster_file,optional"`
	// CACertFile verifies the other nodes' API certificates (joining,
	// and the active node's health polls). Default: the system's roots.
	CACertFile string `hcl:"ca_cert_file,optional"`

	// validated is the topology the last Validate read and checked.
	validated *geo.Topology
}

// GeoSite is a site block: site "london" { primary = true ... }.
type GeoSite struct {
	Name            string    `hcl:"name,label"`
	Primary         bool      `hcl:"primary,optional"`
	PreferredLeader string    `hcl:"preferred_leader,optional"`
	Nodes           []GeoNode `hcl:"node,block"`
}

// GeoNode is a node block inside a site: node "gitlab-1" { ... }.
type GeoNode struct {
	ID          string `hcl:"id,label"`
	APIAddr     string `hcl:"api_addr,optional"`
	ClusterAddr string `hcl:"cluster_addr,optional"`
}

func (g *Geo) applyDefaults() {
	if g.ClusterFile == "" {
		g.ClusterFile = geo.DefaultClusterFile
	}
}

// Topology reads the topology the block names (the file, or its site
// blocks) and validates it.
func (g *Geo) Topology() (*geo.Topology, error) {
	if g.TopologyFile != "" {
		src, err := os.ReadFile(g.TopologyFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read %s: %w", g.TopologyFile, PathCause(err))
		}
		return geo.ParseTopology(src)
	}
	t := &geo.Topology{MinVoters: g.MinVoters}
	for _, s := range g.Sites {
		site := geo.Site{Name: s.Name, Primary: s.Primary, PreferredLeader: s.PreferredLeader}
		for _, n := range s.Nodes {
			site.Nodes = append(site.Nodes, geo.Node(n))
		}
		t.Sites = append(t.Sites, site)
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return t, nil
}

// Validated is the topology Config.Validate read and checked, this node
// in it (nil before Validate, or when it found problems): what Start, the
// offline commands and a reload run on, so that they do not read the file
// again and meet a different topology than the one validated.
func (g *Geo) Validated() *geo.Topology {
	return g.validated
}

func (g *Geo) validate(v *validator, c *Config) {
	g.validated = nil
	switch {
	case g.TopologyFile != "" && (len(g.Sites) > 0 || g.MinVoters != 0):
		v.add("geo", "both topology_file and site blocks (or min_voters): give the topology one way")
		return
	case g.TopologyFile == "" && len(g.Sites) == 0:
		v.add("geo", "no topology: set topology_file or add site blocks")
		return
	}
	key := "geo.site"
	if g.TopologyFile != "" {
		key = "geo.topology_file"
	}
	if g.CACertFile != "" {
		v.readable("geo.ca_cert_file", g.CACertFile)
	}
	if c.Raft != nil && c.Raft.NonVoter {
		v.add("raft.non_voter", "set by the geo topology (secondary-site nodes do not vote); remove it")
	}
	t, err := g.Topology()
	if err != nil {
		if ge, ok := err.(*geo.Error); ok {
			for _, p := range ge.Problems {
				v.add(key, "%s", p)
			}
		} else {
			v.add(key, "%v", err)
		}
		return
	}
	_, n, ok := t.SiteOf(c.NodeID)
	if !ok {
		v.add(key, "node_id %s is not a node of the topology: add it to its site", c.NodeID)
		return
	}
	for _, a := range []struct{ key, mine, theirs string }{
		{"api_addr", c.APIAddr, n.APIAddr}, {"cluster_addr", c.ClusterAddr, n.ClusterAddr},
	} {
		if a.mine != "" && strings.TrimSuffix(a.mine, "/") != strings.TrimSuffix(a.theirs, "/") {
			v.add(a.key, "%s differs from the topology's %s for node %s (%s); leave it unset to take the topology's", a.mine, a.key, c.NodeID, a.theirs)
		}
	}
	g.validated = t
}

// WithGeo is a copy of c with what the topology gives: this node's API
// and cluster addresses when c leaves them out, its retry_join (every
// other node, primary site first) when c has none, joining as a
// non-voter (the reconciler promotes it once it caught up).
func (c *Config) WithGeo(t *geo.Topology) *Config {
	out := *c
	r := *c.Raft
	out.Raft = &r
	_, n, _ := t.SiteOf(c.NodeID)
	if out.APIAddr == "" {
		out.APIAddr = n.APIAddr
	}
	if out.ClusterAddr == "" {
		out.ClusterAddr = n.ClusterAddr
	}
	if len(r.RetryJoin) == 0 {
		r.RetryJoin = c.geoRetryJoin(t)
	}
	r.NonVoter = len(r.RetryJoin) > 0
	return &out
}

// GeoDerived is c as Start runs it: WithGeo applied when c has a geo
// block that validated.
func (c *Config) GeoDerived() *Config {
	if c.Geo == nil || c.Geo.validated == nil {
		return c
	}
	return c.WithGeo(c.Geo.validated)
}

// geoRetryJoin is the retry_join list a geo node uses when its config
// has none: every other node of the topology, primary site first.
func (c *Config) geoRetryJoin(t *geo.Topology) []RetryJoin {
	p, err := geo.PlanFor(t)
	if err != nil {
		return nil
	}
	var out []RetryJoin
	for _, addr := range p.RetryJoin(c.NodeID) {
		out = append(out, RetryJoin{LeaderAPIAddr: addr, LeaderCACertFile: c.Geo.CACertFile})
	}
	return out
}

// GeoTopology is the topology the geo block names: the one Validate
// checked, else its file read now.
func (c *Config) GeoTopology() (*geo.Topology, error) {
	if c.Geo == nil {
		return nil, errors.New("the config has no geo block")
	}
	if t := c.Geo.validated; t != nil {
		return t, nil
	}
	return c.Geo.Topology()
}
