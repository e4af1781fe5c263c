package raftx

import (
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
)

type nopFSM struct{}

func (nopFSM) Apply(*hraft.Log) any                 { return nil }
func (nopFSM) Snapshot() (hraft.FSMSnapshot, error) { return nil, nil }
func (nopFSM) Restore(io.ReadCloser) error          { return nil }

// The hook replaces OpenBao's timeouts (normal, or three times that for a
// first election) with the configured one, and leaves any other alone.
func TestTuneTimeouts(t *testing.T) {
	if TuneTimeouts(0, time.Second, hclog.NewNullLogger()) != nil {
		t.Fatal("a hook without a configured timeout")
	}
	for _, tc := range []struct {
		set, want time.Duration
	}{
		{time.Second, 2500 * time.Millisecond},     // OpenBao's, multiplier 1
		{3 * time.Second, 2500 * time.Millisecond}, // its first election
		{7 * time.Second, 7 * time.Second},         // someone else's: left alone
	} {
		c := hraft.DefaultConfig()
		c.LocalID = "n1"
		c.Logger = hclog.NewNullLogger()
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = tc.set, tc.set, 500*time.Millisecond
		_, trans := hraft.NewInmemTransport("n1")
		store := hraft.NewInmemStore()
		r, err := hraft.NewRaft(c, nopFSM{}, store, store, hraft.NewInmemSnapshotStore(), trans)
		if err != nil {
			t.Fatal(err)
		}
		TuneTimeouts(2500*time.Millisecond, time.Second, hclog.NewNullLogger())(r)
		rc := r.ReloadableConfig()
		if rc.HeartbeatTimeout != tc.want || rc.ElectionTimeout != tc.want {
			t.Errorf("set %v: heartbeat %v, election %v; want %v", tc.set, rc.HeartbeatTimeout, rc.ElectionTimeout, tc.want)
		}
		r.Shutdown().Error()
	}
}
