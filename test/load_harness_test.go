package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openbao/openbao/api/v2"
)

// load runs writers and readers against every node of a cluster while
// faults happen. A write counts only once the API acknowledged it (2xx);
// every answer of every hop (a standby's redirect too) is recorded by
// kind, so a 500 anywhere is seen.
type load struct {
	c  *cluster
	hc *http.Client

	mu    sync.Mutex
	acked map[string]int      // key -> the value acknowledged last
	hist  map[string][]string // key -> its last histKeep writes: value, times, answer, node
	acks  []time.Time         // when each write was acknowledged
	kinds map[string]int      // "<node> <op> <answer>" -> count
	bad   []string            // every 5xx other than 503, with its body

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// histKeep is how many of a key's last writes load keeps, to print on a
// loss.
const histKeep = 6

// recorder is a RoundTripper that records every hop's answer.
type recorder struct {
	l    *load
	next http.RoundTripper
}

func (r recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	node := r.l.c.nodeAt(req.URL.Host)
	op := map[string]string{"GET": "read", "PUT": "write", "POST": "write"}[req.Method]
	if err != nil {
		r.l.note(fmt.Sprintf("%s %s %s", node, op, errKind(err)), "")
		return nil, err
	}
	if resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		r.l.note(fmt.Sprintf("%s %s %d", node, op, resp.StatusCode), fmt.Sprintf("%s %s %s: %d %s", time.Now().Format("15:04:05.000"), node, req.URL.Path, resp.StatusCode, bytes.TrimSpace(body)))
		return resp, nil
	}
	kind := fmt.Sprintf("%s %s %d", node, op, resp.StatusCode)
	if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
		kind += " (no Retry-After)"
	}
	r.l.note(kind, "")
	return resp, nil
}

func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "transport error"
}

func (l *load) note(kind, bad string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.kinds[kind]++
	if bad != "" {
		l.bad = append(l.bad, bad)
	}
}

// nodeAt names the member serving host:port.
func (c *cluster) nodeAt(hostport string) string {
	for _, m := range c.nodes {
		if hostPort(m.addr) == hostport {
			return m.id
		}
	}
	return hostport
}

// startLoad starts writers (each writing its own keys through one node,
// writer w through node w mod n, as clients behind a load balancer stick to
// a node) and one reader per node.
func startLoad(c *cluster, writers int) *load {
	l := &load{c: c, acked: map[string]int{}, hist: map[string][]string{}, kinds: map[string]int{}}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}
	if c.ca != nil {
		tr.TLSClientConfig = c.ca.ClientTLS()
	}
	l.hc = &http.Client{Timeout: 10 * time.Second, Transport: recorder{l: l, next: tr}}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for w := range writers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for seq := 0; ctx.Err() == nil; seq++ {
				m := c.nodes[w%len(c.nodes)]
				key := fmt.Sprintf("w%d-%d", w, seq%50)
				sent := time.Now()
				code := l.do(ctx, "PUT", m.addr+"/v1/kv/data/"+key, fmt.Appendf(nil, `{"data":{"v":%d}}`, seq))
				l.mu.Lock()
				h := l.hist[key]
				if len(h) >= histKeep {
					h = h[1:]
				}
				l.hist[key] = append(h, fmt.Sprintf("%d sent %s answered %d at %s via %s", seq, sent.Format("15:04:05.000"), code, time.Now().Format("15:04:05.000"), m.id))
				if code == http.StatusOK {
					l.acked[key] = seq
					l.acks = append(l.acks, time.Now())
				}
				l.mu.Unlock()
			}
		}()
	}
	for _, m := range c.nodes {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				l.do(ctx, "GET", m.addr+"/v1/kv/data/w0-0", nil)
			}
		}()
	}
	return l
}

func (l *load) do(ctx context.Context, method, url string, body []byte) int {
	req, _ := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	req.Header.Set("X-Vault-Token", l.c.res.RootToken)
	resp, err := l.hc.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			// Not a hot loop against a node that is down.
			time.Sleep(20 * time.Millisecond)
		}
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	return resp.StatusCode
}

// stop ends the load and waits for it.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// maxGap is the longest time between two acknowledged writes in [from, to].
func (l *load) maxGap(from, to time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var gap time.Duration
	last := from
	for _, a := range l.acks {
		if a.Before(from) {
			continue
		}
		if a.After(to) {
			break
		}
		gap = max(gap, a.Sub(last))
		last = a
	}
	return max(gap, to.Sub(last))
}

// verify reads every acknowledged write back through reader and returns
// how many were lost (missing, or an older value than acknowledged).
func (l *load) verify(t *testing.T, reader *member) (acked, lost int) {
	t.Helper()
	return l.verifyAcked(t, reader, l.ackedNow())
}

// firstAck is when the first write was acknowledged (zero if none was).
func (l *load) firstAck() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.acks) == 0 {
		return time.Time{}
	}
	return l.acks[0]
}

// lastAck is when the last write was acknowledged (zero if none was).
func (l *load) lastAck() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.acks) == 0 {
		return time.Time{}
	}
	return l.acks[len(l.acks)-1]
}

// firstAckAfter is the first acknowledgement after t (zero if none).
func (l *load) firstAckAfter(t time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.acks {
		if a.After(t) {
			return a
		}
	}
	return time.Time{}
}

// ackedNow is a copy of the writes acknowledged so far (key -> value).
func (l *load) ackedNow() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	want := make(map[string]int, len(l.acked))
	for k, v := range l.acked {
		want[k] = v
	}
	return want
}

// verifyAcked reads want back through reader; it returns how many were
// lost (missing, or an older value than acknowledged).
func (l *load) verifyAcked(t *testing.T, reader *member, want map[string]int) (acked, lost int) {
	t.Helper()
	kv := l.c.client(reader).KVv2("kv")
	// A node that is not ready answers 503: that is no answer about the
	// key, so the read is asked again (the reader may have just become
	// active after a fault); only an answer counts. The reader may stay
	// unavailable for up to two minutes without a break (a starved cluster
	// churns): every answer starts the wait again, so a long outage early
	// does not eat the time of the keys read after it. A reader unavailable
	// for longer fails the test as unavailable, not as a loss.
	// The whole read-back gives up on a reader that keeps coming and going
	// after 10 minutes of it.
	const patience, overall = 2 * time.Minute, 10 * time.Minute
	deadline, end := time.Now().Add(patience), time.Now().Add(overall)
	unavailable := false
	get := func(k string) (*api.KVSecret, error) {
		for {
			got, err := kv.Get(context.Background(), k)
			var re *api.ResponseError
			if err == nil || !errors.As(err, &re) || re.StatusCode != http.StatusServiceUnavailable {
				deadline = time.Now().Add(patience)
				return got, err
			}
			if now := time.Now(); now.After(deadline) || now.After(end) {
				unavailable = true
				return got, err
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	unread := 0
	for k, v := range want {
		if unavailable {
			unread++
			continue
		}
		got, err := get(k)
		if unavailable {
			t.Errorf("%s answered 503 for %s without a break (or on and off for %s) while the acknowledged writes were read back (%v): the cluster is unavailable; the keys left are not read (not counted as lost)", reader.id, patience, overall, err)
			unread++
			continue
		}
		if err != nil || got == nil {
			t.Errorf("acknowledged write %s=%d: %v", k, v, err)
			lost++
			continue
		}
		n, _ := got.Data["v"].(json.Number).Int64()
		if int(n) < v {
			l.mu.Lock()
			h := l.hist[k]
			l.mu.Unlock()
			t.Errorf("acknowledged write %s=%d reads back %d (version %d, through %s); the key's last writes:\n%s", k, v, n, got.VersionMetadata.Version, reader.id, strings.Join(h, "\n"))
			lost++
		}
	}
	if unread > 0 {
		t.Errorf("%d of %d acknowledged writes were not read back (the reader was unavailable)", unread, len(want))
	}
	return len(want), lost
}

// kindsSummary lists the answers seen, most frequent first.
func (l *load) kindsSummary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	type kv struct {
		k string
		n int
	}
	var all []kv
	for k, n := range l.kinds {
		all = append(all, kv{k, n})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n })
	var b strings.Builder
	for _, e := range all {
		fmt.Fprintf(&b, "%s: %d; ", e.k, e.n)
	}
	return b.String()
}

// serverErrors are the 5xx answers other than 503 seen so far.
func (l *load) serverErrors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.bad...)
}
