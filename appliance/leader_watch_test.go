package appliance

import (
	"errors"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// The only voter is its own quorum: a single node stays ready however long
// ago its leadership was last confirmed (a starved process confirms late).
func TestSoleVoterIsAlwaysReady(t *testing.T) {
	a := startNode(t, testConfig(t, &syncBuffer{}))
	initAndUnseal(t, a)
	harness.Eventually(t, time.Minute, "the node to see it is the only voter", a.leaders.SoleVoter)
	a.leaders.Expire() // last confirmed in 1970
	if rd := a.readiness(); !rd.Ready || !rd.Active {
		t.Fatalf("a single node with an old confirmation is not ready: %+v", rd)
	}
}

// TestReplicationIsNotPipelined: once Raft runs, its transport refuses to
// open an AppendEntries pipeline (hashicorp/raft v1.7.3's pipeline can
// deadlock a leader's replication and its shutdown; see raftx.Handle.Unpipe).
func TestReplicationIsNotPipelined(t *testing.T) {
	a := startNode(t, testConfig(t, &syncBuffer{}))
	initAndUnseal(t, a)
	waitFor(t, "the leader watch to turn pipelining off", func() bool {
		piped := true
		a.raftH.With(func(*hraft.Raft) {
			p, err := a.raftH.Transport().AppendEntriesPipeline("other", "127.0.0.1:1")
			if p != nil {
				p.Close()
			}
			piped = !errors.Is(err, hraft.ErrPipelineReplicationNotSupported)
		})
		return !piped
	})
}
