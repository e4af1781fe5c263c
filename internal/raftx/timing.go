package raftx

import (
	"time"

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
)

// TuneTimeouts is the LeaderWatch hook that sets Raft's heartbeat and
// election timeouts to want (raft.heartbeat_timeout) whenever OpenBao has
// set its own: normal (1 s times performance_multiplier), and three times
// that for a node's first election. The first election matters most after
// a Geo disaster promotion, where the promoted site's nodes all start at
// once: it waited 3-6 s of OpenBao's first-election timeout. Raft
// randomizes each node's election timeout, so nodes started together do
// not all stand at once. want 0 (OpenBao's timing) needs no hook: nil.
func TuneTimeouts(want, normal time.Duration, logger hclog.Logger) func(r *hraft.Raft) {
	if want == 0 {
		return nil
	}
	return func(r *hraft.Raft) {
		rc := r.ReloadableConfig()
		if (rc.HeartbeatTimeout != normal && rc.HeartbeatTimeout != 3*normal) || rc.HeartbeatTimeout == want {
			return
		}
		rc.HeartbeatTimeout, rc.ElectionTimeout = want, want
		if err := r.ReloadConfig(rc); err != nil {
			logger.Error("setting Raft's heartbeat timeout failed", "heartbeat_timeout", want, "error", err)
			return
		}
		logger.Debug("Raft heartbeat and election timeouts set", "timeout", want)
	}
}
