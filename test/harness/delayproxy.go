package harness

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// DelayProxy relays TCP connections from its address to a target, holding
// every chunk for a fixed delay in each direction: a peer that far away
// (this machine's kernel has no netem). It is for benchmarks, not for
// synchronisation.
type DelayProxy struct {
	Addr string
	ln   net.Listener
	wg   sync.WaitGroup

	mu     sync.Mutex
	live   map[*atomic.Bool]bool // each relayed connection's frozen flag
	closed chan struct{}
	cut    atomic.Bool // new connections are held, never relayed
}

// Cut freezes every connection (see Freeze) and holds every new one
// without relaying it: the target is unreachable through the proxy, as
// behind a firewall that drops its packets.
func (p *DelayProxy) Cut() {
	p.cut.Store(true)
	p.Freeze()
}

// Freeze breaks every connection relayed so far half-way: from now on
// they carry nothing and are never closed (a firewall dropping a known
// flow); each end's kernel still thinks them open. New connections are
// relayed as before.
func (p *DelayProxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for f := range p.live {
		f.Store(true)
	}
}

// NewDelayProxy listens on listen and relays to target with delay d each
// way; it stops at cleanup.
func NewDelayProxy(t testing.TB, listen, target string, d time.Duration) *DelayProxy {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	p := &DelayProxy{Addr: ln.Addr().String(), ln: ln, live: map[*atomic.Bool]bool{}, closed: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.relay(c, target, d)
		}
	}()
	t.Cleanup(func() { ln.Close(); close(p.closed); p.wg.Wait() })
	return p
}

func (p *DelayProxy) relay(in net.Conn, target string, d time.Duration) {
	if p.cut.Load() {
		<-p.closed
		in.Close()
		return
	}
	out, err := net.Dial("tcp", target)
	if err != nil {
		in.Close()
		return
	}
	frozen := new(atomic.Bool)
	p.mu.Lock()
	p.live[frozen] = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.live, frozen)
		p.mu.Unlock()
	}()
	done := make(chan struct{}, 2)
	go func() { delayCopy(out, in, d, frozen); done <- struct{}{} }()
	go func() { delayCopy(in, out, d, frozen); done <- struct{}{} }()
	<-done
	if frozen.Load() {
		<-p.closed // a frozen connection is never closed
	}
	in.Close()
	out.Close()
	<-done
}

// delayCopy copies src to dst, writing each chunk d after it was read
// (reading goes on meanwhile: latency, not less bandwidth).
// Once frozen, what it reads is dropped.
func delayCopy(dst io.Writer, src io.Reader, d time.Duration, frozen *atomic.Bool) {
	type chunk struct {
		due time.Time
		b   []byte
	}
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{time.Now().Add(d), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.due))
		if frozen.Load() {
			continue
		}
		if _, err := dst.Write(c.b); err != nil {
			for range q {
			}
			return
		}
	}
}
