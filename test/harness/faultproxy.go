package harness

import (
	"io"
	"net"
	"sync"
	"testing"
)

// FaultProxy relays TCP connections from its address to a target and can
// hold back the target's replies: while held, nothing the target sends
// reaches the clients (it waits, in order, until Release), and what the
// clients send still reaches the target. Put in front of a node's cluster
// port, it loses the answers of requests the node has already carried
// out: the standby that forwarded one cannot tell whether it was applied.
type FaultProxy struct {
	Addr string

	mu   sync.Mutex
	held bool
	free chan struct{} // closed while not held
}

// NewFaultProxy listens on listen and relays to target; it stops at
// cleanup.
func NewFaultProxy(t testing.TB, listen, target string) *FaultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{Addr: ln.Addr().String(), free: make(chan struct{})}
	close(p.free)
	var wg sync.WaitGroup
	var conns sync.Map
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conns.Delete(c)
				p.relay(c, target)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.Release()
		conns.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
		wg.Wait()
	})
	return p
}

// HoldReplies stops the target's replies from reaching the clients.
func (p *FaultProxy) HoldReplies() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.held {
		p.held = true
		p.free = make(chan struct{})
	}
}

// Release lets the held replies through, and every reply after them.
func (p *FaultProxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held {
		p.held = false
		close(p.free)
	}
}

func (p *FaultProxy) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.free
}

func (p *FaultProxy) relay(in net.Conn, target string) {
	out, err := net.Dial("tcp", target)
	if err != nil {
		in.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(out, in); done <- struct{}{} }()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := out.Read(buf)
			if n > 0 {
				<-p.gate()
				if _, werr := in.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}()
	<-done
	in.Close()
	out.Close()
	<-done
}
