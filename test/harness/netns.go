package harness

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Net is a private network for tests that cut nodes off: one network
// namespace per host, each with a veth pair into a bridge in this
// namespace, where the test runs. It needs root (ip netns); NewNet says
// why it cannot be made otherwise, and the caller skips what needs it.
type Net struct {
	Hosts  []*Host
	bridge string
}

// Host is one namespace of a Net.
type Host struct {
	NS   string // namespace name
	IP   string // its address on the bridge
	veth string // its end of the pair in this namespace
}

// NewNet makes n hosts on 10.77.<x>.0/24 and removes them at cleanup.
func NewNet(t testing.TB, n int) (*Net, error) {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("ip (iproute2) not found: %v", err)
	}
	b := make([]byte, 2)
	rand.Read(b)
	id := hex.EncodeToString(b)
	subnet := fmt.Sprintf("10.77.%d", int(b[0])%250+1)
	nw := &Net{bridge: "gsabr" + id}
	t.Cleanup(nw.remove)
	steps := [][]string{
		{"link", "add", nw.bridge, "type", "bridge"},
		{"addr", "add", subnet + ".1/24", "dev", nw.bridge},
		{"link", "set", nw.bridge, "up"},
	}
	for i := range n {
		h := &Host{NS: fmt.Sprintf("gsa%s-%d", id, i), IP: fmt.Sprintf("%s.%d", subnet, 10+i), veth: fmt.Sprintf("gsav%s%d", id, i)}
		nw.Hosts = append(nw.Hosts, h)
		steps = append(steps,
			[]string{"netns", "add", h.NS},
			[]string{"link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
			[]string{"link", "set", h.veth, "master", nw.bridge},
			[]string{"link", "set", h.veth, "up"},
			[]string{"-n", h.NS, "addr", "add", h.IP + "/24", "dev", "eth0"},
			[]string{"-n", h.NS, "link", "set", "eth0", "up"},
			[]string{"-n", h.NS, "link", "set", "lo", "up"},
		)
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	return nw, nil
}

// Prefix runs a command inside h (exec'ing it: the PID is the command's).
func (h *Host) Prefix() []string { return []string{"ip", "netns", "exec", h.NS} }

// Cut disconnects h from every other host and from the test.
func (h *Host) Cut() error { return ipLink(h.veth, "down") }

// Heal reconnects h.
func (h *Host) Heal() error { return ipLink(h.veth, "up") }

func ipLink(dev, state string) error {
	if out, err := exec.Command("ip", "link", "set", dev, state).CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set %s %s: %v: %s", dev, state, err, out)
	}
	return nil
}

func (nw *Net) remove() {
	for _, h := range nw.Hosts {
		exec.Command("ip", "netns", "del", h.NS).Run()
		exec.Command("ip", "link", "del", h.veth).Run()
	}
	exec.Command("ip", "link", "del", nw.bridge).Run()
}
