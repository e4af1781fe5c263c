package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestPairIsFreeOutsideTheEphemeralRange(t *testing.T) {
	elo, ehi, err := ephemeral()
	if err != nil {
		t.Skipf("no ephemeral range here: %v", err)
	}
	seen := map[int]bool{}
	for range 200 {
		p, err := Pair("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []int{p, p + 1} {
			if q >= elo && q <= ehi {
				t.Fatalf("port %d is in the ephemeral range %d-%d", q, elo, ehi)
			}
			if seen[q] {
				t.Fatalf("port %d handed out twice", q)
			}
			seen[q] = true
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(q))
			if err != nil {
				t.Fatalf("port %d is not free: %v", q, err)
			}
			l.Close()
		}
	}
}
