package client

import (
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// States a node is in, as Status reports them.
const (
	StateUninitialized = "uninitialized" // no cluster yet: run init (or join)
	StateSealed        = "sealed"        // waiting for the HSM or unseal shares
	StateStandby       = "standby"       // unsealed, following the active node
	StateActive        = "active"        // unsealed, serving as the active node
	StateUnsealing     = "unsealing"     // unsealed, HA role not settled yet
)

// Status is a node's state as `status --format json` prints it. It holds
// no secret and is served without authentication, like sys/seal-status.
type Status struct {
	NodeID         string `json:"node_id"`
	Version        string `json:"version"`
	OpenBaoVersion string `json:"openbao_version"`
	State          string `json:"state"`
	// Ready: the node answers API requests now (see httpapi.Readiness);
	// NotReady says what it waits for.
	Ready         bool        `json:"ready"`
	NotReady      string      `json:"not_ready,omitempty"`
	Initialized   bool        `json:"initialized"`
	Sealed        bool        `json:"sealed"`
	APIAddr       string      `json:"api_addr"`
	ClusterAddr   string      `json:"cluster_addr"`
	LeaderAPIAddr string      `json:"leader_api_addr,omitempty"`
	Raft          RaftStatus  `json:"raft"`
	Seal          seal.Status `json:"seal"`
	// SealChange is the seal change in progress on this node, if any (no
	// shares in it).
	SealChange *seal.ChangeStatus `json:"seal_change,omitempty"`
	// GitLabBootstrap is how the GitLab bootstrap after init went on this
	// node: running, applied, or why not.
	GitLabBootstrap string `json:"gitlab_bootstrap,omitempty"`
	// InitInterrupted says what to do on a node whose first init stopped
	// before it answered (the node may read initialized or not).
	InitInterrupted string `json:"init_interrupted,omitempty"`
	// Disk is the data dir's free space; writes are refused while it is low.
	Disk          DiskStatus `json:"disk"`
	UptimeSeconds int64      `json:"uptime_seconds"`
	// StartedAt is when this process started: a restart changes it.
	StartedAt time.Time `json:"started_at"`
	// FIPS is whether the node's cryptography runs in FIPS 140-3 mode.
	FIPS bool `json:"fips"`
	// Geo is the topology this node follows and, on the active node, the
	// reconciler's view of every node (with a geo block only).
	Geo *GeoStatus `json:"geo,omitempty"`
	// Snapshots is the snapshot schedule's last results (with a snapshot
	// block only).
	Snapshots *SnapshotStatus `json:"snapshots,omitempty"`
}

// RaftStatus is this node's view of integrated storage.
type RaftStatus struct {
	AppliedIndex uint64 `json:"applied_index"`
	// CommitIndex is the last entry this node knows committed (on a
	// follower: what its leader told it); Leader is Raft's leader.
	CommitIndex uint64 `json:"commit_index"`
	Leader      string `json:"leader,omitempty"`
	// HeartbeatTimeout is the one Raft runs with now (see
	// raft.heartbeat_timeout).
	HeartbeatTimeout string `json:"heartbeat_timeout,omitempty"`
	Voter            bool   `json:"voter"`
	Peers            int    `json:"peers"` // members in this node's Raft configuration
}

// DiskStatus is the data dir's free space as the guard sees it.
type DiskStatus struct {
	FreeBytes    uint64 `json:"free_bytes"`
	MinFreeBytes uint64 `json:"min_free_bytes"`
	// Low: writes are refused until free_bytes is above min_free_bytes.
	Low bool `json:"low"`
}

// SnapshotResult is one scheduled snapshot, taken or failed.
type SnapshotResult struct {
	At    time.Time `json:"at"`
	File  string    `json:"file,omitempty"`
	Size  int64     `json:"size,omitempty"`
	Index uint64    `json:"index,omitempty"`
	Took  string    `json:"took,omitempty"`
	Error string    `json:"error,omitempty"`
}

// SnapshotStatus is the schedule as this node sees it (in Status).
type SnapshotStatus struct {
	Directory   string          `json:"directory"`
	Interval    string          `json:"interval"`
	Kept        int             `json:"kept"`
	Last        *SnapshotResult `json:"last,omitempty"`
	LastSuccess *SnapshotResult `json:"last_success,omitempty"`
	// Next is when this node takes the next one if it is still active.
	Next time.Time `json:"next,omitzero"`
}

// Outcomes of the GitLab bootstrap after init, as Status reports them.
const (
	BootstrapRunning = "running"
	BootstrapApplied = "applied"
)
