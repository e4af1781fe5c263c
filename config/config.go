package config

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
)

// Defaults for a Config. NewConfig applies them; Load applies them to
// whatever a config file leaves out.
const (
	DefaultAPIAddress            = "127.0.0.1:8200"
	DefaultLogLevel              = "info"
	DefaultLogFormat             = "standard"
	DefaultPerformanceMultiplier = 1
	DefaultHeartbeatTimeout      = "500ms"
	DefaultTLSMinVersion         = "tls12"
	DefaultShamirShares          = 5
	DefaultShamirThreshold       = 3
)

// Config is one appliance node's configuration. It is read from an HCL file
// or its JSON form (see Load) and must pass Validate before Start uses it.
// The hcl tags are the keys of the config file.
type Config struct {
	// NodeID names this node in the Raft cluster. Required.
	NodeID string `hcl:"node_id,optional"`
	// DataDir holds the Raft log and state (bbolt). Required; created with
	// mode 0700 if missing, refused if group-writable or world-accessible.
	DataDir string `hcl:"data_dir,optional"`
	// APIAddr is the URL other nodes and clients reach this node's API at.
	// Default: derived from the first listener once it is bound.
	APIAddr string `hcl:"api_addr,optional"`
	// ClusterAddr is the URL other nodes reach this node's cluster port at
	// (Raft and request forwarding, always TLS). Default: derived from
	// cluster.address once it is bound.
	ClusterAddr string `hcl:"cluster_addr,optional"`
	LogLevel    string `hcl:"log_level,optional"`
	LogFormat   string `hcl:"log_format,optional"`

	Listeners []Listener    `hcl:"listener,block"`
	Cluster   *Cluster      `hcl:"cluster,block"`
	Raft      *Raft         `hcl:"raft,block"`
	Audit     []AuditDevice `hcl:"audit,block"`
	Telemetry *Telemetry    `hcl:"telemetry,block"`
	Seal      *Seal         `hcl:"seal,block"`
	GitLab    *GitLab       `hcl:"gitlab,block"`
	Geo       *Geo          `hcl:"geo,block"`
	// Snapshot schedules Raft snapshots (see SnapshotSchedule).
	Snapshot *SnapshotSchedule `hcl:"snapshot,block"`

	// LogOutput receives the node's log; default os.Stderr. Not a file key.
	LogOutput io.Writer
}

// Listener is an API listener (the bao-compatible HTTP API).
type Listener struct {
	// Address is host:port to listen on.
	Address string `hcl:"address,optional"`
	// TLSDisable serves plain HTTP; allowed on loopback addresses only.
	TLSDisable      bool   `hcl:"tls_disable,optional"`
	TLSCertFile     string `hcl:"tls_cert_file,optional"`
	TLSKeyFile      string `hcl:"tls_key_file,optional"`
	TLSClientCAFile string `hcl:"tls_client_ca_file,optional"`
	TLSMinVersion   string `hcl:"tls_min_version,optional"`
	// TLSRequireClientCert demands a client certificate signed by
	// TLSClientCAFile.
	TLSRequireClientCert bool `hcl:"tls_require_client_cert,optional"`
	// XForwardedForAuthorizedAddrs are CIDRs of trusted proxies (GitLab's
	// NGINX) whose X-Forwarded-For is believed.
	XForwardedForAuthorizedAddrs []string `hcl:"x_forwarded_for_authorized_addrs,optional"`
	// UnauthenticatedMetricsAccess lets Prometheus scrape
	// /v1/sys/metrics without a token.
	UnauthenticatedMetricsAccess bool `hcl:"unauthenticated_metrics_access,optional"`
}

// Cluster is the listener for Raft and request forwarding between nodes.
type Cluster struct {
	// Address is host:port to listen on. Default: the first listener's
	// host with its port + 1.
	Address string `hcl:"address,optional"`
}

// Raft tunes integrated storage.
type Raft struct {
	// PerformanceMultiplier scales Raft timing: 1 is fastest (LAN), 10 slowest.
	PerformanceMultiplier int `hcl:"performance_multiplier,optional"`
	// HeartbeatTimeout is how long a follower waits without hearing from
	// its leader before it calls an election (and a candidate before it
	// tries again); a failover takes one to two of it. "" takes
	// DefaultHeartbeatTimeout at performance_multiplier 1, OpenBao's
	// 1 s × multiplier otherwise. At least 500 ms × multiplier (Raft's
	// leader lease).
	HeartbeatTimeout string `hcl:"heartbeat_timeout,optional"`
	// NonVoter joins the cluster as a non-voting member (needs RetryJoin).
	NonVoter bool `hcl:"non_voter,optional"`
	// RetryJoin lists the nodes to join through until one answers.
	RetryJoin []RetryJoin `hcl:"retry_join,block"`
}

// RetryJoin names one node of an existing cluster to join through.
type RetryJoin struct {
	LeaderAPIAddr        string `hcl:"leader_api_addr,optional"`
	LeaderCACertFile     string `hcl:"leader_ca_cert_file,optional"`
	LeaderClientCertFile string `hcl:"leader_client_cert_file,optional"`
	LeaderClientKeyFile  string `hcl:"leader_client_key_file,optional"`
	LeaderTLSServerName  string `hcl:"leader_tls_servername,optional"`
}

// AuditDevice is an audit device the node enables at unseal and keeps as
// configured (OpenBao's declarative audit devices).
type AuditDevice struct {
	// Type is file, syslog or socket (the block label).
	Type string `hcl:"type,label"`
	// Path is the mount path; default: the type.
	Path        string            `hcl:"path,optional"`
	Description string            `hcl:"description,optional"`
	Options     map[string]string `hcl:"options,optional"`
}

// Telemetry configures metrics. Prometheus metrics are served at
// /v1/sys/metrics?format=prometheus when PrometheusRetentionTime is set.
type Telemetry struct {
	PrometheusRetentionTime string `hcl:"prometheus_retention_time,optional"`
	DisableHostname         bool   `hcl:"disable_hostname,optional"`
}

// Seal says which mechanisms can recover the cluster's key-encryption key
// (KEK) and so unseal: an HSM, Shamir shares, or both, each on its own.
// With neither block, Shamir shares (5, threshold 3) are the default.
type Seal struct {
	PKCS11 *PKCS11Seal `hcl:"pkcs11,block"`
	Shamir *ShamirSeal `hcl:"shamir,block"`
}

// PKCS11Seal is how this node reaches the HSM that wraps the KEK.
type PKCS11Seal struct {
	// Library is the token's PKCS#11 module (.so).
	Library string `hcl:"library,optional"`
	// TokenLabel or Slot picks the token (exactly one).
	TokenLabel string `hcl:"token_label,optional"`
	Slot       *int   `hcl:"slot,optional"`
	// PINFile (mode 0600 or 0400) or PINEnv (a variable's name) holds the
	// user PIN (exactly one). The PIN itself is never in the config.
	PINFile string `hcl:"pin_file,optional"`
	PINEnv  string `hcl:"pin_env,optional"`
	// KeyLabel is the AES-256 key on the token that wraps the KEK at init,
	// add and rewrap. Unwrapping uses the key the cluster recorded.
	KeyLabel string `hcl:"key_label,optional"`
}

// ShamirSeal splits the KEK into shares held by operators.
type ShamirSeal struct {
	// Shares and Threshold are the defaults `init` uses.
	Shares    int `hcl:"shares,optional"`
	Threshold int `hcl:"threshold,optional"`
}

// NewConfig returns a Config for a single loopback node with every default
// applied. NodeID and DataDir are left for the caller.
func NewConfig() *Config {
	c := &Config{}
	c.applyDefaults()
	return c
}

// applyDefaults fills in what a config file may leave out. Validate runs on
// the result, so defaults never hide a problem in what was given.
func (c *Config) applyDefaults() {
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.LogFormat == "" {
		c.LogFormat = DefaultLogFormat
	}
	if len(c.Listeners) == 0 {
		c.Listeners = []Listener{{Address: DefaultAPIAddress, TLSDisable: true}}
	}
	for i := range c.Listeners {
		if c.Listeners[i].TLSMinVersion == "" {
			c.Listeners[i].TLSMinVersion = DefaultTLSMinVersion
		}
	}
	if c.Cluster == nil {
		c.Cluster = &Cluster{}
	}
	if c.Cluster.Address == "" {
		c.Cluster.Address = NextPort(c.Listeners[0].Address)
	}
	if c.Raft == nil {
		c.Raft = &Raft{}
	}
	if c.Raft.PerformanceMultiplier == 0 {
		c.Raft.PerformanceMultiplier = DefaultPerformanceMultiplier
	}
	if c.Raft.HeartbeatTimeout == "" && c.Raft.PerformanceMultiplier == 1 {
		c.Raft.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if c.Telemetry == nil {
		c.Telemetry = &Telemetry{}
	}
	if c.Seal == nil {
		c.Seal = &Seal{}
	}
	if c.Seal.Shamir == nil && c.Seal.PKCS11 == nil {
		c.Seal.Shamir = &ShamirSeal{}
	}
	if s := c.Seal.Shamir; s != nil {
		if s.Shares == 0 {
			s.Shares = DefaultShamirShares
		}
		if s.Threshold == 0 {
			s.Threshold = min(DefaultShamirThreshold, s.Shares)
		}
	}
	if c.GitLab != nil {
		c.GitLab.applyDefaults()
	}
	if c.Geo != nil {
		c.Geo.applyDefaults()
	}
	if c.Snapshot != nil {
		c.Snapshot.applyDefaults(c.DataDir)
	}
	for i := range c.Audit {
		if c.Audit[i].Path == "" {
			c.Audit[i].Path = c.Audit[i].Type
		}
	}
}

// URL is the URL a client on this host uses for the listener.
func (l Listener) URL() string {
	scheme := "https://"
	if l.TLSDisable {
		scheme = "http://"
	}
	return scheme + Advertisable(l.Address)
}

// Advertisable turns a wildcard listen address into one a peer can dial.
func Advertisable(hostport string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// RaftAddr is the host:port Raft knows a node by, from its cluster URL.
func RaftAddr(clusterAddr string) (string, error) {
	u, err := url.Parse(clusterAddr)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("cluster address %q is not a URL", clusterAddr)
	}
	return u.Host, nil
}

// NextPort is host:port+1, the conventional cluster port beside an API port.
func NextPort(hostport string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return ""
	}
	p, err := strconv.Atoi(port)
	if err != nil || p == 0 {
		return net.JoinHostPort(host, "0")
	}
	return net.JoinHostPort(host, strconv.Itoa(p+1))
}
