package client

import (
	"fmt"
	"net/url"
	"strings"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// Summary says in one line what the node is and what it waits for, as
// systemd shows it (STATUS=, in systemctl status):
//
//	uninitialized: waiting for `gitlab-secrets-appliance init` (a new cluster) or to join one (raft.retry_join)
//	sealed: waiting for Shamir shares (1 of 3 submitted); HSM: the HSM token was not found: ...
//	sealed: unsealing with the HSM
//	standby, active node gitlab-2.example.com:8200
//	active
//
// followed by what else an operator should know: the HSM cannot unseal
// this node's next start, the current seal key is missing, a seal change
// is in progress, the GitLab bootstrap after init failed. Like Status, it
// holds no secret.
func (s Status) Summary() string {
	nonVoter := ""
	if s.Raft.Peers > 0 && !s.Raft.Voter {
		nonVoter = " (non-voter)"
	}
	var head string
	switch s.State {
	case StateUninitialized:
		if s.InitInterrupted != "" {
			return "uninitialized: " + s.InitInterrupted
		}
		return "uninitialized: waiting for `gitlab-secrets-appliance init` (a new cluster) or to join one (raft.retry_join)"
	case StateSealed:
		return "sealed: " + s.sealedWaitsFor()
	case StateUnsealing:
		head = "unsealed" + nonVoter + ", waiting for the active node"
	case StateStandby:
		head = "standby" + nonVoter + ", active node " + hostOf(s.LeaderAPIAddr)
	default: // active, or a state this text does not know yet
		head = s.State + nonVoter
	}
	parts := []string{head}
	if m, ok := s.mechanism(seal.MechanismPKCS11); ok && m.Enrolled && m.Configured && m.Error != "" {
		parts = append(parts, "HSM: "+m.Error)
	}
	if s.Seal.KeyMissing {
		parts = append(parts, "the current seal key is missing: submit current shares (`gitlab-secrets-appliance unseal`)")
	}
	if c := s.SealChange; c != nil && c.State != seal.ChangeDone {
		parts = append(parts, fmt.Sprintf("seal change %s: %s (%d of %d)", c.Operation, c.State, c.Progress, c.Threshold))
	}
	if b := s.GitLabBootstrap; b != "" && b != BootstrapRunning && b != BootstrapApplied {
		parts = append(parts, "gitlab bootstrap "+b)
	}
	return strings.Join(parts, "; ")
}

// sealedWaitsFor says what a sealed node waits for: shares, the HSM (and
// why it does not unseal), or both.
func (s Status) sealedWaitsFor() string {
	var waits []string
	if m, ok := s.mechanism(seal.MechanismShamir); ok && (m.Enrolled || m.Configured || m.Progress > 0) {
		if m.Threshold > 0 {
			waits = append(waits, fmt.Sprintf("waiting for Shamir shares (%d of %d submitted)", m.Progress, m.Threshold))
		} else {
			waits = append(waits, fmt.Sprintf("waiting for Shamir shares (%d submitted)", m.Progress))
		}
	}
	if m, ok := s.mechanism(seal.MechanismPKCS11); ok && m.Enrolled {
		healthy := m.Healthy != nil && *m.Healthy
		switch {
		case healthy && len(waits) == 0:
			waits = append(waits, "unsealing with the HSM")
		case healthy:
			waits = append(waits, "the HSM answers: unsealing with it")
		case len(waits) == 0:
			waits = append(waits, "waiting for the HSM: "+m.Error)
		default:
			waits = append(waits, "HSM: "+m.Error)
		}
	}
	if len(waits) == 0 {
		return "no seal mechanism of this node can unseal it (see `gitlab-secrets-appliance status`)"
	}
	return strings.Join(waits, "; ")
}

func (s Status) mechanism(typ string) (seal.MechanismStatus, bool) {
	for _, m := range s.Seal.Mechanisms {
		if m.Type == typ {
			return m, true
		}
	}
	return seal.MechanismStatus{}, false
}

// hostOf is the host:port of an API URL, or the URL if it has none.
func hostOf(addr string) string {
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		return u.Host
	}
	if addr == "" {
		return "unknown"
	}
	return addr
}
