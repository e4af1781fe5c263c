package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// forcePromote runs `geo promote --site site --force` on m (stopped),
// confirming the fenced sites, and returns its report.
func (c *cluster) forcePromote(m *member, site string, fenced ...string) disasterReport {
	c.t.Helper()
	args := []string{"geo", "promote", "--site", site, "--force", "--config", m.cfg, "--format", "json"}
	for _, f := range fenced {
		args = append(args, "--fenced-site", f)
	}
	out, errOut, code := harness.Run(c.t, c.tr, nil, c.bin, args...)
	var r disasterReport
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
		c.t.Fatalf("promote --force on %s: exit %d: %s %s", m.id, code, out, errOut)
	}
	return r
}

// disasterReport is what `geo promote --force --format json` prints.
type disasterReport struct {
	Node  string `json:"node"`
	Epoch struct {
		Number    uint64 `json:"number"`
		Survivors []struct {
			LastIndex uint64 `json:"last_index"`
		} `json:"survivors"`
	} `json:"epoch"`
	Voters    []string `json:"voters"`
	TermAfter uint64   `json:"term_after"`
}

// Disaster: every node of the primary site is killed (kill -9) under a
// writer; `geo promote --site site-b --force` on site B's stopped nodes
// rebuilds the cluster from their replicas. Every write acknowledged up
// to the index B had replicated reads back, the RPO is reported, new
// writes succeed. The old site's nodes, restarted with their data, refuse
// to unseal and never acknowledge a write; `geo rejoin` brings them back
// as non-voters of the new cluster. The command refuses to run on a
// running node and without the fencing confirmation.
func TestGeoDisaster(t *testing.T) {
	c := newCluster(t, clusterOptions{geo: &geoLayout{
		sites:     []int{3, 2},
		preferred: map[string]string{"site-b": "node-5"},
	}})
	defer c.stop()
	primary := []string{"node-1", "node-2", "node-3"}
	c.waitGeo("site A's 3 voters", converged(primary, ""))
	c.mountKV()
	siteA := []*member{c.byID("node-1"), c.byID("node-2"), c.byID("node-3")}
	siteB := []*member{c.byID("node-4"), c.byID("node-5")}

	l := startLoad(c, 4)
	harness.Eventually(t, time.Minute, "writes under way", func() bool { return len(l.ackedNow()) >= 40 })
	// Every write acknowledged before the leader's commit index is read
	// is at or below it; once site B applied that far, B holds them all.
	before := l.ackedNow()
	lst, _ := status(t, c.tr, c.bin, c.leader().addr)
	commit := lst.Raft.CommitIndex
	for _, m := range siteB {
		harness.Eventually(t, time.Minute, m.id+" to apply index "+fmt.Sprint(commit), func() bool {
			st, ok := tryStatus(t, c.tr, c.bin, m.addr)
			return ok && st.Raft.AppliedIndex >= commit
		})
	}
	for _, m := range siteA {
		c.kill(m)
	}
	lost := time.Now()
	l.stop()
	t.Logf("site A killed under %d writers: %d keys acknowledged before index %d, %d in all", 4, len(before), commit, len(l.ackedNow()))

	n4 := siteB[0]
	force := func(m *member, extra ...string) (string, string, int) {
		args := append([]string{"geo", "promote", "--site", "site-b", "--force", "--config", m.cfg}, extra...)
		return harness.Run(t, c.tr, nil, c.bin, args...)
	}
	if _, errOut, code := force(n4, "--fenced-site", "site-a"); code != 3 || !strings.Contains(errOut, "stop the appliance on this node first") {
		t.Fatalf("promote --force on a running node: exit %d: %s", code, errOut)
	}
	for _, m := range siteB {
		m.n.Signal(t, syscall.SIGTERM, time.Minute)
	}
	if _, errOut, code := force(n4); code != 64 || !strings.Contains(errOut, "--fenced-site site-a") {
		t.Fatalf("promote --force without the fencing confirmation: exit %d: %s", code, errOut)
	}
	promoted := time.Now()
	var reports []disasterReport
	for _, m := range siteB {
		r := c.forcePromote(m, "site-b", "site-a")
		if r.Epoch.Number != 1 || len(r.Epoch.Survivors) != 1 || r.Epoch.Survivors[0].LastIndex < commit || strings.Join(r.Voters, ",") != "node-5" {
			t.Fatalf("promote --force on %s reports %+v (commit index before the loss %d)", m.id, r, commit)
		}
		reports = append(reports, r)
	}
	for _, m := range siteB {
		c.start(m)
		c.unseal(m)
	}
	l2 := startLoad(c, 4)
	st := c.waitGeo("site B to lead in epoch 1 with the RPO recorded", func(st statusOutput) bool {
		// Not converged: site A's nodes have not joined the new cluster.
		v, leader := geoVoters(st)
		return st.Geo.Epoch.Number == 1 && st.Geo.RPO != nil && len(st.Geo.Epoch.Survivors) == 2 && strings.Join(v, ",") == "node-5" && leader == "node-5"
	})
	rpo := st.Geo.RPO
	t.Logf("RPO: kept index %d (%s), newest on a promoted node %d, at most %d entries / %.3f s lost",
		rpo.KeptIndex, rpo.KeptBy, rpo.NewestIndex, rpo.LostEntriesAtMost, rpo.LostSeconds)
	if rpo.KeptIndex < commit || st.Geo.PrimarySite != "site-b" || !strings.Contains(st.Geo.PrimarySource, "geo promote --force (epoch 1)") {
		t.Fatalf("after the promotion: kept index %d (commit before the loss %d), primary %s from %s", rpo.KeptIndex, commit, st.Geo.PrimarySite, st.Geo.PrimarySource)
	}
	for _, m := range siteB {
		if acked, lostN := l.verifyAcked(t, m, before); lostN != 0 {
			t.Fatalf("%d of %d writes acknowledged before index %d lost, read through %s", lostN, acked, commit, m.id)
		}
	}

	// New writes succeed, through site B; site A's nodes, restarted with
	// their data, refuse to unseal and acknowledge nothing.
	harness.Eventually(t, time.Minute, "writes after the promotion", func() bool { return len(l2.ackedNow()) >= 20 })
	first := l2.firstAck()
	t.Logf("first acknowledged write: %v after the first promote --force (the commands, restarts and unseals by shares included), %v after the site was lost",
		first.Sub(promoted).Round(time.Millisecond), first.Sub(lost).Round(time.Millisecond))
	for _, m := range siteA {
		c.start(m)
		// The first share already gets the fence, not "Share accepted".
		out, errOut, code := harness.Run(t, c.tr, []byte(c.res.Shares[0]+"\n"), c.bin, "unseal", "--address", m.addr)
		if code == 0 || !strings.Contains(out+errOut, "fenced") || strings.Contains(out+errOut, "accepted") {
			t.Fatalf("the first share given to fenced %s: exit %d: %s %s", m.id, code, out, errOut)
		}
		harness.Eventually(t, time.Minute, m.id+" to say it is fenced", func() bool {
			s, ok := tryStatus(t, c.tr, c.bin, m.addr)
			return ok && s.Sealed && s.Geo != nil && strings.Contains(s.Geo.Fenced, "geo rejoin")
		})
		out, errOut, code = harness.Run(t, c.tr, []byte(c.res.Shares[1]+"\n"), c.bin, "unseal", "--address", m.addr)
		if code == 0 || !strings.Contains(out+errOut, "fenced") || strings.Contains(out+errOut, "accepted") {
			t.Fatalf("a second share given to fenced %s: exit %d: %s %s", m.id, code, out, errOut)
		}
		// The bao-compatible door answers as the appliance's: 409 and why.
		resp, err := c.httpClient().Post(m.addr+"/v1/sys/unseal", "application/json", strings.NewReader(`{"key":"`+c.res.Shares[2]+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), "fenced") {
			t.Fatalf("a share given to fenced %s through /v1/sys/unseal: %d %s", m.id, resp.StatusCode, body)
		}
	}
	for _, m := range siteA {
		if n := l2.snapshotKinds()[m.id+" write 200"]; n != 0 {
			t.Fatalf("fenced %s acknowledged %d writes", m.id, n)
		}
	}

	// geo rejoin: refused on a running node and without --yes; then each
	// old node joins site B's cluster as a non-voter.
	if _, errOut, code := harness.Run(t, c.tr, nil, c.bin, "geo", "rejoin", "--config", siteA[0].cfg, "--yes"); code != 3 {
		t.Fatalf("geo rejoin on a running node: exit %d: %s", code, errOut)
	}
	for _, m := range siteA {
		m.n.Signal(t, syscall.SIGTERM, time.Minute)
		if _, errOut, code := harness.Run(t, c.tr, nil, c.bin, "geo", "rejoin", "--config", m.cfg); code != 64 || !strings.Contains(errOut, "Add --yes") {
			t.Fatalf("geo rejoin without --yes: exit %d: %s", code, errOut)
		}
		if out, errOut, code := harness.Run(t, c.tr, nil, c.bin, "geo", "rejoin", "--config", m.cfg, "--yes"); code != 0 || !strings.Contains(out, "set its Raft data aside") {
			t.Fatalf("geo rejoin on %s: exit %d: %s %s", m.id, code, out, errOut)
		}
		c.start(m)
		c.unseal(m)
	}
	st = c.waitGeo("the old site's nodes back as non-voters in epoch 1", func(st statusOutput) bool {
		if !converged([]string{"node-5"}, "node-5")(st) {
			return false
		}
		for _, n := range st.Geo.Nodes {
			if !n.InRaft || n.Epoch != 1 {
				return false
			}
		}
		return true
	})
	l2.finish(t, c.byID("node-1"), c.byID("node-5"))
}

// The fencing confirmation was wrong: site A was only cut off (all its
// nodes paused), not stopped, when site B was promoted. When A comes back
// its leader reaches B's nodes with its old term; they answer with the
// promotion's far higher term, A's leader steps down, and every A node
// learns of the newer epoch and stops. B keeps its leader, its epoch and
// every write it acknowledged.
func TestGeoDisasterOldSiteReturns(t *testing.T) {
	c := newCluster(t, clusterOptions{geo: &geoLayout{sites: []int{3, 2}, preferred: map[string]string{"site-b": "node-5"}}})
	defer c.stop()
	c.waitGeo("site A's voters", converged([]string{"node-1", "node-2", "node-3"}, ""))
	c.mountKV()
	siteA := []*member{c.byID("node-1"), c.byID("node-2"), c.byID("node-3")}
	siteB := []*member{c.byID("node-4"), c.byID("node-5")}
	l := startLoad(c, 4) // writer 3 writes through node-4, the others through site A
	harness.Eventually(t, time.Minute, "writes under way", func() bool { return len(l.ackedNow()) >= 40 })
	for _, m := range siteA {
		m.n.Notify(syscall.SIGSTOP)
	}
	bSeq := func() int {
		n := -1
		for k, v := range l.ackedNow() {
			if strings.HasPrefix(k, "w3-") {
				n = max(n, v)
			}
		}
		return n
	}
	before := bSeq()
	for _, m := range siteB {
		m.n.Signal(t, syscall.SIGTERM, time.Minute)
	}
	for _, m := range siteB {
		c.forcePromote(m, "site-b", "site-a") // the operator's word, wrongly
	}
	for _, m := range siteB {
		c.start(m)
		c.unseal(m)
	}
	harness.Eventually(t, time.Minute, "writes through site B", func() bool { return bSeq() > before+20 })

	for _, m := range siteA {
		m.n.Notify(syscall.SIGCONT)
	}
	for _, m := range siteA {
		harness.Eventually(t, time.Minute, m.id+" to stop, fenced", func() bool { return m.n.Exited() })
		if !strings.Contains(m.n.Output.String(), "fenced") {
			t.Errorf("%s stopped without saying it is fenced:\n%s", m.id, tail(m.n.Output.String(), 20))
		}
	}
	st := c.waitGeo("site B still leading in epoch 1", func(st statusOutput) bool {
		_, leader := geoVoters(st)
		return leader == "node-5" && st.Geo.Epoch.Number == 1
	})
	if st.NodeID != "node-5" {
		t.Fatalf("the active node is %s", st.NodeID)
	}
	l.stop()
	// Every write site B acknowledged (writer 3's after the promotion) is
	// there; what site A acknowledged after it came back, in the old epoch,
	// is the fencing confirmation's risk and only counted.
	want := map[string]int{}
	for k, v := range l.ackedNow() {
		if strings.HasPrefix(k, "w3-") && v > before {
			want[k] = v
		}
	}
	if acked, lost := l.verifyAcked(t, c.byID("node-5"), want); lost != 0 || acked == 0 {
		t.Fatalf("site B: %d of %d acknowledged writes lost", lost, acked)
	}
	t.Logf("answers: %s", l.kindsSummary())
}
