package appliance

import (
	"time"

	hraft "github.com/hashicorp/raft"
)

// tuneRaft sets Raft's heartbeat and election timeouts to the configured
// heartbeat_timeout whenever OpenBao has set its own: 1 s times
// performance_multiplier, and three times that for a node's first
// election. The first election matters most after a Geo disaster
// promotion, where the promoted site's nodes all start at once: it waited
// 3-6 s of OpenBao's first-election timeout. Raft randomizes each node's
// election timeout, so nodes started together do not all stand at once.
func (a *Appliance) tuneRaft(r *hraft.Raft) {
	want := a.heartbeatTimeout()
	if want == 0 {
		return
	}
	rc := r.ReloadableConfig()
	normal := time.Duration(a.cfg.Raft.PerformanceMultiplier) * time.Second
	if (rc.HeartbeatTimeout != normal && rc.HeartbeatTimeout != 3*normal) || rc.HeartbeatTimeout == want {
		return
	}
	rc.HeartbeatTimeout, rc.ElectionTimeout = want, want
	if err := r.ReloadConfig(rc); err != nil {
		a.logger.Error("setting Raft's heartbeat timeout failed", "heartbeat_timeout", want, "error", err)
		return
	}
	a.logger.Debug("Raft heartbeat and election timeouts set", "timeout", want)
}

// heartbeatTimeout is raft.heartbeat_timeout (validated), or 0: OpenBao's.
func (a *Appliance) heartbeatTimeout() time.Duration {
	d, _ := time.ParseDuration(a.cfg.Raft.HeartbeatTimeout)
	return d
}
