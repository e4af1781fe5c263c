package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// nodeConfig writes the config of one cluster node listening on host (a
// 127.0.0.x address); join names a node to join through; extra is
// appended (seal blocks).
func nodeConfig(t *testing.T, dir, id, host, join, extra string) (cfg, addr string) {
	t.Helper()
	listen := harness.FreeAddr(t, host)
	retry := ""
	if join != "" {
		retry = fmt.Sprintf("raft {\n  retry_join { leader_api_addr = %q }\n}\n", join)
	}
	cfg = filepath.Join(dir, id+".hcl")
	src := fmt.Sprintf(`node_id  = %q
data_dir = %q
listener {
  address     = %q
  tls_disable = true
}
%s%s`, id, filepath.Join(dir, id), listen, retry, extra)
	if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, "http://" + listen
}

func waitState(t *testing.T, tr *harness.Transcript, bin, addr, state string) statusOutput {
	t.Helper()
	var st statusOutput
	harness.Eventually(t, 2*time.Minute, addr+" to be "+state, func() bool {
		st, _ = status(t, tr, bin, addr)
		return st.State == state
	})
	return st
}

func initCluster(t *testing.T, bin, addr string, args ...string) initOutput {
	t.Helper()
	out, errOut, code := harness.Run(t, &harness.Transcript{}, nil, bin, append([]string{"init", "--format", "json", "--address", addr}, args...)...)
	var res initOutput
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("init: exit %d: %s", code, errOut)
	}
	return res
}

// A second node joins a Shamir-only cluster: it stays sealed until
// operators give it shares, then answers the join challenge with the
// recovered key, joins and unseals. Raft snapshots (checksums sealed with
// the seal) restore.
// startActive starts a single node, initializes it with initArgs and
// waits until it is active; it returns the node's address and the init
// output.
func startActive(t *testing.T, tr *harness.Transcript, bin string, initArgs ...string) (string, initOutput) {
	t.Helper()
	cfg, addr, _ := singleNode(t)
	harness.StartNode(t, tr, bin, cfg, addr).WaitServing(t, tr)
	res := initCluster(t, bin, addr, initArgs...)
	waitState(t, tr, bin, addr, "active")
	return addr, res
}

func TestJoinWithSharesAndSnapshot(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	cfg1, addr1 := nodeConfig(t, dir, "node-1", "127.0.0.1", "", "")
	cfg2, addr2 := nodeConfig(t, dir, "node-2", "127.0.0.2", addr1, "")
	n1 := harness.StartNode(t, tr, bin, cfg1, addr1)
	n1.WaitServing(t, tr)
	res := initCluster(t, bin, addr1, "--shares", "3", "--threshold", "2")
	waitState(t, tr, bin, addr1, "active")
	c1 := apiClient(t, addr1, res.RootToken)
	harness.MountKVv2(t, c1, "kv")
	if _, err := c1.KVv2("kv").Put(context.Background(), "app", map[string]interface{}{"v": "before-snapshot"}); err != nil {
		t.Fatal(err)
	}

	n2 := harness.StartNode(t, tr, bin, cfg2, addr2)
	n2.WaitServing(t, tr)
	if st, code := status(t, tr, bin, addr2); code != 2 || st.Initialized {
		t.Fatalf("joining node before shares: exit %d %+v", code, st)
	}
	for _, s := range res.Shares[1:] {
		if _, errOut, code := harness.Run(t, tr, []byte(s+"\n"), bin, "unseal", "--address", addr2); code != 0 {
			t.Fatalf("unseal on the joining node: exit %d: %s", code, errOut)
		}
	}
	waitState(t, tr, bin, addr2, "standby")
	c2 := apiClient(t, addr2, res.RootToken)
	if got, err := c2.KVv2("kv").Get(context.Background(), "app"); err != nil || got.Data["v"] != "before-snapshot" {
		t.Fatalf("read through the joined node: %v", err)
	}

	// Snapshot, change, restore: the sealed checksums verify.
	var snap bytes.Buffer
	if err := c1.Sys().RaftSnapshotWithContext(context.Background(), &snap); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if _, err := c1.KVv2("kv").Put(context.Background(), "app", map[string]interface{}{"v": "after-snapshot"}); err != nil {
		t.Fatal(err)
	}
	if err := c1.Sys().RaftSnapshotRestoreWithContext(context.Background(), bytes.NewReader(snap.Bytes()), false); err != nil {
		t.Fatalf("restore: %v", err)
	}
	harness.Eventually(t, time.Minute, "the restored value", func() bool {
		got, err := c1.KVv2("kv").Get(context.Background(), "app")
		return err == nil && got.Data["v"] == "before-snapshot"
	})

	// A snapshot whose checksums were sealed by another cluster is refused.
	cfgX, addrX := nodeConfig(t, dir, "other", "127.0.0.3", "", "")
	nx := harness.StartNode(t, tr, bin, cfgX, addrX)
	nx.WaitServing(t, tr)
	resX := initCluster(t, bin, addrX, "--shares", "1", "--threshold", "1")
	waitState(t, tr, bin, addrX, "active")
	if err := apiClient(t, addrX, resX.RootToken).Sys().RaftSnapshotRestoreWithContext(context.Background(), bytes.NewReader(snap.Bytes()), false); err == nil {
		t.Fatal("another cluster accepted the snapshot")
	}

	for _, n := range []*harness.Node{n2, n1, nx} {
		if code := n.Signal(t, syscall.SIGTERM, time.Minute); code != 0 {
			t.Fatalf("SIGTERM: exit %d", code)
		}
	}
}
