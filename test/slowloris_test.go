package test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// Slow and hostile clients do not block others: 200 connections that
// send their headers a byte at a time, and unseal requests whose bodies
// drip, while operators check the status and unseal the node. The server
// closes the slow connections itself (header and body read timeouts).
func TestSlowClientsDoNotBlockOthers(t *testing.T) {
	bin, tr, cfg, addr, _, n, res := activeNode(t, 3, 2)
	n.Signal(t, syscall.SIGTERM, time.Minute)
	n = harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	host := hostPort(addr)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	var closedMu sync.Mutex
	closedByServer := 0
	drip := func(head string, slow string) {
		defer wg.Done()
		conn, err := net.Dial("tcp", host)
		if err != nil {
			return
		}
		defer conn.Close()
		io.WriteString(conn, head)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond): // the attacker's pace
			}
			if _, err := io.WriteString(conn, slow[i%len(slow):i%len(slow)+1]); err != nil {
				closedMu.Lock()
				closedByServer++
				closedMu.Unlock()
				return
			}
		}
	}
	for range 200 {
		wg.Add(1)
		go drip("GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n", "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n")
	}
	for range 10 {
		wg.Add(1)
		go drip("POST /appliance/v1/unseal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", `{"share":"`+strings.Repeat("A", 64))
	}

	// Meanwhile the operators: status answers, and two shares unseal.
	hc := &http.Client{Timeout: 5 * time.Second}
	for i := range 20 {
		resp, err := hc.Get(addr + "/appliance/v1/status")
		if err != nil {
			t.Fatalf("status %d during the slow clients: %v", i, err)
		}
		resp.Body.Close()
	}
	for _, s := range res.Shares[:2] {
		if out, errOut, code := harness.Run(t, tr, []byte(s+"\n"), bin, "unseal", "--address", addr); code != 0 {
			t.Fatalf("unseal during the slow clients: %s %s", out, errOut)
		}
	}
	waitState(t, tr, bin, addr, "active")

	// The server ends the slow connections by itself (10 s for headers,
	// 30 s for a whole request).
	harness.Eventually(t, 2*time.Minute, "the server to close the slow connections", func() bool {
		closedMu.Lock()
		defer closedMu.Unlock()
		return closedByServer == 210
	})
	close(stop)
	wg.Wait()
}
