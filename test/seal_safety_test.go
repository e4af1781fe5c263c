package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openbao/openbao/api/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// adminCall posts (or gets, with in == nil) to /appliance/v1/<path> and
// decodes the answer; it returns the HTTP status (0: no answer).
func adminCall(hc *http.Client, addr, token, path string, in, out any) (int, error) {
	method, body := "GET", io.Reader(nil)
	if in != nil {
		b, _ := json.Marshal(in)
		method, body = "POST", bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, addr+"/appliance/v1/"+path, body)
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		json.Unmarshal(raw, out)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("%s: %s", resp.Status, raw)
	}
	return resp.StatusCode, nil
}

// sealChange is the part of a seal change's status the tests read.
type sealChange struct {
	Nonce         string   `json:"nonce"`
	State         string   `json:"state"`
	Progress      int      `json:"progress"`
	Threshold     int      `json:"threshold"`
	Generation    uint32   `json:"generation"`
	NewGeneration uint32   `json:"new_generation"`
	Shares        []string `json:"unseal_shares"`
	Mechanisms    []string `json:"mechanisms"`
}

// rotateShares runs a whole rotation through the API: start, authorize
// with current, give back the new ones. at is called before each request
// with its step's name (start, authorize-N, verify-N); newShares gets the
// new shares as soon as the node answers with them. It returns the last
// status seen.
func rotateShares(hc *http.Client, addr, token string, current []string, n, thr int, at func(step string), newShares func([]string)) (sealChange, error) {
	var st sealChange
	at("start")
	if _, err := adminCall(hc, addr, token, "seal/rotate-shares", map[string]int{"shares": n, "threshold": thr}, &st); err != nil {
		return st, err
	}
	for i, k := range current {
		if st.State != "authorizing" {
			break
		}
		at(fmt.Sprintf("authorize-%d", i+1))
		if _, err := adminCall(hc, addr, "", "seal/authorize", map[string]string{"nonce": st.Nonce, "key": k}, &st); err != nil {
			return st, err
		}
	}
	shares := st.Shares
	if len(shares) == 0 {
		return st, fmt.Errorf("authorized without new shares: %+v", st)
	}
	newShares(shares)
	for i, s := range shares {
		if st.State != "verifying" {
			break
		}
		at(fmt.Sprintf("verify-%d", i+1))
		if _, err := adminCall(hc, addr, "", "seal/verify", map[string]string{"nonce": st.Nonce, "share": s}, &st); err != nil {
			return st, err
		}
	}
	return st, nil
}

// activeNode starts a single node (singleNode's config), initializes it
// with n shares of threshold thr and waits until it is active.
func activeNode(t *testing.T, n, thr int) (bin string, tr *harness.Transcript, cfg, addr, dir string, node *harness.Node, res initOutput) {
	t.Helper()
	bin, tr = harness.Binary(t), &harness.Transcript{}
	cfg, addr, dir = singleNode(t)
	node = harness.StartNode(t, tr, bin, cfg, addr)
	node.WaitServing(t, tr)
	res = initCluster(t, bin, addr, "--shares", fmt.Sprint(n), "--threshold", fmt.Sprint(thr))
	waitState(t, tr, bin, addr, "active")
	return bin, tr, cfg, addr, dir, node, res
}

// forgedShare makes a share in the appliance's format with a valid
// checksum, claiming cluster and generation (both public in status) and
// threshold, with a made-up key check and part: what anyone who can reach
// the API can send.
func forgedShare(cluster string, gen uint32, threshold int) string {
	id, _ := hex.DecodeString(cluster)
	b := []byte{1}
	b = append(b, id...)
	b = binary.BigEndian.AppendUint32(b, gen)
	b = append(b, byte(threshold))
	junk := make([]byte, 8+33)
	rand.Read(junk)
	b = append(b, junk...)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	return base64.StdEncoding.EncodeToString(b)
}

// sealedStatus is status --format json's seal identity.
type sealedStatus struct {
	State string `json:"state"`
	Seal  struct {
		Cluster    string `json:"cluster"`
		Generation uint32 `json:"generation"`
		Mechanisms []struct {
			Type       string `json:"type"`
			Generation uint32 `json:"generation"`
			Error      string `json:"error"`
		} `json:"mechanisms"`
	} `json:"seal"`
}

// A sealed node under a flood of forged shares (valid checksums, the
// cluster id and share generation from its public status, thresholds 1 to
// 255) while operators submit their genuine shares: it unseals, every
// time, and no forged share is ever accepted.
func TestForgedShareFloodCannotKeepANodeSealed(t *testing.T) {
	bin, tr, cfg, addr, _, n, res := activeNode(t, 5, 3)
	hc := &http.Client{Timeout: 30 * time.Second}

	for round := range 5 {
		n.Signal(t, syscall.SIGTERM, time.Minute)
		n = harness.StartNode(t, tr, bin, cfg, addr)
		n.WaitServing(t, tr)
		var st sealedStatus
		if _, err := adminCall(hc, addr, "", "status", nil, &st); err != nil || st.State != "sealed" {
			t.Fatalf("round %d: %v %+v", round, err, st)
		}
		gen := st.Seal.Mechanisms[0].Generation
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var forged, accepted atomic.Int64
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; ctx.Err() == nil; i++ {
					var p struct {
						Sealed bool `json:"sealed"`
					}
					// A refusal is a 400; an unsealed node answers every
					// share with "unsealed".
					code, _ := adminCall(hc, addr, "", "unseal", map[string]string{"share": forgedShare(st.Seal.Cluster, gen, 1+i%255)}, &p)
					if code == http.StatusOK && p.Sealed {
						accepted.Add(1)
					}
					forged.Add(1)
				}
			}()
		}
		// The genuine holders, one after another, in the middle of the flood.
		harness.Eventually(t, time.Minute, "the flood to start", func() bool { return forged.Load() > 20 })
		for i, s := range []string{res.Shares[round%5], res.Shares[(round+2)%5], res.Shares[(round+4)%5]} {
			if out, errOut, code := harness.Run(t, tr, []byte(s+"\n"), bin, "unseal", "--address", addr); code != 0 {
				t.Fatalf("round %d: genuine share %d refused during the flood: %s %s", round, i, out, errOut)
			}
		}
		waitState(t, tr, bin, addr, "active")
		stop()
		wg.Wait()
		if accepted.Load() != 0 {
			t.Fatalf("round %d: %d of %d forged shares were accepted", round, accepted.Load(), forged.Load())
		}
		t.Logf("round %d: unsealed during a flood of %d forged shares", round, forged.Load())
	}
	scanForSecrets(t, tr.String(), append([]string{res.RootToken}, res.Shares...))
}

// kill -9 at random points of a share rotation, 50 times: after every
// restart either the old or the new shares unseal, never neither, and the
// data is there.
func TestRotationKilledAtRandomPointsNeverLocksOut(t *testing.T) {
	bin, tr, cfg, addr, dir, n, res := activeNode(t, 3, 2)
	c := apiClient(t, addr, res.RootToken)
	harness.MountKVv2(t, c, "kv")
	if _, err := c.KVv2("kv").Put(context.Background(), "k", map[string]interface{}{"v": "kept"}); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	current := res.Shares
	rounds := 50
	if testing.Short() {
		rounds = 8
	}
	var oldWorked, newWorked, keyMissing int
	for round := range rounds {
		// Round by round, the kill lands in each step of the flow; most
		// often in the last verification, whose answer is the commit.
		steps := []string{"start", "authorize-1", "authorize-2", "verify-1", "verify-2", "verify-2", "verify-2", "after"}
		killAt := steps[round%len(steps)]
		var mu sync.Mutex
		var issued []string
		var flowErr error
		var fired atomic.Bool
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, err := rotateShares(hc, addr, res.RootToken, current, 3, 2, func(step string) {
				if step == killAt {
					fired.Store(true)
					go func() {
						// The fault's random point inside this step's request.
						d, _ := rand.Int(rand.Reader, big.NewInt(4000))
						time.Sleep(time.Duration(d.Int64()) * time.Microsecond)
						n.Kill()
					}()
				}
			}, func(s []string) {
				mu.Lock()
				issued = s
				mu.Unlock()
			})
			mu.Lock()
			flowErr = err
			mu.Unlock()
		}()
		<-done
		mu.Lock()
		switch {
		case killAt == "after" && flowErr != nil:
			t.Fatalf("round %d: the rotation failed: %v", round, flowErr)
		case killAt == "after":
		case !fired.Load():
			t.Fatalf("round %d: the rotation failed before %s: %v", round, killAt, flowErr)
		case flowErr == nil:
			t.Logf("round %d: the rotation finished before the kill in %s landed", round, killAt)
		}
		mu.Unlock()
		if !fired.Load() {
			n.Kill()
		}
		n.Wait(t, time.Minute)

		n = harness.StartNode(t, tr, bin, cfg, addr)
		n.WaitServing(t, tr)
		mu.Lock()
		candidates := [][]string{issued, current}
		mu.Unlock()
		unsealed := false
		for i, set := range candidates {
			if set == nil {
				continue
			}
			ok := true
			for _, s := range set[:2] {
				if _, errOut, code := harness.Run(t, tr, []byte(s+"\n"), bin, "unseal", "--address", addr); code != 0 {
					t.Logf("round %d: %s shares: %s", round, []string{"new", "old"}[i], strings.TrimSpace(errOut))
					ok = false
					break
				}
			}
			if ok {
				unsealed = true
				current = set
				if i == 0 {
					newWorked++
				} else {
					oldWorked++
				}
				break
			}
			// A reset carries one of the attempt's shares.
			harness.Run(t, tr, []byte(set[0]+"\n"), bin, "unseal", "--reset", "--address", addr)
		}
		if !unsealed {
			t.Fatalf("round %d: neither the old nor the new shares unseal after kill -9 during a rotation", round)
		}
		waitState(t, tr, bin, addr, "active")
		if got, err := c.KVv2("kv").Get(context.Background(), "k"); err != nil || got.Data["v"] != "kept" {
			t.Fatalf("round %d: data after the restart: %v", round, err)
		}
		// Killed after the commit reached the Raft log but before the
		// storage applied it, the node unsealed with the old keys and
		// then replayed the commit: it serves, says the current key is
		// missing, and the new shares give it back.
		var st struct {
			Seal struct {
				KeyMissing bool `json:"key_missing"`
			} `json:"seal"`
		}
		if _, err := adminCall(hc, addr, "", "status", nil, &st); err != nil {
			t.Fatal(err)
		}
		if st.Seal.KeyMissing {
			if issued == nil {
				t.Fatalf("round %d: the seal key is missing and no new shares were issued", round)
			}
			t.Logf("round %d: the commit was replayed after an unseal with the old shares; the new shares give the key back", round)
			for _, s := range issued[:2] {
				if out, errOut, code := harness.Run(t, tr, []byte(s+"\n"), bin, "unseal", "--address", addr); code != 0 {
					t.Fatalf("round %d: new share for the missing key: %s %s", round, out, errOut)
				}
			}
			current = issued
			keyMissing++
		}
	}
	t.Logf("%d kills: the old shares opened %d times (%d of them then needed the new shares for the replayed commit), the new ones %d times", rounds, oldWorked, keyMissing, newWorked)
	// Every step is in the audit log, with no share or token in it.
	audit := readAll(t, dir, "audit.log")
	for _, step := range []string{"sys/appliance/seal/rotate-shares", "sys/appliance/seal/authorize", "sys/appliance/seal/verify"} {
		if !strings.Contains(audit, `"path":"`+step+`"`) {
			t.Errorf("the audit log has no %s entry", step)
		}
	}
	scanForSecrets(t, audit, append([]string{res.RootToken}, current...))
	if oldWorked == 0 || newWorked == 0 {
		t.Logf("note: every kill fell on the same side of the commit")
	}
}

// A Raft snapshot taken before seal changes, restored after them, does not
// bring back what the changes voided: after restore and restart the old
// shares are refused and the removed HSM does not unseal; the current
// shares do, and the data of the snapshot is there.
func TestSnapshotRestoreKeepsTheCurrentSeal(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	hsm := harness.NewSoftHSM(t, "gitlab-secrets")
	hsm.GenerateAESKey(t, "kek")
	cfg, addr := nodeConfig(t, dir, "node-1", "127.0.0.1", "", hsmSeal(t, hsm, dir, "kek", true))
	start := func() *harness.Node {
		n := harness.StartNode(t, tr, bin, cfg, addr, hsm.Env()...)
		n.WaitServing(t, tr)
		return n
	}
	n := start()
	res := initCluster(t, bin, addr)
	waitState(t, tr, bin, addr, "active")
	ctx := context.Background()
	c := apiClient(t, addr, res.RootToken)
	harness.MountKVv2(t, c, "kv")
	if _, err := c.KVv2("kv").Put(ctx, "k", map[string]interface{}{"v": "in-snapshot"}); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if err := c.Sys().RaftSnapshotWithContext(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 30 * time.Second}

	// Rotate the shares, then remove the HSM (new shares again).
	var rotated []string
	rot, err := rotateShares(hc, addr, res.RootToken, res.Shares, 3, 2, func(string) {}, func(s []string) { rotated = s })
	if err != nil || rot.State != "done" {
		t.Fatalf("rotation: %+v %v", rot, err)
	}
	var st sealChange
	if _, err := adminCall(hc, addr, res.RootToken, "seal/remove", map[string]string{"mechanism": "pkcs11"}, &st); err != nil {
		t.Fatal(err)
	}
	var current []string
	for _, k := range rotated {
		if st.State == "authorizing" {
			adminCall(hc, addr, "", "seal/authorize", map[string]string{"nonce": st.Nonce, "key": k}, &st)
			current = st.Shares
		}
	}
	for _, s := range current {
		if st.State == "verifying" {
			adminCall(hc, addr, "", "seal/verify", map[string]string{"nonce": st.Nonce, "share": s}, &st)
		}
	}
	if st.State != "done" || strings.Join(st.Mechanisms, ",") != "shamir" || st.Generation != 3 {
		t.Fatalf("removing the HSM: %+v", st)
	}

	if err := c.Sys().RaftSnapshotRestoreWithContext(ctx, bytes.NewReader(snap.Bytes()), false); err != nil {
		t.Fatalf("restore: %v", err)
	}
	harness.Eventually(t, time.Minute, "the restored value", func() bool {
		got, err := c.KVv2("kv").Get(ctx, "k")
		return err == nil && got.Data["v"] == "in-snapshot"
	})
	n.Signal(t, syscall.SIGKILL, time.Minute) // no chance to tidy up after the restore
	n = start()

	// The HSM is still configured and reachable: it must not open the node.
	sst := waitState(t, tr, bin, addr, "sealed")
	if sst.Seal.Generation != 3 {
		t.Fatalf("after restore and restart the node follows seal generation %d, not 3", sst.Seal.Generation)
	}
	for name, old := range map[string]string{"init": res.Shares[0], "rotation": rotated[1]} {
		if _, errOut, code := harness.Run(t, tr, []byte(old+"\n"), bin, "unseal", "--address", addr); code != 1 || !strings.Contains(errOut, "voided") {
			t.Fatalf("share from %s after restore: exit %d: %s", name, code, errOut)
		}
	}
	unsealWith(t, tr, bin, addr, current[:2])
	if got, err := c.KVv2("kv").Get(ctx, "k"); err != nil || got.Data["v"] != "in-snapshot" {
		t.Fatalf("data after restore: %v", err)
	}
	// The active node re-encrypted the restored stored keys when it
	// unsealed: after another restart, without the header file's help,
	// storage itself says generation 3.
	n.Signal(t, syscall.SIGTERM, time.Minute)
	if err := os.Remove(filepath.Join(dir, "node-1", "seal-header.json")); err != nil {
		t.Fatal(err)
	}
	n = start()
	sst, _ = status(t, tr, bin, addr)
	if sst.Seal.Generation != 3 || sst.State != "sealed" {
		t.Fatalf("after the second restart: %+v", sst)
	}
	scanForSecrets(t, tr.String(), append(append(append([]string{res.RootToken, hsm.PIN}, res.Shares...), rotated...), current...))
}

// After sys/seal (bao operator seal) a node forgets its seal key, does not
// unseal itself with the HSM (an operator sealed it on purpose) and takes
// init answers with its one-time secrets before the GitLab bootstrap,
// which here cannot finish (GitLab's key set does not answer): status
// Two inits at once: exactly one succeeds, the other is refused, and the
// kill -9 at random points of init: after a restart, init either finds
// the cluster initialized, or works, or says exactly how to start over;
// following what it says, init works. Never OpenBao's bare "cluster
// A token alone, even one with sudo on sys/appliance/seal (what a fully
// compromised GitLab Rails would need), cannot change the seal: it starts
// a change that waits for a quorum of the current shares; forged shares do
// not authorize it; the operators see it in status and cancel it.
func TestTokenAloneCannotChangeTheSeal(t *testing.T) {
	bin, tr, cfg, addr, dir, n, res := activeNode(t, 3, 2)
	root := apiClient(t, addr, res.RootToken)
	if err := root.Sys().PutPolicy("seal-admin", `path "sys/appliance/seal" { capabilities = ["sudo", "update"] }`); err != nil {
		t.Fatal(err)
	}
	tok, err := root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"seal-admin"}, DisplayName: "escalated"})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	var sealed sealedStatus
	adminCall(hc, addr, "", "status", nil, &sealed)

	for _, op := range []struct{ path, mechanism string }{{"seal/rotate-shares", ""}, {"seal/remove", "shamir"}, {"seal/add", "pkcs11"}} {
		var st sealChange
		code, err := adminCall(hc, addr, tok.Auth.ClientToken, op.path, map[string]any{"shares": 1, "threshold": 1, "mechanism": op.mechanism}, &st)
		if op.path != "seal/rotate-shares" {
			// Refused up front: nothing to remove or add on this node.
			if code != http.StatusBadRequest {
				t.Fatalf("%s: %d %v", op.path, code, err)
			}
			continue
		}
		if err != nil || st.State != "authorizing" || st.Threshold != 2 {
			t.Fatalf("%s with a sudo token: %d %v %+v", op.path, code, err, st)
		}
		for i := range 50 {
			code, _ := adminCall(hc, addr, "", "seal/authorize", map[string]string{"nonce": st.Nonce, "key": forgedShare(sealed.Seal.Cluster, 1, 1+i%2)}, &st)
			if code != http.StatusBadRequest || st.Progress != 0 {
				t.Fatalf("forged share %d: %d %+v", i, code, st)
			}
		}
		if _, err := adminCall(hc, addr, "", "seal/verify", map[string]string{"nonce": st.Nonce, "share": res.Shares[0]}, nil); err == nil {
			t.Fatal("verify before authorization accepted")
		}
		// A second change cannot be stacked on it.
		if code, _ := adminCall(hc, addr, res.RootToken, op.path, map[string]int{"shares": 3, "threshold": 2}, nil); code != http.StatusConflict {
			t.Fatalf("second change: %d", code)
		}
		out, _, _ := harness.Run(t, tr, nil, bin, "seal", "status", "--address", addr)
		if !strings.Contains(out, "rotate-shares") || !strings.Contains(out, "escalated") || !strings.Contains(out, "0 of 2") {
			t.Fatalf("seal status: %s", out)
		}
		tokenFile := filepath.Join(dir, "token")
		os.WriteFile(tokenFile, []byte(res.RootToken), 0o600)
		if out, errOut, code := harness.Run(t, tr, nil, bin, "seal", "cancel", "--address", addr, "--token-file", tokenFile); code != 0 {
			t.Fatalf("cancel: %s %s", out, errOut)
		}
	}
	// Nothing changed: generation 1, and the original shares unseal.
	n.Signal(t, syscall.SIGTERM, time.Minute)
	n = harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	if st, _ := status(t, tr, bin, addr); st.Seal.Generation != 1 {
		t.Fatalf("generation %d after the token's attempts", st.Seal.Generation)
	}
	unsealWith(t, tr, bin, addr, res.Shares[1:])
	audit := readAll(t, dir, "audit.log")
	if !strings.Contains(audit, `"path":"sys/appliance/seal/rotate-shares"`) || !strings.Contains(audit, `"path":"sys/appliance/seal/cancel"`) {
		t.Fatal("the attempts are not in the audit log")
	}
	scanForSecrets(t, tr.String()+audit, append([]string{res.RootToken, tok.Auth.ClientToken}, res.Shares...))
}

// Out-of-range numbers are refused by name, by the CLI (exit 64) and by
// the API (400), and change nothing: before, `--shares -1` removed Shamir
