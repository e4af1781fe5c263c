package bao

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/openbao/openbao/sdk/v2/helper/consts"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
)

// The registry offers the curated plugins and nothing that reaches a cloud
// API; what it lists is what it gives.
func TestRegistry(t *testing.T) {
	r := Registry{}
	for typ, want := range map[consts.PluginType][]string{
		consts.PluginTypeCredential: {"approle", "cert", "jwt", "oidc", "userpass"},
		consts.PluginTypeSecrets:    {"database", "kv", "pki", "transit"},
		consts.PluginTypeDatabase:   {"postgresql-database-plugin", "redis-database-plugin", "valkey-database-plugin"},
	} {
		if got := r.Keys(typ); !slices.Equal(got, want) {
			t.Errorf("Keys(%v) = %v, want %v", typ, got, want)
		}
		for _, name := range want {
			if f, ok := r.Get(name, typ); !ok || f == nil {
				t.Errorf("Get(%q, %v) = nil or not found (%v)", name, typ, ok)
			}
			if st, ok := r.DeprecationStatus(name, typ); !ok || st != consts.Supported {
				t.Errorf("DeprecationStatus(%q) = %v, %v", name, st, ok)
			}
		}
	}
	for _, name := range []string{"aws", "gcp", "azure", "kubernetes", "ldap"} {
		if r.Contains(name, consts.PluginTypeCredential) || r.Contains(name, consts.PluginTypeSecrets) {
			t.Errorf("registry offers %q", name)
		}
	}
	if _, ok := r.DeprecationStatus("aws", consts.PluginTypeSecrets); ok {
		t.Error("an unknown plugin has a deprecation status")
	}
}

// The Raft stanza and listeners carry the config's values in OpenBao's
// forms: retry_join as the JSON list OpenBao parses.
func TestServerConfig(t *testing.T) {
	c := &config.Config{DataDir: "/var/opt/x", NodeID: "n1", LogLevel: "info", Raft: &config.Raft{}}
	c.Raft.PerformanceMultiplier = 1
	c.Raft.NonVoter = true
	c.Raft.RetryJoin = []config.RetryJoin{{LeaderAPIAddr: "https://10.0.0.1:8200", LeaderCACertFile: "/ca.pem"}}
	c.Listeners = []config.Listener{{Address: "127.0.0.1:8200", TLSDisable: true, XForwardedForAuthorizedAddrs: []string{"10.0.0.0/8", "not a cidr"}}}
	raw := ServerConfig(c, "https://n1:8200", "https://n1:8201")
	st := raw.Storage.Config
	if st["path"] != "/var/opt/x" || st["node_id"] != "n1" || st["performance_multiplier"] != "1" || st["retry_join_as_non_voter"] != "true" {
		t.Fatalf("raft stanza %v", st)
	}
	var joins []map[string]string
	if err := json.Unmarshal([]byte(st["retry_join"]), &joins); err != nil || len(joins) != 1 ||
		joins[0]["leader_api_addr"] != "https://10.0.0.1:8200" || joins[0]["leader_ca_cert_file"] != "/ca.pem" {
		t.Fatalf("retry_join %q (%v)", st["retry_join"], err)
	}
	if raw.APIAddr != "https://n1:8200" || raw.Storage.ClusterAddr != "https://n1:8201" {
		t.Fatalf("addresses %q %q", raw.APIAddr, raw.Storage.ClusterAddr)
	}
	if len(raw.Listeners) != 1 || !raw.Listeners[0].TLSDisable || len(raw.Listeners[0].XForwardedForAuthorizedAddrs) != 1 {
		t.Fatalf("listeners %+v", raw.Listeners)
	}
}
