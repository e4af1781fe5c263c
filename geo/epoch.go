package geo

import (
	"slices"
	"time"
)

// Epoch is a Geo epoch: zero until the first disaster promotion.
type Epoch struct {
	Number uint64 `json:"number"`
	// Site was promoted at At; Members are the nodes the promotion
	// rebuilt the cluster from.
	Site    string    `json:"site,omitempty"`
	At      time.Time `json:"at,omitzero"`
	Members []string  `json:"members,omitempty"`
	// Survivors are the members' logs when they were promoted, as each
	// recorded its own (the RPO comes from them).
	Survivors []Survivor `json:"survivors,omitempty"`
	// KeptBy is the first active node of the epoch; every entry up to
	// KeptIndex (its log at the promotion) is in the new cluster.
	KeptBy    string    `json:"kept_by,omitempty"`
	KeptIndex uint64    `json:"kept_index,omitempty"`
	KeptAt    time.Time `json:"kept_at,omitzero"`
}

// Survivor is one promoted node's Raft log at the promotion.
type Survivor struct {
	Node         string    `json:"node"`
	AppliedIndex uint64    `json:"applied_index"`
	LastIndex    uint64    `json:"last_index"`
	LastTerm     uint64    `json:"last_term"`
	LastAt       time.Time `json:"last_at,omitzero"`
}

// Supersedes: e is newer than mine and was not made with node as a member
// (the nodes promoted together may number their epoch differently until
// Raft tells them the same number).
func (e Epoch) Supersedes(mine Epoch, node string) bool {
	return e.Number > mine.Number && !slices.Contains(e.Members, node)
}

// RPO is what a disaster promotion may have lost: the entries between the
// index the new cluster kept and the newest any promoted node had.
type RPO struct {
	KeptIndex   uint64    `json:"kept_index"`
	KeptBy      string    `json:"kept_by"`
	KeptAt      time.Time `json:"kept_at,omitzero"`
	NewestIndex uint64    `json:"newest_index"`
	NewestNode  string    `json:"newest_node"`
	NewestAt    time.Time `json:"newest_at,omitzero"`
	// LostEntriesAtMost counts Raft entries (writes and OpenBao's own);
	// LostSeconds is the time between the kept entry and the newest one.
	LostEntriesAtMost uint64  `json:"lost_entries_at_most"`
	LostSeconds       float64 `json:"lost_seconds"`
}

// RPO is e's RPO over the survivors it records (nil before the first
// active node of the epoch recorded it).
func (e Epoch) RPO() *RPO {
	if e.KeptBy == "" {
		return nil
	}
	r := &RPO{KeptIndex: e.KeptIndex, KeptBy: e.KeptBy, KeptAt: e.KeptAt, NewestIndex: e.KeptIndex, NewestNode: e.KeptBy, NewestAt: e.KeptAt}
	for _, s := range e.Survivors {
		if s.LastIndex > r.NewestIndex {
			r.NewestIndex, r.NewestNode, r.NewestAt = s.LastIndex, s.Node, s.LastAt
		}
	}
	r.LostEntriesAtMost = r.NewestIndex - r.KeptIndex
	if !r.NewestAt.IsZero() && !r.KeptAt.IsZero() && r.NewestAt.After(r.KeptAt) {
		r.LostSeconds = r.NewestAt.Sub(r.KeptAt).Seconds()
	}
	return r
}
