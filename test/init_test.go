package test

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// shares: before, the unseal loop had ended and `unseal` timed out.
func TestOperatorSealThenShares(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	hsm := harness.NewSoftHSM(t, "gitlab-secrets")
	hsm.GenerateAESKey(t, "kek")
	cfg, addr := nodeConfig(t, dir, "node-1", "127.0.0.1", "", hsmSeal(t, hsm, dir, "kek", true))
	n := harness.StartNode(t, tr, bin, cfg, addr, hsm.Env()...)
	n.WaitServing(t, tr)
	res := initCluster(t, bin, addr)
	waitState(t, tr, bin, addr, "active")
	c := apiClient(t, addr, res.RootToken)

	for round := range 2 {
		if err := c.Sys().Seal(); err != nil {
			t.Fatalf("round %d: sys/seal: %v", round, err)
		}
		st, code := status(t, tr, bin, addr)
		if code != 2 || st.State != "sealed" {
			t.Fatalf("round %d: after sys/seal: exit %d %+v", round, code, st)
		}
		harness.Eventually(t, time.Minute, "the log to say the operator sealed it", func() bool {
			return strings.Count(n.Output.String(), "sealed by an operator") == round+1
		})
		// The seal keeper tried (every 2 s) and refused to use the HSM.
		harness.Eventually(t, time.Minute, "the keeper to refuse the HSM", func() bool {
			return strings.Contains(n.Output.String(), "an operator sealed this node")
		})
		if st, _ := status(t, tr, bin, addr); st.State != "sealed" {
			t.Fatalf("round %d: the node unsealed itself after an operator sealed it: %+v", round, st)
		}
		submitShares(t, tr, bin, addr, res.Shares[round], res.Shares[round+1])
		waitState(t, tr, bin, addr, "active")
	}
	// A restart uses the HSM again.
	n.Signal(t, syscall.SIGTERM, time.Minute)
	n = harness.StartNode(t, tr, bin, cfg, addr, hsm.Env()...)
	n.WaitServing(t, tr)
	st := waitState(t, tr, bin, addr, "active")
	if p, _ := mechanism(st, "pkcs11"); !p.LastUsed {
		t.Fatalf("after a restart the HSM did not unseal: %+v", st.Seal)
	}
}

// says how it went.
func TestInitAnswersBeforeTheGitLabBootstrap(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	// A "GitLab" that accepts connections and does not answer until
	// released, then hangs up.
	hang := harness.FreeAddr(t, "127.0.0.1")
	l, err := net.Listen("tcp", hang)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	release := make(chan struct{})
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				<-release
				conn.Close()
			}()
		}
	}()
	cfg, addr := nodeConfig(t, dir, "node-1", "127.0.0.1", "", fmt.Sprintf("gitlab {\n  url = %q\n  jwks_url = %q\n  audience = \"https://gitlab.example.com:8200\"\n}\n",
		"https://gitlab.example.com", "http://"+hang+"/oauth/discovery/keys"))
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	res := initCluster(t, bin, addr)
	if res.GitLabBootstrap != "running" || len(res.Shares) == 0 || res.RootToken == "" {
		t.Fatalf("init: bootstrap %q, %d shares", res.GitLabBootstrap, len(res.Shares))
	}
	var st struct {
		GitLabBootstrap string `json:"gitlab_bootstrap"`
	}
	out, _, _ := harness.Run(t, tr, nil, bin, "status", "--format", "json", "--address", addr)
	if json.Unmarshal([]byte(out), &st); st.GitLabBootstrap != "running" {
		t.Fatalf("the bootstrap ended while GitLab did not answer: %q", st.GitLabBootstrap)
	}
	close(release)
	harness.Eventually(t, 3*time.Minute, "the bootstrap to end", func() bool {
		out, _, _ := harness.Run(t, tr, nil, bin, "status", "--format", "json", "--address", addr)
		json.Unmarshal([]byte(out), &st)
		return st.GitLabBootstrap != "running"
	})
	if !strings.Contains(st.GitLabBootstrap, "gitlab bootstrap") {
		t.Fatalf("the failed bootstrap does not say how to retry: %q", st.GitLabBootstrap)
	}
	// A second init is refused; the cluster works.
	if _, errOut, code := harness.Run(t, tr, nil, bin, "init", "--address", addr); code != 1 || !strings.Contains(errOut, "already initialized") {
		t.Fatalf("second init: exit %d %s", code, errOut)
	}
	waitState(t, tr, bin, addr, "active")
}

// shares printed belong to the cluster.
func TestConcurrentInitsOneWins(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	cfg, addr, _ := singleNode(t)
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	hc := &http.Client{Timeout: time.Minute}
	type answer struct {
		code int
		res  initOutput
	}
	answers := make(chan answer, 4)
	for range 4 {
		go func() {
			var res initOutput
			code, _ := adminCall(hc, addr, "", "init", map[string]int{"shares": 3, "threshold": 2}, &res)
			answers <- answer{code, res}
		}()
	}
	var won []initOutput
	for range 4 {
		a := <-answers
		switch a.code {
		case http.StatusOK:
			won = append(won, a.res)
		case http.StatusConflict:
		default:
			t.Fatalf("init answered %d", a.code)
		}
	}
	if len(won) != 1 {
		t.Fatalf("%d inits succeeded", len(won))
	}
	waitState(t, tr, bin, addr, "active")
	n.Signal(t, syscall.SIGTERM, time.Minute)
	n = harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	unsealWith(t, tr, bin, addr, won[0].Shares[:2])
}

// TestInitKilledHalfWay kills a node at a random point of its first init
// and restarts it. Whatever the point, the node either works with the
// answer its init gave, or says (status and init) that the init stopped
// before it answered and how to start over; never OpenBao's "cluster
// already has state" or "barrier reports initialized but no seal
// configuration found" (CI met that one).
func TestInitKilledHalfWay(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	hc := &http.Client{Timeout: time.Minute}
	var outcomes = map[string]int{}
	for round := range 8 {
		cfg, addr, dir := singleNode(t)
		n := harness.StartNode(t, tr, bin, cfg, addr)
		n.WaitServing(t, tr)
		answer := make(chan *initOutput, 1)
		go func() {
			var res initOutput
			if code, _ := adminCall(hc, addr, "", "init", map[string]int{"shares": 3, "threshold": 2}, &res); code == http.StatusOK {
				answer <- &res
			}
			close(answer)
		}()
		d, _ := rand.Int(rand.Reader, big.NewInt(3000))
		time.Sleep(time.Duration(d.Int64()) * time.Millisecond) // the fault's random point
		n.Kill()
		n.Wait(t, time.Minute)
		got := <-answer // the call ends with the process

		n = harness.StartNode(t, tr, bin, cfg, addr)
		n.WaitServing(t, tr)
		st, _ := status(t, tr, bin, addr)
		switch {
		case st.InitInterrupted != "":
			if got != nil {
				t.Fatalf("round %d: init answered, yet the node says it stopped before answering: %s", round, st.InitInterrupted)
			}
			outcomes["status explained the interrupted init"]++
		case st.Initialized:
			if got == nil {
				t.Fatalf("round %d: initialized, no answer, and nothing says so", round)
			}
			outcomes["initialized before the kill"]++
			unsealWith(t, tr, bin, addr, got.Shares[:2])
			n.Signal(t, syscall.SIGTERM, time.Minute)
			continue
		}
		out, errOut, code := harness.Run(t, &harness.Transcript{}, nil, bin, "init", "--format", "json", "--address", addr)
		switch {
		case code == 0 && st.InitInterrupted == "":
			outcomes["init worked after the restart"]++
		case strings.Contains(errOut, "an earlier init on this node stopped before it finished"):
			outcomes["init explained the interrupted init"]++
			n.Signal(t, syscall.SIGTERM, time.Minute)
			for _, p := range []string{"raft", "vault.db"} {
				if err := os.RemoveAll(filepath.Join(dir, "data", p)); err != nil {
					t.Fatal(err)
				}
			}
			n = harness.StartNode(t, tr, bin, cfg, addr)
			n.WaitServing(t, tr)
			if _, errOut, code := harness.Run(t, &harness.Transcript{}, nil, bin, "init", "--address", addr); code != 0 {
				t.Fatalf("round %d: init after following the advice: %s", round, errOut)
			}
		default:
			t.Fatalf("round %d: init after a kill (status said %q): exit %d: %s %s", round, st.InitInterrupted, code, out, errOut)
		}
		waitState(t, tr, bin, addr, "active")
		n.Signal(t, syscall.SIGTERM, time.Minute)
	}
	t.Logf("outcomes: %v", outcomes)
}

// and `--recovery-shares -3` made a cluster without recovery keys.
func TestBadNumbersAreRefusedByName(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	cfg, addr, dir := singleNode(t)
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)
	hc := &http.Client{Timeout: 30 * time.Second}
	for _, args := range [][]string{{"--recovery-shares", "-3"}, {"--shares", "-1"}, {"--threshold", "300"}, {"--recovery-threshold", "-1"}} {
		_, errOut, code := harness.Run(t, tr, nil, bin, append([]string{"init", "--address", addr}, args...)...)
		if code != 64 || !strings.Contains(errOut, args[0]) {
			t.Errorf("init %v: exit %d: %s", args, code, errOut)
		}
	}
	for _, body := range []map[string]int{{"recovery_shares": -3}, {"shares": -1}, {"shares": 3, "threshold": 5}, {"recovery_shares": 3, "recovery_threshold": 1}} {
		if code, err := adminCall(hc, addr, "", "init", body, nil); code != http.StatusBadRequest {
			t.Errorf("init %v: %d %v", body, code, err)
		}
	}
	if st, _ := status(t, tr, bin, addr); st.Initialized {
		t.Fatal("a refused init initialized the cluster")
	}
	res := initCluster(t, bin, addr, "--shares", "3", "--threshold", "2")
	waitState(t, tr, bin, addr, "active")
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(res.RootToken), 0o600)
	for _, args := range [][]string{{"--shares", "-1"}, {"--threshold", "-2"}, {"--shares", "256"}} {
		_, errOut, code := harness.Run(t, tr, nil, bin, append([]string{"seal", "rotate-shares", "--address", addr, "--token-file", tokenFile}, args...)...)
		if code != 64 || !strings.Contains(errOut, args[0]) {
			t.Errorf("rotate-shares %v: exit %d: %s", args, code, errOut)
		}
	}
	for _, body := range []map[string]int{{"shares": -1}, {"threshold": -2}, {"shares": 3, "threshold": 4}} {
		if code, err := adminCall(hc, addr, res.RootToken, "seal/rotate-shares", body, nil); code != http.StatusBadRequest {
			t.Errorf("rotate-shares %v: %d %v", body, code, err)
		}
	}
	var st sealedStatus
	adminCall(hc, addr, "", "status", nil, &st)
	if st.Seal.Generation != 1 || len(st.Seal.Mechanisms) != 1 || st.Seal.Mechanisms[0].Type != "shamir" {
		t.Fatalf("the refused changes changed the seal: %+v", st.Seal)
	}
}

// The key ceremony with --share-dir: each unseal share and each recovery
// key is written to its own file and named for what it is, in text and in
// JSON, with each kind's own quorum and purpose. The files hold what their
// names say: a quorum of the share files unseals the node, a recovery key
// is refused as an unseal share.
func TestInitShareDirLabelsSharesAndRecoveryKeys(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	args := []string{"--shares", "3", "--threshold", "2", "--recovery-shares", "4", "--recovery-threshold", "3"}

	// Text.
	cfg, addr, dir := singleNode(t)
	harness.StartNode(t, tr, bin, cfg, addr).WaitServing(t, tr)
	shareDir := filepath.Join(dir, "keys")
	out, errOut, code := harness.Run(t, &harness.Transcript{}, nil, bin, append([]string{"init", "--address", addr, "--share-dir", shareDir}, args...)...)
	if code != 0 {
		t.Fatalf("init --share-dir: exit %d: %s %s", code, out, errOut)
	}
	var want []string
	for i := 1; i <= 3; i++ {
		want = append(want, fmt.Sprintf("Unseal share %d: %s\n", i, filepath.Join(shareDir, fmt.Sprintf("unseal-share-%d", i))))
	}
	for i := 1; i <= 4; i++ {
		want = append(want, fmt.Sprintf("Recovery key %d: %s\n", i, filepath.Join(shareDir, fmt.Sprintf("recovery-key-%d", i))))
	}
	want = append(want,
		"Unseal shares: any 2 of the 3 unseal shares unseal a node after every restart",
		"Recovery keys: any 3 of the 4 recovery keys, each time with a token that has sudo, authorize",
		"Recovery keys never unseal a node.",
		"are in the files listed above, mode 0600.")
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("init --share-dir does not print %q:\n%s", w, out)
		}
	}
	for _, bad := range []string{"Unseal share 4", "recovery-key-1\nUnseal", "of the 7"} {
		if strings.Contains(out, bad) {
			t.Errorf("init --share-dir prints %q:\n%s", bad, out)
		}
	}
	token := lineAfter(t, out, "Initial root token: ")
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(shareDir, name))
		if st, _ := os.Stat(filepath.Join(shareDir, name)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v", name, err)
		}
		return strings.TrimSpace(string(b))
	}
	waitState(t, tr, bin, addr, "active")
	if err := apiClient(t, addr, token).Sys().Seal(); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := harness.Run(t, tr, []byte(read("recovery-key-1")+"\n"), bin, "unseal", "--address", addr); code == 0 {
		t.Fatalf("a recovery key was taken as an unseal share: %s", errOut)
	}
	submitShares(t, tr, bin, addr, read("unseal-share-3"), read("unseal-share-1"))
	waitState(t, tr, bin, addr, "active")

	// JSON: the files under their own keys, no key in the output.
	cfg, addr, dir = singleNode(t)
	harness.StartNode(t, tr, bin, cfg, addr).WaitServing(t, tr)
	shareDir = filepath.Join(dir, "keys")
	out, errOut, code = harness.Run(t, &harness.Transcript{}, nil, bin, append([]string{"init", "--format", "json", "--address", addr, "--share-dir", shareDir}, args...)...)
	var res map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("init --share-dir --format json: exit %d: %s %s", code, out, errOut)
	}
	list := func(key string) []string {
		var l []string
		v, _ := res[key].([]any)
		for _, e := range v {
			l = append(l, filepath.Base(e.(string)))
		}
		return l
	}
	if got := list("unseal_share_files"); strings.Join(got, ",") != "unseal-share-1,unseal-share-2,unseal-share-3" {
		t.Errorf("unseal_share_files: %v", got)
	}
	if got := list("recovery_key_files"); strings.Join(got, ",") != "recovery-key-1,recovery-key-2,recovery-key-3,recovery-key-4" {
		t.Errorf("recovery_key_files: %v", got)
	}
	if res["unseal_threshold"] != 2.0 || res["recovery_threshold"] != 3.0 || res["unseal_shares"] != nil || res["recovery_keys"] != nil {
		t.Errorf("init --share-dir --format json: %s", out)
	}
}

// lineAfter is the rest of the first line of out that starts with prefix.
func lineAfter(t *testing.T, out, prefix string) string {
	t.Helper()
	for l := range strings.Lines(out) {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatalf("no line %q in:\n%s", prefix, out)
	return ""
}
