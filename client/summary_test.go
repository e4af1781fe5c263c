package client

import (
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

func TestStatusSummary(t *testing.T) {
	yes, no := true, false
	tokenGone := "the HSM token was not found: check seal.pkcs11.token_label (or slot) and that the token is present: no token labelled \"gitlab\" (tokens present: none)"
	hsm := func(healthy *bool, err string) seal.MechanismStatus {
		return seal.MechanismStatus{Type: seal.MechanismPKCS11, Enrolled: true, Configured: true, Healthy: healthy, Error: err}
	}
	shamir := func(progress, threshold int) seal.MechanismStatus {
		return seal.MechanismStatus{Type: seal.MechanismShamir, Enrolled: true, Configured: true, Progress: progress, Threshold: threshold, Shares: 5}
	}
	sealed := func(ms ...seal.MechanismStatus) Status {
		return Status{State: StateSealed, Initialized: true, Sealed: true, Seal: seal.Status{Mechanisms: ms}}
	}
	voter := RaftStatus{Voter: true, Peers: 3}
	for _, tc := range []struct {
		name string
		st   Status
		want string
	}{
		{"uninitialized", Status{State: StateUninitialized, Seal: seal.Status{Mechanisms: []seal.MechanismStatus{hsm(&yes, ""), {Type: seal.MechanismShamir, Configured: true}}}},
			"uninitialized: waiting for `gitlab-secrets-appliance init` (a new cluster) or to join one (raft.retry_join)"},
		{"sealed, Shamir only", sealed(shamir(0, 3)), "sealed: waiting for Shamir shares (0 of 3 submitted)"},
		{"sealed, HSM gone, shares coming", sealed(hsm(&no, tokenGone), shamir(1, 3)),
			"sealed: waiting for Shamir shares (1 of 3 submitted); HSM: " + tokenGone},
		{"sealed, HSM only, gone", sealed(hsm(&no, tokenGone)), "sealed: waiting for the HSM: " + tokenGone},
		{"sealed, HSM answers", sealed(hsm(&yes, ""), shamir(0, 3)), "sealed: waiting for Shamir shares (0 of 3 submitted); the HSM answers: unsealing with it"},
		{"sealed, HSM only, answers", sealed(hsm(&yes, "")), "sealed: unsealing with the HSM"},
		{"sealed, HSM enrolled, not configured here", sealed(seal.MechanismStatus{Type: seal.MechanismPKCS11, Enrolled: true, Error: "this node has no seal \"pkcs11\" block configured"}, shamir(2, 3)),
			"sealed: waiting for Shamir shares (2 of 3 submitted); HSM: this node has no seal \"pkcs11\" block configured"},
		{"sealed, joining: threshold not known yet", sealed(seal.MechanismStatus{Type: seal.MechanismShamir, Configured: true, Progress: 1}),
			"sealed: waiting for Shamir shares (1 submitted)"},
		{"sealed, nothing can unseal", sealed(seal.MechanismStatus{Type: seal.MechanismPKCS11, Configured: true, Healthy: &yes}),
			"sealed: no seal mechanism of this node can unseal it (see `gitlab-secrets-appliance status`)"},
		{"unsealing", Status{State: StateUnsealing, Raft: voter}, "unsealed, waiting for the active node"},
		{"standby", Status{State: StateStandby, LeaderAPIAddr: "https://gitlab-2.example.com:8200", Raft: voter}, "standby, active node gitlab-2.example.com:8200"},
		{"standby non-voter", Status{State: StateStandby, LeaderAPIAddr: "https://gitlab-3.example.com:8200", Raft: RaftStatus{Peers: 4}}, "standby (non-voter), active node gitlab-3.example.com:8200"},
		{"active", Status{State: StateActive, Raft: voter, Seal: seal.Status{Mechanisms: []seal.MechanismStatus{hsm(&yes, ""), shamir(0, 3)}}}, "active"},
		{"active, HSM gone", Status{State: StateActive, Raft: voter, Seal: seal.Status{Mechanisms: []seal.MechanismStatus{hsm(&no, tokenGone), shamir(0, 3)}}},
			"active; HSM: " + tokenGone},
		{"active, key missing, change, bootstrap failed", Status{State: StateActive, Raft: voter,
			Seal:            seal.Status{KeyMissing: true},
			SealChange:      &seal.ChangeStatus{Operation: seal.RotateShares, State: seal.ChangeAuthorizing, Progress: 1, Threshold: 3, Nonce: "n0nce"},
			GitLabBootstrap: "failed: connection refused; fix it and run `gitlab-secrets-appliance gitlab bootstrap`"},
			"active; the current seal key is missing: submit current shares (`gitlab-secrets-appliance unseal`); seal change rotate-shares: authorizing (1 of 3); gitlab bootstrap failed: connection refused; fix it and run `gitlab-secrets-appliance gitlab bootstrap`"},
		{"active, bootstrap running or applied", Status{State: StateActive, Raft: voter, GitLabBootstrap: BootstrapRunning}, "active"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.st.Summary(); got != tc.want {
				t.Errorf("Summary()\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}
