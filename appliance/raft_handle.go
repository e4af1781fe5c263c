package appliance

import (
	"reflect"
	"sync"
	"unsafe"

	hraft "github.com/hashicorp/raft"
	"github.com/openbao/openbao/physical/raft"
)

// raftHandle reaches the hashicorp/raft instance inside OpenBao's
// RaftBackend, which OpenBao 2.4 keeps unexported (fields raft and l of
// physical/raft.RaftBackend). The appliance needs it for what OpenBao's
// API has no words for: the leader as Raft sees it, the commit index a
// follower learnt from its leader, the last contact. The field layout is
// that of the pinned OpenBao version; newRaftHandle checks it, and a test
// fails if an upgrade changes it.
type raftHandle struct {
	lock *sync.RWMutex // RaftBackend.l, which guards RaftBackend.raft
	raft **hraft.Raft
}

func newRaftHandle(b *raft.RaftBackend) (*raftHandle, bool) {
	t := reflect.TypeOf(b).Elem()
	rf, ok1 := t.FieldByName("raft")
	lf, ok2 := t.FieldByName("l")
	if !ok1 || !ok2 || rf.Type != reflect.TypeOf((*hraft.Raft)(nil)) || lf.Type != reflect.TypeOf(sync.RWMutex{}) {
		return nil, false
	}
	base := unsafe.Pointer(b)
	return &raftHandle{
		lock: (*sync.RWMutex)(unsafe.Add(base, lf.Offset)),
		raft: (**hraft.Raft)(unsafe.Add(base, rf.Offset)),
	}, true
}

// with runs f with the running Raft instance, or not at all (sealed: Raft
// is not running). f must not block.
func (h *raftHandle) with(f func(r *hraft.Raft)) bool {
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
