package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// writeGeoTopology lays the nodes out in sites and writes the topology
// file every node follows.
func (c *cluster) writeGeoTopology(l *geoLayout) {
	c.t.Helper()
	t := &geo.Topology{MinVoters: l.minVoters}
	i := 0
	for si, n := range l.sites {
		s := geo.Site{Name: fmt.Sprintf("site-%c", 'a'+si), Primary: si == 0}
		s.PreferredLeader = l.preferred[s.Name]
		for range n {
			m := c.nodes[i]
			host, port := splitHostPort(hostPort(m.addr))
			cluster := fmt.Sprintf("%s:%d", host, port+1)
			api := m.addr
			if si > 0 && (l.delay > 0 || l.relay) {
				p := harness.NewDelayProxy(c.t, host+":0", cluster, l.delay)
				cluster = p.Addr
				c.clusterRelays = append(c.clusterRelays, p)
			}
			if si > 0 && l.relay {
				p := harness.NewDelayProxy(c.t, host+":0", hostPort(m.addr), 0)
				api = "http://" + p.Addr
				c.apiRelays = append(c.apiRelays, p)
			}
			s.Nodes = append(s.Nodes, geo.Node{ID: m.id, APIAddr: api, ClusterAddr: "https://" + cluster})
			i++
		}
		t.Sites = append(t.Sites, s)
	}
	c.topoFile = filepath.Join(c.dir, "topology.json")
	c.setTopology(t)
}

// setTopology writes t as the topology file (atomically, as Omnibus's
// file resource does).
func (c *cluster) setTopology(t *geo.Topology) {
	c.t.Helper()
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		c.t.Fatal(err)
	}
	c.writeTopologyBytes(b)
	c.topo = t
}

func (c *cluster) writeTopologyBytes(b []byte) {
	c.t.Helper()
	tmp := c.topoFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, c.topoFile); err != nil {
		c.t.Fatal(err)
	}
}

// withPrimary is the cluster's topology with site as the primary.
func (c *cluster) withPrimary(site string) *geo.Topology {
	c.t.Helper()
	t, err := c.topo.WithPrimary(site)
	if err != nil {
		c.t.Fatal(err)
	}
	return t
}

// clusterFile is m's gitlab-cluster.json.
func (c *cluster) clusterFile(m *member) string {
	return filepath.Join(c.dir, m.id+".gitlab-cluster.json")
}

// geoConverged waits until the active node's reconciler says converged
// and returns its status.
func (c *cluster) geoConverged() statusOutput {
	c.t.Helper()
	var st statusOutput
	harness.Eventually(c.t, 3*time.Minute, "the Geo reconciler to converge", func() bool {
		for _, m := range c.nodes {
			if m.n == nil || m.n.Exited() {
				continue
			}
			s, _ := status(c.t, c.tr, c.bin, m.addr)
			if s.State == "active" && s.Geo != nil && s.Geo.Reconciler == "converged" {
				st = s
				return true
			}
		}
		return false
	})
	return st
}

// geoVoters are the nodes the active node's geo status says vote, and its
// leader.
func geoVoters(st statusOutput) (voters []string, leader string) {
	for _, n := range st.Geo.Nodes {
		if n.Voter {
			voters = append(voters, n.ID)
		}
		if n.Leader {
			leader = n.ID
		}
	}
	slices.Sort(voters)
	return voters, leader
}

// byID is the member named id.
func (c *cluster) byID(id string) *member {
	for _, m := range c.nodes {
		if m.id == id {
			return m
		}
	}
	c.t.Fatalf("no member %s", id)
	return nil
}

func splitHostPort(hp string) (string, int) {
	host, p, _ := net.SplitHostPort(hp)
	port, _ := strconv.Atoi(p)
	return host, port
}

// finish stops the load and fails the test if an acknowledged write does
// not read back through every reader, or if any answer was a 5xx other
// than 503.
func (l *load) finish(t *testing.T, readers ...*member) {
	t.Helper()
	l.stop()
	for _, r := range readers {
		acked, lost := l.verify(t, r)
		t.Logf("read through %s: %d keys acknowledged, %d lost", r.id, acked, lost)
		if lost != 0 {
			t.Fatalf("%d acknowledged writes lost", lost)
		}
	}
	t.Logf("answers: %s", l.kindsSummary())
	if bad := l.serverErrors(); len(bad) > 0 {
		t.Fatalf("HTTP 5xx other than 503: %v", bad)
	}
}

// geoWait is how long the Geo tests wait for the cluster to reach a
// state (an election, a transfer, a step of the reconciler): minutes on
// a machine starved of CPU, seconds otherwise.
const geoWait = 5 * time.Minute

// geoStatusWait is how long one status call has to answer in waitGeo.
const geoStatusWait = 15 * time.Second

// nodeView is what one node said to `status` (or that it did not say).
type nodeView struct {
	id   string
	ok   bool
	st   statusOutput
	raw  statusReason
	took time.Duration
	err  string
}

// statusReason is the part of a status that explains it.
type statusReason struct {
	NotReady string `json:"not_ready"`
	Geo      *struct {
		Reconciler string `json:"reconciler"`
		Nodes      []struct {
			ID        string `json:"id"`
			Reachable bool   `json:"reachable"`
			Ready     bool   `json:"ready"`
			NotReady  string `json:"not_ready"`
			Lag       uint64 `json:"lag"`
		} `json:"nodes"`
	} `json:"geo"`
}

func (v nodeView) String() string {
	if !v.ok {
		return fmt.Sprintf("%s (%s): no status: %s", v.id, v.took.Round(time.Millisecond), v.err)
	}
	out := fmt.Sprintf("%s (%s): %s ready=%v", v.id, v.took.Round(time.Millisecond), v.st.State, v.st.Ready)
	if v.raw.NotReady != "" {
		out += fmt.Sprintf(" (%s)", v.raw.NotReady)
	}
	if g := v.raw.Geo; g != nil && v.st.State == "active" {
		out += fmt.Sprintf("; reconciler: %s", g.Reconciler)
		for _, n := range g.Nodes {
			if n.ID != v.id && (!n.Reachable || !n.Ready) {
				out += fmt.Sprintf("; %s reachable=%v ready=%v lag=%d %s", n.ID, n.Reachable, n.Ready, n.Lag, n.NotReady)
			}
		}
	}
	return out
}

// geoStatuses asks every running node for its status at once, each with
// geoStatusWait to answer.
func (c *cluster) geoStatuses() []nodeView {
	var running []*member
	for _, m := range c.nodes {
		if m.n != nil && !m.n.Exited() {
			running = append(running, m)
		}
	}
	views := make([]nodeView, len(running))
	var wg sync.WaitGroup
	for i, m := range running {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Not harness.Run: its t.Fatal must not run off the test's
			// goroutine. The process itself may start slowly on a starved
			// machine: it gets a minute beyond the call's deadline.
			ctx, cancel := context.WithTimeout(context.Background(), geoStatusWait+time.Minute)
			defer cancel()
			var out, errOut bytes.Buffer
			cmd := exec.CommandContext(ctx, c.bin, "status", "--format", "json", "--address", m.addr, "--timeout", geoStatusWait.String())
			cmd.Stdout, cmd.Stderr = &out, &errOut
			start := time.Now()
			err := cmd.Run()
			v := nodeView{id: m.id, took: time.Since(start), err: strings.TrimSpace(errOut.String())}
			if json.Unmarshal(out.Bytes(), &v.st) == nil {
				v.ok = true
				json.Unmarshal(out.Bytes(), &v.raw)
			} else if v.err == "" && err != nil {
				v.err = err.Error()
			}
			views[i] = v
		}()
	}
	wg.Wait()
	return views
}
