package harness

import (
	"io"
	"net"
	"sync"
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
}

// NewDelayProxy listens on listen and relays to target with delay d each
// way; it stops at cleanup.
func NewDelayProxy(t testing.TB, listen, target string, d time.Duration) *DelayProxy {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	p := &DelayProxy{Addr: ln.Addr().String(), ln: ln}
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
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *DelayProxy) relay(in net.Conn, target string, d time.Duration) {
	out, err := net.Dial("tcp", target)
	if err != nil {
		in.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { delayCopy(out, in, d); done <- struct{}{} }()
	go func() { delayCopy(in, out, d); done <- struct{}{} }()
	<-done
	in.Close()
	out.Close()
	<-done
}

// delayCopy copies src to dst, writing each chunk d after it was read
// (reading goes on meanwhile: latency, not less bandwidth).
func delayCopy(dst io.Writer, src io.Reader, d time.Duration) {
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
		if _, err := dst.Write(c.b); err != nil {
			for range q {
			}
			return
		}
	}
}
