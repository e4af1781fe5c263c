package geo

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Override is a primary site set by `geo promote` or learnt from a node's
// gitlab-cluster.json. The appliance keeps it in Raft, so every node that
// becomes active follows it.
type Override struct {
	Site string `json:"site"`
	// TopologyPrimary is the topology's primary when the override was
	// made. Once the topology names another primary (Omnibus rendered
	// the promotion from gitlab.rb), the override has done its work and
	// lapses.
	TopologyPrimary string    `json:"topology_primary"`
	Source          string    `json:"source"`
	At              time.Time `json:"at"`
	// Lapsed: the topology has named another primary since; the override
	// stays lapsed even if the topology names its old primary again, and
	// is kept only for its time (claims older than it are spent).
	Lapsed bool `json:"lapsed,omitempty"`
}

// Claim is what one node's gitlab-cluster.json says about its site, and
// when the file was written.
type Claim struct {
	Node string    `json:"node"`
	Role Role      `json:"role"`
	At   time.Time `json:"at"`
}

// Resolution is the primary site in effect.
type Resolution struct {
	// Topology is the topology with the primary in effect.
	Topology *Topology
	// Source says where the primary comes from: "topology", "geo promote
	// ...", "gitlab-cluster.json on b1".
	Source string
	// Persist is an override to keep (a claim newer than the last
	// override, or the last one now lapsed), or nil.
	Persist *Override
	Notes   []string
}

// Resolve decides the primary site from the topology, the last override
// (nil if none) and the nodes' claims. An override holds while the
// topology still names the primary it was made against; once it names
// another, the override lapses for good (returned to persist, lapsed). A claim of
// primary, newer than the last override, moves the primary to the
// claiming node's site (as gitlab-cluster.json overrides gitlab.rb in
// Omnibus) and is returned to persist; claims of two sites cancel out
// and say so. Claims of secondary, unknown nodes and unknown roles change
// nothing.
func Resolve(t *Topology, last *Override, claims []Claim) Resolution {
	base := t.Primary().Name
	r := Resolution{Topology: t, Source: "topology"}
	current := base
	if last != nil && !last.Lapsed && last.TopologyPrimary != base {
		lapsed := *last
		lapsed.Lapsed = true
		r.Persist = &lapsed
	} else if last != nil && !last.Lapsed {
		if _, ok := t.Site(last.Site); ok {
			current, r.Source = last.Site, last.Source
		} else {
			r.Notes = append(r.Notes, fmt.Sprintf("the override to site %s (%s) names a site the topology no longer has", last.Site, last.Source))
		}
	}
	sites := map[string][]Claim{}
	for _, c := range claims {
		if c.Role != RolePrimary || (last != nil && !c.At.After(last.At)) {
			continue
		}
		s, _, ok := t.SiteOf(c.Node)
		if !ok {
			continue
		}
		sites[s.Name] = append(sites[s.Name], c)
	}
	switch len(sites) {
	case 0:
	case 1:
		for site, cs := range sites {
			sort.Slice(cs, func(i, j int) bool { return cs[i].At.After(cs[j].At) })
			if site != current {
				src := "gitlab-cluster.json on " + cs[0].Node
				r.Persist = &Override{Site: site, TopologyPrimary: base, Source: src, At: cs[0].At}
				current, r.Source = site, src
			}
		}
	default:
		var names []string
		for site, cs := range sites {
			names = append(names, fmt.Sprintf("%s (%s)", site, cs[0].Node))
		}
		sort.Strings(names)
		r.Notes = append(r.Notes, fmt.Sprintf("gitlab-cluster.json claims primary for %d sites: %s; the primary stays %s until only one site claims it", len(names), strings.Join(names, ", "), current))
	}
	if current != base {
		r.Topology, _ = t.WithPrimary(current)
	}
	return r
}
