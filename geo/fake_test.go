package geo

import (
	"context"
	"errors"
	"fmt"
	"sort"
)

// fakeRaft is an in-memory Raft configuration that keeps hashicorp/raft's
// rules: one change at a time, a leader that is demoted or removed shuts
// down (so the reconciler must never ask for it), leadership goes only to
// a caught-up voter. It records every configuration it passes through.
type fakeRaft struct {
	servers map[string]*Server
	order   []string
	history [][]Server
	calls   []string
}

func newFakeRaft(servers ...Server) *fakeRaft {
	f := &fakeRaft{servers: map[string]*Server{}}
	for _, s := range servers {
		s := s
		f.servers[s.ID] = &s
		f.order = append(f.order, s.ID)
	}
	f.record()
	return f
}

func (f *fakeRaft) record() {
	live, _ := f.Servers(context.Background())
	f.history = append(f.history, live)
}

func (f *fakeRaft) Servers(context.Context) ([]Server, error) {
	var out []Server
	for _, id := range f.order {
		if s, ok := f.servers[id]; ok {
			out = append(out, *s)
		}
	}
	return out, nil
}

func (f *fakeRaft) get(id string) (*Server, error) {
	s, ok := f.servers[id]
	if !ok {
		return nil, fmt.Errorf("server %s not found in raft configuration", id)
	}
	return s, nil
}

func (f *fakeRaft) Promote(_ context.Context, id string) error {
	f.calls = append(f.calls, "promote "+id)
	s, err := f.get(id)
	if err != nil {
		return err
	}
	if s.Voter {
		return errors.New("already a voter")
	}
	s.Voter = true
	f.record()
	return nil
}

func (f *fakeRaft) Demote(_ context.Context, id string) error {
	f.calls = append(f.calls, "demote "+id)
	s, err := f.get(id)
	if err != nil {
		return err
	}
	if s.Leader {
		return errors.New("demoting the leader shuts its Raft down")
	}
	if !s.Voter {
		return errors.New("not a voter")
	}
	s.Voter = false
	f.record()
	return nil
}

func (f *fakeRaft) Remove(_ context.Context, id string) error {
	f.calls = append(f.calls, "remove "+id)
	s, err := f.get(id)
	if err != nil {
		return err
	}
	if s.Leader {
		return errors.New("removing the leader shuts its Raft down")
	}
	delete(f.servers, id)
	f.record()
	return nil
}

func (f *fakeRaft) TransferLeadership(_ context.Context, id string) error {
	f.calls = append(f.calls, "transfer "+id)
	s, err := f.get(id)
	if err != nil {
		return err
	}
	if !s.Voter || !s.Healthy || !s.CaughtUp {
		return errors.New("the target must be a healthy, caught-up voter")
	}
	for _, o := range f.servers {
		o.Leader = false
	}
	s.Leader = true
	f.record()
	return nil
}

func (f *fakeRaft) voters() []string {
	var out []string
	for id, s := range f.servers {
		if s.Voter {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func (f *fakeRaft) leader() string {
	for id, s := range f.servers {
		if s.Leader {
			return id
		}
	}
	return ""
}

// converge runs Next and Apply until the plan is reached or no step is
// left, and returns the last decision.
func converge(ctx context.Context, p Plan, f *fakeRaft, maxSteps int) (Decision, error) {
	for i := 0; ; i++ {
		live, _ := f.Servers(ctx)
		d := Next(p, live)
		if d.Step == nil {
			return d, nil
		}
		if i == maxSteps {
			return d, fmt.Errorf("not converged after %d steps: %s (calls %v)", maxSteps, d.Describe(), f.calls)
		}
		if err := Apply(ctx, f, *d.Step); err != nil {
			return d, err
		}
	}
}
