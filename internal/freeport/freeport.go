// Package freeport picks TCP ports for listeners that start a moment
// later and may restart on the same port (test nodes, drill nodes). The
// ports come from outside the kernel's ephemeral range, so no outgoing
// connection can take one between the pick and the listen, or while its
// node restarts; a process never gets the same port twice.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

var (
	mu     sync.Mutex
	handed = map[int]bool{}
)

// Port returns a port free on host now.
func Port(host string) (int, error) { return pick(host, 1) }

// Pair returns a port free on host now with the port after it free too
// (an API listener and its cluster listener).
func Pair(host string) (int, error) { return pick(host, 2) }

func pick(host string, n int) (int, error) {
	lo, hi := candidates()
	mu.Lock()
	defer mu.Unlock()
	for range 500 {
		p := lo + rand.IntN(hi-lo-n+2)
		if taken(p, n) {
			continue
		}
		ok := true
		for i := range n {
			l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p+i)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			for i := range n {
				handed[p+i] = true
			}
			return p, nil
		}
	}
	return 0, fmt.Errorf("no %d free consecutive ports on %s", n, host)
}

func taken(p, n int) bool {
	for i := range n {
		if handed[p+i] {
			return true
		}
	}
	return false
}

// candidates is the range to pick from: below the ephemeral range when it
// leaves room there (Linux's default starts at 32768), else above it.
func candidates() (lo, hi int) {
	elo, ehi, err := ephemeral()
	switch {
	case err != nil:
		return 20000, 32767
	case elo-1 >= 10000+1000:
		return 10000, elo - 1
	case ehi+1 <= 65535-1000:
		return ehi + 1, 65535
	default:
		return 20000, 32767 // the ephemeral range is nearly everything
	}
}

func ephemeral() (lo, hi int, err error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, errors.New("ip_local_port_range: want two numbers")
	}
	if lo, err = strconv.Atoi(f[0]); err == nil {
		hi, err = strconv.Atoi(f[1])
	}
	return lo, hi, err
}
