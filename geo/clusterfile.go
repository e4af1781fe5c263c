package geo

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// DefaultClusterFile is where Omnibus's `gitlab-ctl geo promote` records a
// node's Geo role, overriding gitlab.rb.
const DefaultClusterFile = "/etc/gitlab/gitlab-cluster.json"

// Role is what a node's gitlab-cluster.json says about its site.
type Role int

const (
	// RoleUnknown: the file is absent or says nothing about Geo roles
	// (it also carries Patroni and other overrides).
	RoleUnknown Role = iota
	// RolePrimary: the node's site was promoted.
	RolePrimary
	// RoleSecondary: the node's site is a secondary.
	RoleSecondary
)

// MarshalText writes the role as String does, for JSON.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads what MarshalText wrote; anything else is unknown.
func (r *Role) UnmarshalText(b []byte) error {
	switch string(b) {
	case "primary":
		*r = RolePrimary
	case "secondary":
		*r = RoleSecondary
	default:
		*r = RoleUnknown
	}
	return nil
}

func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleSecondary:
		return "secondary"
	}
	return "unknown"
}

// ParseClusterFile reads the Geo role from gitlab-cluster.json as
// omnibus-gitlab writes it: a single-node site gets
// {"primary": true, "secondary": false}; a node of a multi-node site gets
// {"geo_secondary": {"enable": false}} (with other services' keys beside
// it). Keys that are not about Geo roles are ignored; a file that says
// both primary and secondary is refused.
func ParseClusterFile(src []byte) (Role, error) {
	var f struct {
		Primary      *bool `json:"primary"`
		Secondary    *bool `json:"secondary"`
		GeoSecondary *struct {
			Enable *bool `json:"enable"`
		} `json:"geo_secondary"`
	}
	if len(src) > MaxTopologySize {
		return RoleUnknown, errors.New("the file is larger than any gitlab-cluster.json")
	}
	if err := json.Unmarshal(src, &f); err != nil {
		return RoleUnknown, fmt.Errorf("not JSON: %s", jsonProblem(src, err))
	}
	var claims []string // what each key says, for a contradiction
	primary, secondary := false, false
	claim := func(key string, v *bool, meansPrimary bool) {
		if v == nil {
			return
		}
		claims = append(claims, fmt.Sprintf("%s: %t", key, *v))
		if *v == meansPrimary {
			primary = true
		} else {
			secondary = true
		}
	}
	claim(`"primary"`, f.Primary, true)
	claim(`"secondary"`, f.Secondary, false)
	if f.GeoSecondary != nil {
		claim(`"geo_secondary": {"enable"}`, f.GeoSecondary.Enable, false)
	}
	if primary && secondary {
		return RoleUnknown, fmt.Errorf("it contradicts itself (%s): fix it or delete it, as Geo's runbook says", strings.Join(claims, ", "))
	}
	switch {
	case primary:
		return RolePrimary, nil
	case secondary:
		return RoleSecondary, nil
	}
	return RoleUnknown, nil
}

// EpochKey is the Raft storage key (outside the barrier: no secret) under
// which a cluster keeps its Geo epoch, the number of disaster promotions
// it went through and the last one's members.
const EpochKey = "appliance/geo/epoch"
