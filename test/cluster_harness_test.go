package test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openbao/openbao/api/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// cluster is a Raft cluster of real appliance processes on 127.0.0.x, one
// address per node, each joining through all the others.
type cluster struct {
	t     *testing.T
	tr    *harness.Transcript
	bin   string
	env   []string // for every node (a SoftHSM token's config)
	nodes []*member
	res   initOutput
	ca    *harness.CA // the nodes' TLS CA (nodes off loopback serve TLS)
	dir   string
	// topo is the Geo topology the nodes follow (geo clusters only), in
	// topoFile.
	topo     *geo.Topology
	topoFile string
	// apiRelays and clusterRelays stand in front of the secondary sites'
	// addresses (geoLayout.relay).
	apiRelays, clusterRelays []*harness.DelayProxy
}

// member is one node of a cluster.
type member struct {
	id, host, cfg, addr string
	n                   *harness.Node
	netHost             *harness.Host // its network namespace, if the cluster has a Net
	// proxy relays the other nodes' connections to its cluster port (the
	// cluster_addr it advertises), if the cluster has fault proxies.
	proxy *harness.FaultProxy
}

// clusterOptions shape a cluster.
type clusterOptions struct {
	size  int
	seal  func(dir string) string // the seal block of every node (default: shamir 3 of 2)
	env   []string
	extra string // more config for every node
	// seals gives node i its own seal block, if set (over seal).
	seals func(i int, dir string) string
	// net runs each node in its own network namespace (harness.NewNet).
	net *harness.Net
	// faultProxies puts a harness.FaultProxy in front of every node's
	// cluster port (loopback clusters only): the tests can lose the
	// answers a node sends its peers.
	faultProxies bool
	// geo puts the nodes in Geo sites: the nodes join through the
	// topology and the reconciler decides who votes.
	geo *geoLayout
}

// geoLayout is a Geo cluster's shape: sites[i] nodes in site "site-<a+i>"
// (node-1... in order), the first site primary.
type geoLayout struct {
	sites     []int
	preferred map[string]string // site -> preferred leader
	minVoters int
	// delay puts the secondary sites this far away: their cluster
	// addresses in the topology are harness.DelayProxy relays.
	delay time.Duration
	// relay puts the secondary sites' API and cluster addresses in the
	// topology behind relays (cluster.relays) that a test can freeze.
	relay bool
}

// newCluster starts opts.size nodes, initializes the first, unseals the
// others with shares (or their HSM) and waits until every node is
// unsealed and knows its role.
func newCluster(t *testing.T, opts clusterOptions) *cluster {
	t.Helper()
	c := &cluster{t: t, tr: &harness.Transcript{}, bin: harness.Binary(t), env: opts.env}
	dir := t.TempDir()
	c.dir = dir
	t.Cleanup(c.logTails)
	if opts.geo != nil {
		opts.size = 0
		for _, n := range opts.geo.sites {
			opts.size += n
		}
	}
	if opts.net != nil {
		// Plain HTTP is for loopback only: the nodes serve TLS, the CLI
		// and the test's clients trust the test CA.
		c.ca = harness.NewCA(t)
		t.Setenv("GITLAB_SECRETS_APPLIANCE_CACERT", c.ca.File)
	}
	for i := range opts.size {
		host := fmt.Sprintf("127.0.0.%d", i+1)
		m := &member{id: fmt.Sprintf("node-%d", i+1), host: host}
		if opts.net != nil {
			m.netHost = opts.net.Hosts[i]
			m.host = m.netHost.IP
			m.addr = "https://" + m.host + ":8200" // a namespace of its own: every port is free
		} else {
			m.addr = "http://" + harness.FreeAddr(t, host)
		}
		c.nodes = append(c.nodes, m)
	}
	if opts.geo != nil {
		c.writeGeoTopology(opts.geo)
	}
	for i, m := range c.nodes {
		var joins strings.Builder
		for _, o := range c.nodes {
			if o == m || opts.geo != nil {
				continue // geo nodes join through the topology
			}
			if c.ca != nil {
				fmt.Fprintf(&joins, "  retry_join {\n    leader_api_addr = %q\n    leader_ca_cert_file = %q\n  }\n", o.addr, c.ca.File)
			} else {
				fmt.Fprintf(&joins, "  retry_join { leader_api_addr = %q }\n", o.addr)
			}
		}
		listener := "  tls_disable = true\n"
		if c.ca != nil {
			cert, key := c.ca.Issue(t, m.id, m.host)
			listener = fmt.Sprintf("  tls_cert_file = %q\n  tls_key_file  = %q\n", cert, key)
		}
		seal := "seal {\n  shamir {\n    shares = 3\n    threshold = 2\n  }\n}\n"
		if opts.seal != nil {
			seal = opts.seal(dir)
		}
		if opts.seals != nil {
			seal = opts.seals(i, dir)
		}
		extra := opts.extra
		if opts.faultProxies {
			m.proxy = harness.NewFaultProxy(t, m.host+":0", clusterPort(m.addr))
			extra += fmt.Sprintf("cluster_addr = %q\n", "https://"+m.proxy.Addr)
		}
		if opts.geo != nil {
			ca := ""
			if c.ca != nil {
				ca = fmt.Sprintf("  ca_cert_file  = %q\n", c.ca.File)
			}
			extra += fmt.Sprintf("geo {\n  topology_file = %q\n  cluster_file  = %q\n%s}\n", c.topoFile, c.clusterFile(m), ca)
		}
		m.cfg = filepath.Join(dir, m.id+".hcl")
		src := fmt.Sprintf(`node_id  = %q
data_dir = %q
listener {
  address     = %q
%s}
raft {
%s}
%s%s`, m.id, filepath.Join(dir, m.id), hostPort(m.addr), listener, joins.String(), seal, extra)
		if err := os.WriteFile(m.cfg, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	first := c.nodes[0]
	c.start(first)
	c.res = initCluster(t, c.bin, first.addr, "--shares", "3", "--threshold", "2")
	waitState(t, c.tr, c.bin, first.addr, "active")
	for _, m := range c.nodes[1:] {
		c.start(m)
		c.unseal(m)
	}
	if opts.geo != nil {
		// The preferred leader may take over as soon as it votes.
		c.geoConverged()
		return c
	}
	for _, m := range c.nodes[1:] {
		waitState(t, c.tr, c.bin, m.addr, "standby")
	}
	// Autopilot promotes joined nodes to voters after its stabilization
	// time (10 s); faults before that would hit a cluster of one voter.
	for _, m := range c.nodes {
		harness.Eventually(t, 2*time.Minute, m.id+" to be a voter", func() bool {
			st, _ := status(t, c.tr, c.bin, m.addr)
			return st.Raft.Voter && st.Raft.Peers == opts.size
		})
	}
	return c
}

// logTails logs the end of every node's log when the test failed.
func (c *cluster) logTails() {
	if !c.t.Failed() {
		return
	}
	for _, m := range c.nodes {
		if m.n == nil {
			continue
		}
		c.t.Logf("the last lines of %s's log:\n%s", m.id, tail(m.n.Output.String(), 40))
	}
}

// logsBetween logs every node's log lines stamped between from and to (at
// most 150 a node): what the nodes did while a history broke.
func (c *cluster) logsBetween(from, to time.Time) {
	for _, m := range c.nodes {
		if m.n == nil {
			continue
		}
		var out []string
		for _, line := range strings.Split(m.n.Output.String(), "\n") {
			stamp, _, _ := strings.Cut(line, " ")
			at, err := time.Parse(time.RFC3339Nano, stamp)
			if err == nil && !at.Before(from) && !at.After(to) {
				out = append(out, line)
			}
		}
		if len(out) > 150 {
			out = append(out[:150], fmt.Sprintf("... %d lines more", len(out)-150))
		}
		c.t.Logf("%s's log from %s to %s:\n%s", m.id, from.UTC().Format(time.RFC3339Nano), to.UTC().Format(time.RFC3339Nano), strings.Join(out, "\n"))
	}
}

// tail is the last n lines of a log.
func tail(log string, n int) string {
	lines := strings.Split(log, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// start runs m's process and waits for its API.
func (c *cluster) start(m *member) {
	c.t.Helper()
	var prefix []string
	if m.netHost != nil {
		prefix = m.netHost.Prefix()
	}
	m.n = harness.StartNodeIn(c.t, c.tr, prefix, c.bin, m.cfg, m.addr, c.env...)
	m.n.WaitServing(c.t, c.tr)
}

// unseal gives m two shares unless it has unsealed by itself (HSM).
func (c *cluster) unseal(m *member) {
	c.t.Helper()
	for _, s := range c.res.Shares[:2] {
		st, _ := status(c.t, c.tr, c.bin, m.addr)
		if !st.Sealed {
			return
		}
		harness.Run(c.t, c.tr, []byte(s+"\n"), c.bin, "unseal", "--address", m.addr)
	}
}

// leader is the member whose status says active and ready (a quorum
// confirmed its leadership: not an old leader that does not know it yet),
// polled until one does.
func (c *cluster) leader() *member {
	c.t.Helper()
	var l *member
	harness.Eventually(c.t, geoWait, "an active node", func() bool {
		for _, m := range c.nodes {
			if m.n == nil || m.n.Exited() {
				continue
			}
			if st, _ := status(c.t, c.tr, c.bin, m.addr); st.State == "active" && st.Ready {
				l = m
				return true
			}
		}
		return false
	})
	return l
}

// followers are the running members that are not m.
func (c *cluster) others(m *member) []*member {
	var out []*member
	for _, o := range c.nodes {
		if o != m {
			out = append(out, o)
		}
	}
	return out
}

// kill ends m's process with SIGKILL.
func (c *cluster) kill(m *member) {
	c.t.Helper()
	m.n.Kill()
	m.n.Wait(c.t, time.Minute)
}

// client is an OpenBao API client for m with the root token.
func (c *cluster) client(m *member) *api.Client {
	if c.ca == nil {
		return apiClient(c.t, m.addr, c.res.RootToken)
	}
	conf := api.DefaultConfig()
	conf.Address = m.addr
	if err := conf.ConfigureTLS(&api.TLSConfig{CACert: c.ca.File}); err != nil {
		c.t.Fatal(err)
	}
	cl, err := api.NewClient(conf)
	if err != nil {
		c.t.Fatal(err)
	}
	cl.SetToken(c.res.RootToken)
	return cl
}

// httpClient is a plain HTTP client that trusts the nodes.
func (c *cluster) httpClient() *http.Client {
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}
	if c.ca != nil {
		tr.TLSClientConfig = c.ca.ClientTLS()
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: tr}
}

// clusterPort is the cluster port beside an API address (its port + 1).
func clusterPort(apiURL string) string {
	host, port, _ := net.SplitHostPort(hostPort(apiURL))
	p, _ := strconv.Atoi(port)
	return net.JoinHostPort(host, strconv.Itoa(p+1))
}

// hostPort is a URL's host:port.
func hostPort(u string) string {
	_, rest, _ := strings.Cut(u, "://")
	return rest
}

// stop sends SIGTERM to every running member.
func (c *cluster) stop() {
	for _, m := range c.nodes {
		if m.n != nil && !m.n.Exited() {
			m.n.Notify(syscall.SIGCONT) // a test that failed may have left it paused
			m.n.Signal(c.t, syscall.SIGTERM, 2*time.Minute)
		}
	}
}

// mountKV mounts KV v2 at kv/ through the leader.
func (c *cluster) mountKV() {
	c.t.Helper()
	// On a starved machine the leadership may move between finding the
	// active node and mounting (a standby refuses): mount on whoever is
	// active until one took it.
	harness.Eventually(c.t, geoWait, "kv/ mounted", func() bool {
		err := c.client(c.leader()).Sys().Mount("kv", &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}})
		return err == nil || strings.Contains(err.Error(), "path is already in use")
	})
	// Every node answers reads of the mount before the load starts: a
	// cluster whose elections churn under CPU starvation answers 503
	// until it settles.
	for _, m := range c.nodes {
		harness.Eventually(c.t, geoWait, m.id+" to see kv/", func() bool {
			_, err := c.client(m).Logical().ReadWithContext(context.Background(), "kv/config")
			return err == nil
		})
	}
}
