// Package raftx is the only code that reaches unexported state of OpenBao's
// Raft backend and of hashicorp/raft: the *raft.Raft instance OpenBao 2.4
// keeps to itself, and the network transport's in-flight limit. The field
// layout is that of the pinned versions; New checks it, and
// TestLayoutOfThePinnedVersions fails if an upgrade changes it. On that
// Handle runs the node's LeaderWatch: Raft's state and leader as the
// requests need them, the quorum's confirmations of a leader, and the
// node's Raft timing (TuneTimeouts).
package raftx

import (
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"

	hraft "github.com/hashicorp/raft"
	"github.com/openbao/openbao/physical/raft"
)

// Handle reaches the hashicorp/raft instance inside OpenBao's RaftBackend,
// which OpenBao 2.4 keeps unexported (fields raft and l of
// physical/raft.RaftBackend). The appliance needs it for what OpenBao's
// API has no words for: the leader as Raft sees it, the commit index a
// follower learnt from its leader, the last contact.
type Handle struct {
	lock  *sync.RWMutex // RaftBackend.l, which guards RaftBackend.raft
	raft  **hraft.Raft
	trans *hraft.Transport // RaftBackend.raftTransport, set with raft

	unpiped hraft.Transport // the transport whose pipelining is off
}

// New finds the fields of b, or answers false when their layout is not the
// one this package was written for (an OpenBao or hashicorp/raft upgrade):
// refuse to start rather than read memory of another shape.
func New(b *raft.RaftBackend) (*Handle, bool) {
	t := reflect.TypeOf(b).Elem()
	rf, ok1 := t.FieldByName("raft")
	lf, ok2 := t.FieldByName("l")
	tf, ok3 := t.FieldByName("raftTransport")
	if !ok1 || !ok2 || !ok3 || rf.Type != reflect.TypeOf((*hraft.Raft)(nil)) || lf.Type != reflect.TypeOf(sync.RWMutex{}) ||
		tf.Type != reflect.TypeOf((*hraft.Transport)(nil)).Elem() || maxInFlight.Type != reflect.TypeOf(0) {
		return nil, false
	}
	base := unsafe.Pointer(b)
	return &Handle{
		lock:  (*sync.RWMutex)(unsafe.Add(base, lf.Offset)),
		raft:  (**hraft.Raft)(unsafe.Add(base, rf.Offset)),
		trans: (*hraft.Transport)(unsafe.Add(base, tf.Offset)),
	}, true
}

// maxInFlight is hashicorp/raft's NetworkTransport.maxInFlight.
var maxInFlight, _ = reflect.TypeOf(hraft.NetworkTransport{}).FieldByName("maxInFlight")

// Unpipe turns off pipelined replication on the running Raft's network
// transport (maxInFlight 1, what NetworkTransportConfig.MaxRPCsInFlight = 1
// asks for; OpenBao leaves it at 2 and offers no setting). hashicorp/raft
// v1.7.3's pipeline can deadlock when a follower answers Success=false
// while the next send is queued (pipelineDecode returns, decodeResponses
// then waits on doneCh forever, pipelineSend waits on inprogressCh, and
// the deferred pipeline.Close never runs): the leader stops replicating to
// that follower and Raft's Shutdown hangs. The chaos campaign met it after
// a partition healed. Without pipelining a leader sends one AppendEntries
// at a time per follower (each carrying up to 64 entries). Called with
// the backend's lock held (inside With), from one goroutine (the leader
// watch); pipelines opened before it keep
// running until their next failure.
func (h *Handle) Unpipe() {
	nt, ok := (*h.trans).(*hraft.NetworkTransport)
	if !ok || h.unpiped == *h.trans {
		return
	}
	atomic.StoreInt64((*int64)(unsafe.Add(unsafe.Pointer(nt), maxInFlight.Offset)), 1)
	h.unpiped = *h.trans
}

// With runs f with the running Raft instance, or not at all (sealed: Raft
// is not running). f must not block.
func (h *Handle) With(f func(r *hraft.Raft)) bool {
	if h == nil {
		return false
	}
	h.lock.RLock()
	defer h.lock.RUnlock()
	if *h.raft == nil {
		return false
	}
	f(*h.raft)
	return true
}

// Current is the running Raft instance, or nil (sealed). Its methods stay
// safe to call after it shut down (they answer ErrRaftShutdown); use it to
// wait on a future without holding the backend's lock.
func (h *Handle) Current() *hraft.Raft {
	var r *hraft.Raft
	h.With(func(rf *hraft.Raft) { r = rf })
	return r
}

// Transport is the running Raft's transport. Call it inside With: the
// backend replaces the transport whenever it starts Raft again.
func (h *Handle) Transport() hraft.Transport { return *h.trans }
