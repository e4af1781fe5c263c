package seal

import (
	"context"
	"fmt"
)

// MechanismStatus is one mechanism's state on this node. No field holds
// key material, a share or a PIN.
type MechanismStatus struct {
	Type string `json:"type"`
	// Enrolled: the cluster's KEK can be recovered by this mechanism.
	Enrolled bool `json:"enrolled"`
	// Configured: this node's config has the mechanism (for pkcs11: how to
	// reach the token).
	Configured bool `json:"configured"`
	// Healthy (pkcs11): the token is reachable and the key usable now.
	Healthy *bool `json:"healthy,omitempty"`
	// LastUsed: this mechanism provided the KEK the node unsealed with.
	LastUsed bool   `json:"last_used"`
	Error    string `json:"error,omitempty"`

	TokenLabel string `json:"token_label,omitempty"`
	KeyLabel   string `json:"key_label,omitempty"`

	Threshold  int    `json:"threshold,omitempty"`
	Shares     int    `json:"shares,omitempty"`
	Progress   int    `json:"progress"`
	Generation uint32 `json:"generation,omitempty"`
}

// Status is the seal's state on this node.
type Status struct {
	Cluster    string            `json:"cluster,omitempty"`
	Generation uint32            `json:"generation,omitempty"`
	Mechanisms []MechanismStatus `json:"mechanisms"`
	// KeyMissing (set by the appliance for an unsealed node): the current
	// generation's key is not in memory; shares or the HSM give it back.
	KeyMissing bool `json:"key_missing,omitempty"`
}

// Status reports every mechanism that is enrolled or configured, with the
// HSM's health when this node has one: the outcome of a recent probe, or
// of a new one, waited for hsmCheckTimeout at most (see checkHSM). It
// never waits longer for a token that does not answer, nor asks it again
// while a probe is still waiting for it.
func (s *Seal) Status(ctx context.Context, shamirConfigured bool) Status {
	s.refresh(ctx)
	p := s.progress()
	submitted, threshold := p.Submitted, p.Threshold
	s.mu.Lock()
	cur, lastUsed := s.cur, s.lastUsed
	s.mu.Unlock()

	var st Status
	var p11 *hsmEnrollment
	var sh *shamirEnrollment
	if cur != nil {
		st.Cluster, st.Generation = cur.Cluster, cur.Gen
		p11, sh = cur.PKCS11, cur.Shamir
	}
	if p11 != nil || s.opts.HSM != nil {
		m := MechanismStatus{Type: MechanismPKCS11, Enrolled: p11 != nil, Configured: s.opts.HSM != nil, LastUsed: lastUsed == MechanismPKCS11}
		label := ""
		if s.opts.HSM != nil {
			m.TokenLabel, m.KeyLabel = s.opts.HSM.TokenLabel, s.opts.HSM.KeyLabel
			label = s.opts.HSM.KeyLabel
		}
		if p11 != nil {
			m.KeyLabel, label = p11.KeyLabel, p11.KeyLabel
		}
		if s.opts.HSM != nil {
			err := s.checkHSM(ctx, label)
			ok := err == nil
			m.Healthy = &ok
			if err != nil {
				m.Error = err.Error()
			} else if cfgLabel := s.opts.HSM.KeyLabel; cfgLabel != label {
				// Unwrapping uses the key the cluster recorded; the
				// configured one is for the next wrap (rewrap-hsm).
				if cerr := s.checkHSM(ctx, cfgLabel); cerr != nil {
					m.Error = fmt.Sprintf("seal.pkcs11.key_label %q is not usable (%v); the seal key is wrapped with %q, which works: fix the config, or create the key and run `seal rewrap-hsm`", cfgLabel, cerr, label)
				} else {
					m.Error = fmt.Sprintf("seal.pkcs11.key_label is %q but the seal key is still wrapped with %q: run `seal rewrap-hsm`", cfgLabel, label)
				}
			}
		} else {
			m.Error = "this node has no seal \"pkcs11\" block configured"
		}
		st.Mechanisms = append(st.Mechanisms, m)
	}
	if sh != nil || shamirConfigured || submitted > 0 {
		m := MechanismStatus{Type: MechanismShamir, Enrolled: sh != nil, Configured: shamirConfigured, LastUsed: lastUsed == MechanismShamir, Progress: submitted, Threshold: threshold}
		if sh != nil {
			m.Shares, m.Threshold, m.Generation = sh.Shares, sh.Threshold, sh.Gen
		}
		st.Mechanisms = append(st.Mechanisms, m)
	}
	return st
}

// LastUsed names the mechanism that provided the KEK in memory: pkcs11,
// shamir, or "" (none yet, or the KEK was made by Initialize).
func (s *Seal) LastUsed() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastUsed
}
