package filter

import (
	"encoding/json"
	"testing"
)

// revocation_statements count only when they hold a statement, in either
// form OpenBao takes (a list, or one string).
func TestStatementsGiven(t *testing.T) {
	for raw, want := range map[string]bool{
		`["DROP ROLE \"{{name}}\";"]`: true,
		`"DROP ROLE x;"`:              true,
		`[]`:                          false,
		`[" ", ""]`:                   false,
		`""`:                          false,
		`"  "`:                        false,
		`42`:                          true, // not ours to judge: OpenBao refuses it
	} {
		if got := statementsGiven(json.RawMessage(raw)); got != want {
			t.Errorf("statementsGiven(%s) = %v, want %v", raw, got, want)
		}
	}
	if statementsGiven(nil) {
		t.Error("statementsGiven(nil)")
	}
}
