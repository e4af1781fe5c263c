package filter

import (
	"testing"

	"github.com/openbao/openbao/helper/namespace"
)

// Template directives whose values logins shape (an alias's metadata, an
// alias's name) are named; ids and what identity writers set pass. (An
// alias's name, which needs the mount table, is played in test/.)
func TestUserShapedTemplates(t *testing.T) {
	f := &requestFilter{}
	for s, want := range map[string]string{
		"kv/data/main/*":                                                                 "",
		"kv/data/{{identity.entity.id}}/*":                                               "",
		"identity/entity/name/{{identity.entity.name}}":                                  "", // OpenBao's default policy
		"kv/data/{{ identity.entity.aliases.auth_jwt_1.id }}/*":                          "",
		"kv/data/{{identity.groups.names.devs.id}}/x":                                    "",
		"kv/data/{{identity.groups.ids.123.name}}":                                       "",
		"kv/data/{{identity.entity.metadata.team}}":                                      "",
		"kv/data/{{identity.entity.aliases.auth_jwt_1.custom_metadata.a}}":               "",
		"kv/data/{{identity.entity.aliases.auth_jwt_1.metadata.ref}}/*":                  "identity.entity.aliases.auth_jwt_1.metadata.ref",
		"kv/data/{{identity.entity.id}}/{{identity.entity.aliases.auth_jwt_1.metadata}}": "identity.entity.aliases.auth_jwt_1.metadata",
	} {
		if got := f.userShaped(s, namespace.RootNamespace); got != want {
			t.Errorf("userShaped(%q) = %q, want %q", s, got, want)
		}
	}
}
