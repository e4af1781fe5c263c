// Package bao is the OpenBao server the appliance embeds, as built from the
// appliance's config: the server config the core reads (listeners, audit
// devices, the Raft stanza, addresses), the curated builtin plugins and
// audit devices, telemetry, and gRPC's own logging silenced. It holds no
// state of a running node.
package bao

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/go-secure-stdlib/parseutil"
	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/openbao/openbao/command/server"
	"github.com/openbao/openbao/helper/metricsutil"
	"github.com/openbao/openbao/internalshared/configutil"
	"github.com/openbao/openbao/internalshared/listenerutil"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"google.golang.org/grpc/grpclog"
)

// ServerConfig translates an appliance config into the OpenBao server
// config the core reads (listeners, audit devices, storage, addresses).
// apiAddr and clusterAddr are the node's advertised addresses ("" before
// they are known).
func ServerConfig(c *config.Config, apiAddr, clusterAddr string) *server.Config {
	raw := &server.Config{
		SharedConfig: &configutil.SharedConfig{
			LogLevel:  c.LogLevel,
			LogFormat: c.LogFormat,
		},
		Storage:     &server.Storage{Type: "raft", Config: raftConfig(c), RedirectAddr: apiAddr, ClusterAddr: clusterAddr},
		APIAddr:     apiAddr,
		ClusterAddr: clusterAddr,
	}
	for _, l := range c.Listeners {
		lc := &configutil.Listener{
			Type:                          "tcp",
			Address:                       l.Address,
			TLSDisable:                    l.TLSDisable,
			TLSCertFile:                   l.TLSCertFile,
			TLSKeyFile:                    l.TLSKeyFile,
			TLSClientCAFile:               l.TLSClientCAFile,
			TLSMinVersion:                 l.TLSMinVersion,
			TLSRequireAndVerifyClientCert: l.TLSRequireClientCert,
			TLSDisableClientCerts:         l.TLSClientCAFile == "",
		}
		lc.Telemetry.UnauthenticatedMetricsAccess = l.UnauthenticatedMetricsAccess
		for _, cidr := range l.XForwardedForAuthorizedAddrs {
			if sa, err := sockaddr.NewSockAddr(cidr); err == nil {
				lc.XForwardedForAuthorizedAddrs = append(lc.XForwardedForAuthorizedAddrs, &sockaddr.SockAddrMarshaler{SockAddr: sa})
			}
		}
		raw.Listeners = append(raw.Listeners, lc)
	}
	for _, d := range c.Audit {
		raw.Audits = append(raw.Audits, &server.AuditDevice{
			Type:        d.Type,
			Path:        d.Path,
			Description: d.Description,
			Options:     d.Options,
		})
	}
	return raw
}

// CoreConfig is ServerConfig with the listeners as they were bound (with
// their request limits), for the core once the node runs.
func CoreConfig(c *config.Config, apiAddr, clusterAddr string, listeners []listenerutil.Listener) *server.Config {
	raw := ServerConfig(c, apiAddr, clusterAddr)
	raw.Listeners = nil
	for _, ln := range listeners {
		raw.Listeners = append(raw.Listeners, ln.Config)
	}
	return raw
}

// raftConfig is the storage "raft" stanza in OpenBao's string-map form.
func raftConfig(c *config.Config) map[string]string {
	m := map[string]string{
		"path":                   c.DataDir,
		"node_id":                c.NodeID,
		"performance_multiplier": strconv.Itoa(c.Raft.PerformanceMultiplier),
	}
	if c.Raft.NonVoter {
		m["retry_join_as_non_voter"] = "true"
	}
	if len(c.Raft.RetryJoin) > 0 {
		type join struct {
			LeaderAPIAddr        string `json:"leader_api_addr"`
			LeaderCACertFile     string `json:"leader_ca_cert_file,omitempty"`
			LeaderClientCertFile string `json:"leader_client_cert_file,omitempty"`
			LeaderClientKeyFile  string `json:"leader_client_key_file,omitempty"`
			LeaderTLSServerName  string `json:"leader_tls_servername,omitempty"`
		}
		var joins []join
		for _, j := range c.Raft.RetryJoin {
			joins = append(joins, join(j))
		}
		b, _ := json.Marshal(joins)
		m["retry_join"] = string(b)
	}
	return m
}

// Telemetry is what the core reports metrics through.
type Telemetry struct {
	Helper *metricsutil.MetricsHelper
	Sink   *metricsutil.ClusterMetricSink
}

// SetupTelemetry starts the in-memory and (if configured) Prometheus
// sinks. go-metrics keeps one global sink per process; the last node
// started in a process owns it.
func SetupTelemetry(t *config.Telemetry, version string) (Telemetry, error) {
	tc := &configutil.Telemetry{DisableHostname: t.DisableHostname}
	if t.PrometheusRetentionTime != "" {
		d, err := parseutil.ParseDurationSecond(t.PrometheusRetentionTime)
		if err != nil {
			return Telemetry{}, fmt.Errorf("prometheus_retention_time: %w", err)
		}
		tc.PrometheusRetentionTime = d
	}
	inm, sink, prom, err := configutil.SetupTelemetry(&configutil.SetupTelemetryOpts{
		Config:      tc,
		Ui:          &cli.BasicUi{Writer: io.Discard, ErrorWriter: io.Discard},
		ServiceName: "vault",
		DisplayName: "OpenBao",
		UserAgent:   "gitlab-secrets-appliance/" + version,
	})
	if err != nil {
		return Telemetry{}, err
	}
	return Telemetry{Helper: metricsutil.NewMetricsHelper(inm, prom), Sink: sink}, nil
}

var grpcOnce sync.Once

// QuietGRPC stops the gRPC library (request forwarding between nodes) from
// writing its own log lines to stderr.
func QuietGRPC() {
	grpcOnce.Do(func() { grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, io.Discard)) })
}
