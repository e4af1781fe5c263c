package client

import (
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
)

// PeerStatus is what a node tells the active node's reconciler about
// itself (GET /appliance/v1/geo/peer): cheap, no secret, no HSM probe.
type PeerStatus struct {
	NodeID       string    `json:"node_id"`
	Initialized  bool      `json:"initialized"`
	Sealed       bool      `json:"sealed"`
	Ready        bool      `json:"ready"`
	NotReady     string    `json:"not_ready,omitempty"`
	AppliedIndex uint64    `json:"applied_index"`
	ClusterRole  geo.Role  `json:"cluster_file_role"`
	ClusterAt    time.Time `json:"cluster_file_time,omitzero"`
	Epoch        geo.Epoch `json:"epoch"`
}

// GeoStatus is the Geo part of Status.
type GeoStatus struct {
	Site        string `json:"site"`
	PrimarySite string `json:"primary_site"`
	// PrimarySource says where the primary comes from (topology, geo
	// promote, a node's gitlab-cluster.json).
	PrimarySource string `json:"primary_source"`
	// TopologyError is why the topology last read was refused (the node
	// runs on the one before).
	TopologyError string `json:"topology_error,omitempty"`
	// ClusterFileRole is what this node's gitlab-cluster.json says.
	ClusterFileRole  string   `json:"cluster_file_role"`
	ClusterFileError string   `json:"cluster_file_error,omitempty"`
	Notes            []string `json:"notes,omitempty"`
	// Epoch is this node's Geo epoch (0 until a disaster promotion), RPO
	// what that promotion may have lost; Fenced says why this node must
	// not unseal: its Raft data belongs to a replaced cluster.
	Epoch  geo.Epoch `json:"epoch"`
	RPO    *geo.RPO  `json:"rpo,omitempty"`
	Fenced string    `json:"fenced,omitempty"`
	// Reconciler: what the active node decided last ("converged", the
	// step it took, or what it waits for); on a standby, "standby: the
	// active node reconciles".
	Reconciler string        `json:"reconciler"`
	LastStep   *GeoStepEntry `json:"last_step,omitempty"`
	Nodes      []GeoNodeView `json:"nodes"`
}

// GeoStepEntry is a step the reconciler took.
type GeoStepEntry struct {
	Step  geo.Step  `json:"step"`
	At    time.Time `json:"at"`
	Error string    `json:"error,omitempty"`
}

// GeoNodeView is one node of the topology as the active node sees it.
type GeoNodeView struct {
	ID           string `json:"id"`
	Site         string `json:"site"`
	APIAddr      string `json:"api_addr"`
	DesiredVoter bool   `json:"desired_voter"`
	Why          string `json:"why"`
	// InRaft: the node is in the Raft configuration; Voter its suffrage.
	InRaft       bool   `json:"in_raft"`
	Voter        bool   `json:"voter"`
	Leader       bool   `json:"leader"`
	Reachable    bool   `json:"reachable"`
	Sealed       bool   `json:"sealed"`
	Ready        bool   `json:"ready"`
	NotReady     string `json:"not_ready,omitempty"`
	AppliedIndex uint64 `json:"applied_index"`
	Lag          uint64 `json:"lag"`
	Epoch        uint64 `json:"epoch"`
	// LastContact is how long ago the active node last heard from it.
	LastContact string `json:"last_contact,omitempty"`
}

// PromoteRequest asks for a planned switchover of the primary site.
type PromoteRequest struct {
	Site string `json:"site"`
	// DryRun runs the pre-flight checks and returns the plan only.
	DryRun bool `json:"dry_run,omitempty"`
}

// PromoteResult is a switchover's plan and pre-flight checks.
type PromoteResult struct {
	Site    string     `json:"site"`
	From    string     `json:"from"`
	Voters  []string   `json:"voters"`
	Leader  string     `json:"preferred_leader,omitempty"`
	Checks  []GeoCheck `json:"checks"`
	Notes   []string   `json:"notes,omitempty"`
	Started bool       `json:"started"`
}

// GeoCheck is one pre-flight check.
type GeoCheck struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}
