// Package geo turns GitLab Geo's view of a deployment (sites, one of them
// primary) into Raft roles, and decides the next safe membership step
// towards them. It does no I/O: the appliance reads the files, holds Raft,
// and carries the steps out through the Membership interface.
package geo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// Topology is what Omnibus renders on every node from gitlab.rb: the Geo
// sites, each with the appliance nodes of its GitLab front-ends.
type Topology struct {
	Sites []Site `json:"sites"`
	// MinVoters, when the primary site has fewer nodes, lets the nearest
	// secondary nodes (in file order) vote too, at the price of a
	// cross-site round trip in every commit. 0 means no minimum; it must
	// be odd otherwise.
	MinVoters int `json:"min_voters,omitempty"`
}

// Site is one Geo site by its Geo name.
type Site struct {
	Name    string `json:"name"`
	Primary bool   `json:"primary,omitempty"`
	// PreferredLeader is the node id that should lead while this site is
	// primary and the node is healthy; "" lets any of its voters lead.
	PreferredLeader string `json:"preferred_leader,omitempty"`
	Nodes           []Node `json:"nodes"`
}

// Node is one appliance node.
type Node struct {
	ID          string `json:"id"`
	APIAddr     string `json:"api_addr"`
	ClusterAddr string `json:"cluster_addr"`
}

// Error lists every problem of a topology at once, each naming what it is
// about (site, node, address).
type Error struct {
	Problems []string
}

func (e *Error) Error() string {
	return "geo topology has " + fmt.Sprint(len(e.Problems)) + " problem(s):\n  - " + strings.Join(e.Problems, "\n  - ")
}

// MaxTopologySize bounds a topology file (a few hundred nodes fit).
const MaxTopologySize = 1 << 20

// ParseTopology reads a topology in its JSON form (unknown keys refused)
// and validates it.
func ParseTopology(src []byte) (*Topology, error) {
	if len(src) > MaxTopologySize {
		return nil, &Error{Problems: []string{fmt.Sprintf("the file is %d bytes, more than the %d a topology may have", len(src), MaxTopologySize)}}
	}
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.DisallowUnknownFields()
	var t Topology
	if err := dec.Decode(&t); err != nil {
		return nil, &Error{Problems: []string{"not a topology: " + jsonProblem(src, err)}}
	}
	if dec.More() {
		return nil, &Error{Problems: []string{"not a topology: more than one JSON value"}}
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

// jsonProblem says where a JSON error is, as line:column when it can.
func jsonProblem(src []byte, err error) string {
	var off int64 = -1
	switch e := err.(type) {
	case *json.SyntaxError:
		off = e.Offset
	case *json.UnmarshalTypeError:
		return fmt.Sprintf("%s must be a JSON %s, not %s", e.Field, e.Type, e.Value)
	}
	if off < 0 || off > int64(len(src)) {
		return err.Error()
	}
	line := 1 + bytes.Count(src[:off], []byte("\n"))
	col := off - int64(bytes.LastIndexByte(src[:off], '\n'))
	return fmt.Sprintf("line %d column %d: %v", line, col, err)
}

// Validate reports every problem: no primary or two, empty or duplicate
// names, a node in two sites, duplicate addresses, a preferred leader
// outside its site, a bad min_voters.
func (t *Topology) Validate() error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	if len(t.Sites) == 0 {
		add("no sites: list the Geo sites, each with its appliance nodes")
	}
	var primaries []string
	siteSeen := map[string]bool{}
	nodeSite := map[string]string{}
	addrOwner := map[string]string{}
	for i, s := range t.Sites {
		name := s.Name
		if name == "" {
			name = fmt.Sprintf("sites[%d]", i)
			add("%s has no name: use the site's Geo name", name)
		} else if siteSeen[name] {
			add("site %s is listed twice", name)
		}
		siteSeen[name] = true
		if s.Primary {
			primaries = append(primaries, name)
		}
		if len(s.Nodes) == 0 {
			add("site %s has no nodes", name)
		}
		inSite := map[string]bool{}
		for j, n := range s.Nodes {
			if n.ID == "" {
				add("site %s: nodes[%d] has no id", name, j)
				continue
			}
			switch other, ok := nodeSite[n.ID]; {
			case ok && other == name:
				add("site %s lists node %s twice", name, n.ID)
			case ok:
				add("node %s is in two sites: %s and %s", n.ID, other, name)
			default:
				nodeSite[n.ID] = name
			}
			inSite[n.ID] = true
			for _, a := range []struct{ key, v string }{{"api_addr", n.APIAddr}, {"cluster_addr", n.ClusterAddr}} {
				if msg := checkAddr(a.v); msg != "" {
					add("node %s: %s %s", n.ID, a.key, msg)
					continue
				}
				norm := normalAddr(a.v)
				if owner, ok := addrOwner[norm]; ok && owner != n.ID {
					add("node %s: %s %s is also the address of node %s", n.ID, a.key, a.v, owner)
				} else {
					addrOwner[norm] = n.ID
				}
			}
		}
		if s.PreferredLeader != "" && !inSite[s.PreferredLeader] {
			add("site %s: preferred_leader %s is not a node of site %s", name, s.PreferredLeader, name)
		}
	}
	switch {
	case len(t.Sites) > 0 && len(primaries) == 0:
		add("no primary site: mark the Geo primary site with \"primary\": true")
	case len(primaries) > 1:
		add("%d primary sites (%s): Geo has exactly one primary", len(primaries), strings.Join(primaries, ", "))
	}
	switch {
	case t.MinVoters < 0:
		add("min_voters %d is negative", t.MinVoters)
	case t.MinVoters > 0 && t.MinVoters%2 == 0:
		add("min_voters %d is even: %d voters survive no more failures than %d; use %d or %d", t.MinVoters, t.MinVoters, t.MinVoters-1, t.MinVoters-1, t.MinVoters+1)
	}
	if len(p) > 0 {
		return &Error{Problems: p}
	}
	return nil
}

// checkAddr says what is wrong with an http(s)://host:port address, or "".
func checkAddr(s string) string {
	if s == "" {
		return "is missing"
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Port() == "" {
		return fmt.Sprintf("%q is not an address like https://host:port", s)
	}
	if u.Path != "" && u.Path != "/" {
		return fmt.Sprintf("%q has a path; give scheme, host and port only", s)
	}
	return ""
}

// normalAddr is an address as compared for duplicates: host and port,
// lower case (an API and a cluster address may not share a port either).
func normalAddr(s string) string {
	u, _ := url.Parse(s)
	return strings.ToLower(u.Host)
}

// Site returns the site named name.
func (t *Topology) Site(name string) (Site, bool) {
	for _, s := range t.Sites {
		if s.Name == name {
			return s, true
		}
	}
	return Site{}, false
}

// Primary is the primary site.
func (t *Topology) Primary() Site {
	for _, s := range t.Sites {
		if s.Primary {
			return s
		}
	}
	return Site{}
}

// SiteOf returns the site node id belongs to.
func (t *Topology) SiteOf(id string) (Site, Node, bool) {
	for _, s := range t.Sites {
		for _, n := range s.Nodes {
			if n.ID == id {
				return s, n, true
			}
		}
	}
	return Site{}, Node{}, false
}

// WithPrimary returns a copy of t with site as its primary.
func (t *Topology) WithPrimary(site string) (*Topology, error) {
	if _, ok := t.Site(site); !ok {
		names := make([]string, 0, len(t.Sites))
		for _, s := range t.Sites {
			names = append(names, s.Name)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("no site %s in the topology (sites: %s)", site, strings.Join(names, ", "))
	}
	out := *t
	out.Sites = make([]Site, len(t.Sites))
	for i, s := range t.Sites {
		s.Primary = s.Name == site
		out.Sites[i] = s
	}
	return &out, nil
}
