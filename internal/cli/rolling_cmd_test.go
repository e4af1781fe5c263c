package cli

import (
	"strings"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// What the rolling restart tells the operators about a node that came
// back sealed: an HSM that unseals it, or the command its share holders
// run, worded for how the operator runs this binary (on a plain host with
// the node's address; under Omnibus, gitlab-ctl's on the node's host).
func TestSealedNote(t *testing.T) {
	healthy, broken := true, false
	m := member{id: "node-3", addr: "https://node-3.example.com:8200"}
	shamir := seal.MechanismStatus{Type: seal.MechanismShamir, Enrolled: true, Configured: true, Threshold: 3, Progress: 1}
	hsm := func(h *bool) seal.MechanismStatus {
		return seal.MechanismStatus{Type: seal.MechanismPKCS11, Enrolled: true, Configured: true, Healthy: h}
	}
	for _, tc := range []struct {
		name    string
		mechs   []seal.MechanismStatus
		omnibus bool
		want    string
		not     []string
	}{
		{"shares, plain host", []seal.MechanismStatus{shamir}, false,
			"  node-3 is back, sealed, and waits for Shamir shares (1 of 3 in): share holders, run `gitlab-secrets-appliance unseal --address https://node-3.example.com:8200`",
			[]string{"gitlab-ctl"}},
		{"shares, Omnibus", []seal.MechanismStatus{shamir}, true,
			"  node-3 is back, sealed, and waits for Shamir shares (1 of 3 in): share holders, run `gitlab-ctl secrets-appliance unseal` on node-3's host (https://node-3.example.com:8200)",
			[]string{"gitlab-secrets-appliance unseal", "--address"}},
		{"a broken HSM: shares, Omnibus", []seal.MechanismStatus{hsm(&broken), shamir}, true,
			"run `gitlab-ctl secrets-appliance unseal` on node-3's host", nil},
		{"a healthy HSM", []seal.MechanismStatus{hsm(&healthy), shamir}, true,
			"  node-3 is back, sealed: its HSM unseals it", []string{"unseal`"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := sealedNote(m, client.Status{Seal: seal.Status{Mechanisms: tc.mechs}}, tc.omnibus)
			if !strings.Contains(got, tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("%q says %q", got, n)
				}
			}
		})
	}
}
