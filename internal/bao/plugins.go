package bao

import (
	"slices"

	"github.com/openbao/openbao/audit"
	auditFile "github.com/openbao/openbao/builtin/audit/file"
	auditSocket "github.com/openbao/openbao/builtin/audit/socket"
	auditSyslog "github.com/openbao/openbao/builtin/audit/syslog"
	credAppRole "github.com/openbao/openbao/builtin/credential/approle"
	credCert "github.com/openbao/openbao/builtin/credential/cert"
	credJWT "github.com/openbao/openbao/builtin/credential/jwt"
	credUserpass "github.com/openbao/openbao/builtin/credential/userpass"
	logicalDb "github.com/openbao/openbao/builtin/logical/database"
	logicalKv "github.com/openbao/openbao/builtin/logical/kv"
	logicalPki "github.com/openbao/openbao/builtin/logical/pki"
	logicalTransit "github.com/openbao/openbao/builtin/logical/transit"
	dbPostgres "github.com/openbao/openbao/plugins/database/postgresql"
	dbValkey "github.com/openbao/openbao/plugins/database/valkey"
	"github.com/openbao/openbao/sdk/v2/helper/consts"
	"github.com/openbao/openbao/sdk/v2/logical"
)

// The builtin plugins the appliance ships: what a GitLab secrets manager
// needs, nothing that reaches a cloud API. Namespaces, the token store,
// identity and cubbyhole are part of OpenBao's core and always present;
// CEL roles are part of the jwt auth method. There are no external plugins:
// no plugin directory is configured, so nothing can be loaded from disk.
var (
	builtinCredential = map[string]logical.Factory{
		"approle":  credAppRole.Factory,  // services and CI tooling outside GitLab
		"cert":     credCert.Factory,     // mutual-TLS clients on the local network
		"jwt":      credJWT.Factory,      // GitLab Rails and Runner ID tokens, CEL roles
		"oidc":     credJWT.Factory,      // operators through GitLab as OIDC provider
		"userpass": credUserpass.Factory, // break-glass operator accounts
	}
	builtinSecrets = map[string]logical.Factory{
		"kv":       logicalKv.Factory,      // v1 and v2: GitLab's secrets/kv
		"transit":  logicalTransit.Factory, // encryption as a service
		"pki":      logicalPki.Factory,     // internal CAs of an air-gapped site
		"database": logicalDb.Factory,      // dynamic credentials
	}
	builtinDatabase = map[string]func() (interface{}, error){
		"postgresql-database-plugin": dbPostgres.New, // GitLab's own database engine
		"valkey-database-plugin":     dbValkey.New,   // GitLab's Redis
		"redis-database-plugin":      dbValkey.New,
	}
)

// AuditBackends are the audit device types the config may declare.
var AuditBackends = map[string]audit.Factory{
	"file":   auditFile.Factory,
	"socket": auditSocket.Factory,
	"syslog": auditSyslog.Factory,
}

// LogicalBackends are the secrets engines the core is built with besides
// the registry's: KV (the core mounts it itself) and database.
func LogicalBackends() map[string]logical.Factory {
	return map[string]logical.Factory{"kv": builtinSecrets["kv"], "database": builtinSecrets["database"]}
}

// Registry is the curated vault.BuiltinRegistry; immutable, so one value
// serves every core.
type Registry struct{}

func (Registry) Contains(name string, t consts.PluginType) bool {
	_, ok := Registry{}.Get(name, t)
	return ok
}

func (Registry) Get(name string, t consts.PluginType) (func() (interface{}, error), bool) {
	switch t {
	case consts.PluginTypeCredential:
		if f, ok := builtinCredential[name]; ok {
			return func() (interface{}, error) { return f, nil }, true
		}
	case consts.PluginTypeSecrets:
		if f, ok := builtinSecrets[name]; ok {
			return func() (interface{}, error) { return f, nil }, true
		}
	case consts.PluginTypeDatabase:
		if f, ok := builtinDatabase[name]; ok {
			return f, true
		}
	}
	return nil, false
}

func (Registry) Keys(t consts.PluginType) []string {
	var keys []string
	switch t {
	case consts.PluginTypeCredential:
		keys = mapKeys(builtinCredential)
	case consts.PluginTypeSecrets:
		keys = mapKeys(builtinSecrets)
	case consts.PluginTypeDatabase:
		keys = mapKeys(builtinDatabase)
	}
	slices.Sort(keys)
	return keys
}

func (Registry) DeprecationStatus(name string, t consts.PluginType) (consts.DeprecationStatus, bool) {
	if (Registry{}).Contains(name, t) {
		return consts.Supported, true
	}
	return consts.Unknown, false
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
