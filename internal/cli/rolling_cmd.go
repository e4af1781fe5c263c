package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/appliance"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// A rolling restart restarts every node of a cluster, one at a time, so
// that the cluster keeps its quorum and keeps serving: non-voters first,
// then the followers, the active node last, after its leadership moved to
// another node. Each node is asked over its API (POST
// /appliance/v1/restart) and its supervisor starts it again; the next one
// waits until it is back, unsealed (by the HSM, or by shares the operators
// are told to bring) and caught up with the leader. After a package
// upgrade, this moves every node onto the new binary.

func rollingRestartCommand() *cli.Command {
	return &cli.Command{
		Name:  "rolling-restart",
		Usage: "restart every node of the cluster one at a time (after an upgrade): non-voters, followers, then the active node once its leadership moved",
		Description: "Needs a token with sudo on " + appliance.RestartPolicyPath + ". Every member of the Raft configuration must be " +
			"up, unsealed and connected to the active node before it starts. A node that comes back sealed and has no HSM waits for " +
			"Shamir shares: the command says which node and goes on once the operators unsealed it.",
		Flags: append(clientFlags(), tokenFileFlag(),
			&cli.DurationFlag{Name: "node-timeout", Value: 15 * time.Minute,
				Usage: "how long one node may take to come back, unsealed and caught up (share holders included), before the command stops"}),
		Action: rollingRestartAction,
	}
}

// envWrapper names the command an operator runs this binary through;
// Omnibus' `gitlab-ctl secrets-appliance` sets it to "gitlab-ctl", and
// the rolling restart's hints then name gitlab-ctl's commands.
const envWrapper = "GITLAB_SECRETS_APPLIANCE_WRAPPER"

// member is one node as the rolling restart sees it.
type member struct {
	id, addr string
	voter    bool
	active   bool
}

func rollingRestartAction(c *cli.Context) error {
	cl, token, err := tokenClient(c, newSecretInput(c))
	if err != nil {
		return err
	}
	wait := c.Duration("node-timeout")
	if wait <= 0 {
		return exit(exitUsage, fmt.Errorf("--node-timeout %s: give a positive duration", wait))
	}
	out := c.App.Writer
	omnibus := os.Getenv(envWrapper) == "gitlab-ctl"
	members, err := clusterMembers(cl, token)
	if err != nil {
		return err
	}
	// Non-voters, then voters, the active node last.
	sort.SliceStable(members, func(i, j int) bool { return rank(members[i]) < rank(members[j]) })
	var names []string
	for _, m := range members {
		names = append(names, m.id)
	}
	fmt.Fprintf(out, "Rolling restart of %d node(s), in this order: %s\n", len(members), strings.Join(names, ", "))
	for i, m := range members {
		start := time.Now()
		if err := restartMember(cl, token, m, len(members), wait, omnibus, out); err != nil {
			return exit(exitFailed, fmt.Errorf("%s (%s): %w; nodes after it were not restarted", m.id, m.addr, err))
		}
		fmt.Fprintf(out, "[%d/%d] %s restarted, unsealed and caught up (%s)\n", i+1, len(members), m.id, time.Since(start).Round(100*time.Millisecond))
	}
	fmt.Fprintln(out, "Rolling restart done: every node runs the binary installed now.")
	return nil
}

func rank(m member) int {
	switch {
	case m.active:
		return 2
	case m.voter:
		return 1
	}
	return 0
}

// clusterMembers lists every node of the cluster from the active node's
// view, and refuses when one is missing or not ready: restarting a node
// while another is down could cost the quorum.
func clusterMembers(cl *apiClient, token string) ([]member, error) {
	st, active, err := activeStatus(cl)
	if err != nil {
		return nil, err
	}
	if st.State != client.StateActive {
		return nil, exit(exitFailed, fmt.Errorf("no active node found from %s (it is %s): a rolling restart needs a healthy cluster", cl.Addr(), st.State))
	}
	var ha struct {
		Data struct {
			Nodes []struct {
				APIAddress string `json:"api_address"`
			} `json:"nodes"`
		} `json:"data"`
	}
	if err := active.call("GET", "/v1/sys/ha-status", nil, &ha, token); err != nil {
		return nil, err
	}
	var members []member
	for _, n := range ha.Data.Nodes {
		addr := strings.TrimRight(n.APIAddress, "/")
		var ns client.Status
		if err := cl.with(addr, leaderAskTimeout).call("GET", "status", nil, &ns, ""); err != nil {
			return nil, exit(exitFailed, fmt.Errorf("node at %s did not answer (%v): bring it back before a rolling restart", addr, err))
		}
		if !ns.Ready || ns.Sealed {
			return nil, exit(exitFailed, fmt.Errorf("%s (%s) is %s and not ready (%s): bring it back before a rolling restart", ns.NodeID, addr, ns.State, ns.NotReady))
		}
		members = append(members, member{id: ns.NodeID, addr: addr, voter: ns.Raft.Voter, active: ns.State == client.StateActive})
	}
	if len(members) != st.Raft.Peers {
		return nil, exit(exitFailed, fmt.Errorf("the Raft configuration has %d member(s) but %d are connected to the active node %s: bring every node back before a rolling restart", st.Raft.Peers, len(members), st.NodeID))
	}
	return members, nil
}

// pollEvery is how often the rolling restart looks at a node it waits for.
const pollEvery = 500 * time.Millisecond

// restartMember asks m to restart (the active node hands its leadership
// over first) and waits until it is back, unsealed and caught up.
func restartMember(cl *apiClient, token string, m member, size int, wait time.Duration, omnibus bool, out io.Writer) error {
	node := cl.with(m.addr, leaderAskTimeout)
	var st client.Status
	if err := node.call("GET", "status", nil, &st, ""); err != nil {
		return err
	}
	var target uint64
	if lst, _, err := activeStatus(cl); err == nil {
		target = lst.Raft.CommitIndex
	}
	handOver := st.State == client.StateActive && size > 1
	if m.active && st.State != client.StateActive {
		// An election since the command listed the nodes: the node is a
		// follower now, restarted as one.
		fmt.Fprintf(out, "  %s is no longer the active node (%s now)\n", m.id, st.State)
	}
	res, err := askRestart(node, token, handOver, wait)
	if handOver && err != nil && strings.Contains(err.Error(), "this is the active node") {
		// A node still running a binary without hand_over (the rolling
		// restart after an upgrade talks to the previous one) refuses:
		// its leadership moves with sys/step-down, whose 10 s back-off
		// its stop then waits out.
		if err := stepDown(node, token, m, wait, out); err != nil {
			return err
		}
		res, err = askRestart(node, token, false, wait)
	}
	if err != nil {
		return fmt.Errorf("asking it to restart: %w", err)
	}
	if res.HandedOver {
		fmt.Fprintf(out, "  %s handed its leadership over\n", m.id)
	}
	fmt.Fprintf(out, "  %s is restarting\n", m.id)
	told := ""
	return until(wait, func() (bool, error) {
		var now client.Status
		if node.call("GET", "status", nil, &now, "") != nil || now.StartedAt.Equal(st.StartedAt) {
			return false, nil // not back yet
		}
		if now.Sealed {
			if msg := sealedNote(m, now, omnibus); msg != told {
				fmt.Fprintln(out, msg)
				told = msg
			}
			return false, nil
		}
		return now.Ready && now.Raft.AppliedIndex >= target && now.State != client.StateUnsealing, nil
	})
}

// handOverAskTimeout is how long the active node may take to answer a
// restart with hand_over: the Raft transfer, then the new active node.
const handOverAskTimeout = time.Minute

// askRestart asks node to restart, again while it says to try again in a
// moment (a node that just lost its leadership may not reach the new
// active node yet to check the token).
func askRestart(node *apiClient, token string, handOver bool, wait time.Duration) (client.RestartResponse, error) {
	var res client.RestartResponse
	asker := node
	if handOver {
		asker = node.with(node.Addr(), handOverAskTimeout)
	}
	err := until(wait, func() (bool, error) {
		r, err := asker.Restart(context.Background(), client.RestartRequest{HandOver: handOver}, token)
		res, err = r, exitFor(err)
		if err != nil && strings.Contains(err.Error(), "try again in a moment") {
			return false, nil
		}
		return err == nil, err
	})
	return res, err
}

// stepDown moves the leadership off a node with sys/step-down and waits
// until it stands by and another node is the active node.
func stepDown(node *apiClient, token string, m member, wait time.Duration, out io.Writer) error {
	if err := node.call("PUT", "/v1/sys/step-down", nil, nil, token); err != nil {
		return fmt.Errorf("moving its leadership away: %w", err)
	}
	err := until(wait, func() (bool, error) {
		var now client.Status
		if node.call("GET", "status", nil, &now, "") != nil || now.State == client.StateActive || now.LeaderAPIAddr == "" || !now.Ready {
			return false, nil
		}
		lst, _, err := activeStatus(node)
		return err == nil && lst.State == client.StateActive && lst.Ready, nil
	})
	if err != nil {
		return fmt.Errorf("its leadership did not move to another node: %w", err)
	}
	fmt.Fprintf(out, "  %s handed its leadership over (sys/step-down)\n", m.id)
	return nil
}

// sealedNote tells the operators what a restarted node waits for, with
// the command its share holders run: gitlab-ctl's on the node's own host
// under Omnibus (omnibus), the binary's with the node's address otherwise.
func sealedNote(m member, st client.Status, omnibus bool) string {
	for _, mech := range st.Seal.Mechanisms {
		if mech.Type == seal.MechanismPKCS11 && mech.Configured && (mech.Healthy == nil || *mech.Healthy) {
			return fmt.Sprintf("  %s is back, sealed: its HSM unseals it", m.id)
		}
	}
	for _, mech := range st.Seal.Mechanisms {
		if mech.Type == seal.MechanismShamir {
			run := fmt.Sprintf("run `gitlab-secrets-appliance unseal --address %s`", m.addr)
			if omnibus {
				run = fmt.Sprintf("run `gitlab-ctl secrets-appliance unseal` on %s's host (%s)", m.id, m.addr)
			}
			return fmt.Sprintf("  %s is back, sealed, and waits for Shamir shares (%d of %d in): share holders, %s", m.id, mech.Progress, mech.Threshold, run)
		}
	}
	return fmt.Sprintf("  %s is back, sealed: %s", m.id, st.NotReady)
}

// until polls cond every pollEvery until it holds or wait has passed.
func until(wait time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(wait)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return errors.New("not within --node-timeout " + wait.String())
		}
		time.Sleep(pollEvery)
	}
}
