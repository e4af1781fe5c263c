package cli

import "testing"

// Usage mistakes exit 64 before anything is contacted: a command that only
// groups subcommands, given none or an unknown one, and a count given out
// of range (0 is a mistake, not "the default"). The address is one no
// node listens on: a command that got past its checks would exit 4.
func TestUsageExits64(t *testing.T) {
	const nowhere = "http://127.0.0.1:1"
	for _, args := range [][]string{
		{"seal"}, {"geo"}, {"snapshot"}, {"config"}, {"gitlab"},
		{"geo", "nonsense"}, {"snapshot", "nonsense"},
		{"init", "--address", nowhere, "--shares", "0"},
		{"init", "--address", nowhere, "--threshold", "0"},
		{"init", "--address", nowhere, "--shares", "256"},
		{"init", "--address", nowhere, "--recovery-shares", "0"},
		{"init", "--address", nowhere, "--recovery-threshold", "-1"},
		{"seal", "rotate-shares", "--address", nowhere, "--threshold", "0"},
		{"seal", "rotate-shares", "--address", nowhere, "--shares", "0"},
		{"check"}, {"check", "--config", "/nonexistent.hcl", "--yes"}, {"check", "--config", "/nonexistent.hcl", "--empty"},
	} {
		if code := Run(append([]string{"gitlab-secrets-appliance"}, args...)); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
	// Left out, a count takes the default: the command goes on and finds
	// no node.
	if code := Run([]string{"gitlab-secrets-appliance", "init", "--address", nowhere}); code != exitUnreachable {
		t.Errorf("init without counts: exit %d, want %d", code, exitUnreachable)
	}
}
