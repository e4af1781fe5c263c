package test

import (
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// warnOrWorse matches hclog's warn and error lines (standard format).
var warnOrWorse = regexp.MustCompile(`(?m)^.*\[(WARN|ERROR)\].*$`)

// A healthy first start, init, join, unseal and restart log nothing at
// warn or above: operators must be able to trust that such a line means
// something is wrong.
func TestHealthyStartsAreQuiet(t *testing.T) {
	c := newCluster(t, clusterOptions{size: 3})
	c.mountKV()
	// A restart of a follower and of the leader, unsealed by shares.
	for _, m := range []*member{c.nodes[2], c.leader()} {
		m.n.Signal(t, syscall.SIGTERM, time.Minute)
		c.start(m)
		c.unseal(m)
		waitState(t, c.tr, c.bin, m.addr, "standby")
	}
	c.leader()
	c.stop()
	if lines := warnOrWorse.FindAllString(c.tr.String(), -1); len(lines) > 0 {
		t.Errorf("%d warn/error lines on healthy starts:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}

// A single node's clean stop is as quiet as its start: the only voter has
// nobody to hand the leadership to, and that is no error.
func TestSingleNodeStopIsQuiet(t *testing.T) {
	c := newCluster(t, clusterOptions{size: 1})
	c.mountKV()
	c.stop()
	if lines := warnOrWorse.FindAllString(c.tr.String(), -1); len(lines) > 0 {
		t.Errorf("%d warn/error lines on a single node's start and stop:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}
