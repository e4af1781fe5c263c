package reconciler

// The Geo nodes' view of each other: what a node answers about itself
// (GET /appliance/v1/geo/peer), how the active node and the epoch checks
// ask every node at once, and since when each node has been ready.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"sync"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
)

// Peer is this node's PeerStatus.
func (g *Reconciler) Peer(ctx context.Context) client.PeerStatus {
	ps := client.PeerStatus{NodeID: g.nodeID, Sealed: g.node.Sealed(), AppliedIndex: g.raft.AppliedIndex()}
	ps.Initialized, _ = g.node.Initialized(ctx)
	ps.Ready, ps.NotReady = g.node.Readiness()
	g.mu.Lock()
	ps.ClusterRole, ps.ClusterAt = g.role, g.roleAt
	g.mu.Unlock()
	ps.Epoch = g.epoch(ctx)
	return ps
}

// trackReady records, from a round's view of the Raft configuration, since
// when each node has been ready (healthy and caught up) without a break.
func trackReady(since map[string]time.Time, live []geo.Server, now time.Time) {
	seen := map[string]bool{}
	for _, s := range live {
		seen[s.ID] = true
		if !s.Healthy || !s.CaughtUp {
			delete(since, s.ID)
		} else if _, ok := since[s.ID]; !ok {
			since[s.ID] = now
		}
	}
	for id := range since {
		if !seen[id] {
			delete(since, id)
		}
	}
}

// settled: id has been ready at every poll for geoSettleTime, so
// leadership may be handed to it. A node that comes back (a restart, a
// pause, a starved process) is ready at one poll and gone at the next;
// handing it leadership at once makes the cluster churn: it leads, stalls,
// loses it, and is handed it again.
func settled(since map[string]time.Time, id string, now time.Time) (bool, string) {
	from, ok := since[id]
	if !ok {
		return false, fmt.Sprintf("leadership moves to %s once it is ready", id)
	}
	if age := now.Sub(from); age < geoSettleTime {
		return false, fmt.Sprintf("leadership moves to %s once it has been ready for %s (for %s now)", id, geoSettleTime, age.Round(100*time.Millisecond))
	}
	return true, ""
}

// pollPeers asks every other node of the topology for its PeerStatus, at
// once; a node that does not answer within wait is absent from the result.
func (g *Reconciler) pollPeers(ctx context.Context, t *geo.Topology, wait time.Duration) map[string]client.PeerStatus {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var mu sync.Mutex
	out := map[string]client.PeerStatus{}
	var wg sync.WaitGroup
	for _, s := range t.Sites {
		for _, n := range s.Nodes {
			if n.ID == g.nodeID {
				continue
			}
			wg.Add(1)
			go func(n geo.Node) {
				defer wg.Done()
				ps, err := AskPeer(ctx, g.client, n.APIAddr)
				if err != nil || ps.NodeID != n.ID {
					return
				}
				mu.Lock()
				out[n.ID] = ps
				mu.Unlock()
			}(n)
		}
	}
	wg.Wait()
	now := time.Now()
	g.mu.Lock()
	for id := range out {
		g.peerContact[id] = now
	}
	g.mu.Unlock()
	return out
}

// AskPeer asks the node at apiAddr for its PeerStatus with the Geo HTTP
// client (no idle connections: see PeerClient) within ctx's deadline (the
// caller's round, see pollPeers); an answer over 64 KiB is refused.
func AskPeer(ctx context.Context, h *http.Client, apiAddr string) (client.PeerStatus, error) {
	return client.New(apiAddr, client.Options{HTTPClient: h, MaxAnswer: 64 << 10}).GeoPeer(ctx)
}

// PeerClient is the HTTP client nodes ask each other with.
func PeerClient(cfg *config.Geo) (*http.Client, error) {
	tc, err := geoTLS(cfg)
	if err != nil {
		return nil, err
	}
	// No idle connections: every ask dials afresh (see lease.go). Each
	// round of asks has its own deadline (pollPeers).
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, Proxy: nil, DisableKeepAlives: true}}, nil
}

// geoTLS is the TLS config nodes verify each other's APIs with.
func geoTLS(cfg *config.Geo) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CACertFile != "" {
		pool, err := config.ReadCAPool(cfg.CACertFile)
		if err != nil {
			return nil, fmt.Errorf("geo.ca_cert_file: %w", err)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}
