package raftx

import (
	"testing"

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
	"github.com/openbao/openbao/physical/raft"
)

// The layout New reads is that of the pinned OpenBao and hashicorp/raft:
// an upgrade that moves or retypes a field makes New refuse, and this test
// fail, before anything reads memory of another shape.
func TestLayoutOfThePinnedVersions(t *testing.T) {
	b, err := raft.NewRaftBackend(map[string]string{"path": t.TempDir(), "node_id": "n1"}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	rb := b.(*raft.RaftBackend)
	defer rb.Close()
	h, ok := New(rb)
	if !ok {
		t.Fatal("the fields of physical/raft.RaftBackend or hashicorp/raft.NetworkTransport changed: review raftx for the new versions")
	}
	// Raft has not started: nothing runs.
	if h.With(func(*hraft.Raft) { t.Error("With ran f without a running Raft") }) || h.Current() != nil {
		t.Error("a backend whose Raft never started has a Raft instance")
	}
	var nilHandle *Handle
	if nilHandle.With(func(*hraft.Raft) {}) {
		t.Error("a nil Handle ran f")
	}
}
