package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

const deepMessage = "nested more than 64 levels deep at line 3"

// writeDeepConfigs writes an HCL and a JSON config nested 200k deep
// (400-600 KB: under the size limit), which overflowed the parsers' stack.
func writeDeepConfigs(t *testing.T, dir string) (hclFile, jsonFile string) {
	t.Helper()
	hclFile, jsonFile = filepath.Join(dir, "deep.hcl"), filepath.Join(dir, "deep.json")
	hclSrc := "node_id = \"n\"\ndata_dir = \"" + filepath.Join(dir, "data") + "\"\nx = " + strings.Repeat("{a=", 200_000)
	jsonSrc := "{\"node_id\": \"n\",\n\"x\":\n" + strings.Repeat("[", 200_000)
	if err := os.WriteFile(hclFile, []byte(hclSrc), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(jsonFile, []byte(jsonSrc), 0o600); err != nil {
		t.Fatal(err)
	}
	return hclFile, jsonFile
}

// A config nested 200k deep, and /dev/zero as a config, are refused with
// exit code 3 and a message naming the file and the limit, by `config
// validate` and by `server`.
func TestOversizedConfigsExit3(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	dir := t.TempDir()
	hclFile, jsonFile := writeDeepConfigs(t, dir)
	cases := []struct{ file, want string }{
		{hclFile, deepMessage},
		{jsonFile, deepMessage},
		{"/dev/zero", "larger than 1048576 bytes (1 MiB), the limit for a config file"},
	}
	for _, tc := range cases {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			head := "config file " + tc.file + " has 1 problem(s):"
			for _, args := range [][]string{{"config", "validate", tc.file}, {"server", "--config", tc.file}} {
				_, errOut, code := harness.Run(t, tr, nil, bin, args...)
				if code != 3 || !strings.Contains(errOut, head) || !strings.Contains(errOut, tc.want) {
					t.Fatalf("%v: exit %d, want 3 with %q and %q in:\n%.2000s", args, code, head, tc.want, errOut)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Fatalf("a refused config created the data dir: %v", err)
	}
}

// A running node sent SIGHUP after its config file was replaced by a deeply
// nested one logs the refusal and keeps serving; before the limit, the
// parser overflowed its stack and the node died.
func TestSIGHUPWithDeepConfigKeepsServing(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	cfg, addr, dir := singleNode(t)
	n := harness.StartNode(t, tr, bin, cfg, addr)
	n.WaitServing(t, tr)

	deep, _ := writeDeepConfigs(t, dir)
	if err := os.Rename(deep, cfg); err != nil {
		t.Fatal(err)
	}
	n.Notify(syscall.SIGHUP)
	harness.Eventually(t, time.Minute, "the refusal of the deep config", func() bool {
		if n.Exited() {
			t.Fatalf("the node died on SIGHUP:\n%.3000s", n.Output)
		}
		out := n.Output.String()
		return strings.Contains(out, "Reload refused, the node runs on") && strings.Contains(out, deepMessage)
	})
	if st, code := status(t, tr, bin, addr); code != 2 || st.State != "uninitialized" || n.Exited() {
		t.Fatalf("after the refused reload: status exit %d, %+v", code, st)
	}
	if code := n.Signal(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}

// exited runs cmd to its end, failing the test if it does not end before
// the deadline; it returns the exit code.
func exited(t *testing.T, cmd *exec.Cmd, deadline time.Duration) int {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
		return cmd.ProcessState.ExitCode()
	case <-time.After(deadline):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not exit within %s", cmd.Args, deadline)
		return -1
	}
}

// Two servers on one data_dir: the second exits 3 at once naming the
// first's PID, the first serves on; after kill -9 of the first, the data
// dir starts again (the kernel dropped the lock) with its data.
func TestDataDirInUseExits3(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	cfgA, addrA, dir := singleNode(t)
	a := harness.StartNode(t, tr, bin, cfgA, addrA)
	a.WaitServing(t, tr)
	res := initCluster(t, bin, addrA, "--shares", "1", "--threshold", "1")
	waitState(t, tr, bin, addrA, "active")

	// B: the same data_dir, its own ports.
	src, err := os.ReadFile(cfgA)
	if err != nil {
		t.Fatal(err)
	}
	listenB := harness.FreeAddr(t, "127.0.0.1")
	cfgB := filepath.Join(dir, "b.hcl")
	os.WriteFile(cfgB, []byte(strings.Replace(string(src), strings.TrimPrefix(addrA, "http://"), listenB, 1)), 0o600)
	b := exec.Command(bin, "server", "--config", cfgB)
	var out harness.Buffer
	b.Stdout, b.Stderr = &out, &out
	if code := exited(t, b, 2*time.Minute); code != 3 {
		t.Fatalf("second server on the data dir: exit %d, want 3:\n%s", code, out.String())
	}
	data := filepath.Join(dir, "data")
	m := regexp.MustCompile(`data_dir (\S+) is in use by process (\d+): .*stop that node first, or give this one its own data_dir`).FindStringSubmatch(out.String())
	if m == nil || m[1] != data {
		t.Fatalf("second server's message:\n%s", out.String())
	}
	// The PID named is A's.
	if cmdline, err := os.ReadFile("/proc/" + m[2] + "/cmdline"); err != nil || !strings.Contains(string(cmdline), cfgA) {
		t.Fatalf("process %s named as the holder is not node A (%q, %v)", m[2], cmdline, err)
	}
	if st, code := status(t, tr, bin, addrA); code != 0 || st.State != "active" {
		t.Fatalf("node A after the refused second server: exit %d, %+v", code, st)
	}

	if code := a.Signal(t, syscall.SIGKILL, time.Minute); code != -1 {
		t.Fatalf("kill -9: exit %d", code)
	}
	again := harness.StartNode(t, tr, bin, cfgA, addrA)
	again.WaitServing(t, tr)
	unsealWith(t, tr, bin, addrA, res.Shares)
	if st, code := status(t, tr, bin, addrA); code != 0 || st.State != "active" {
		t.Fatalf("restart after kill -9: exit %d, %+v", code, st)
	}
}

// A JSON config of 33,000 unknown keys (just under the 1 MiB limit) is
// refused by `config validate` with the first 50 problems named and the
// rest counted. Naming each problem's key walked the whole file, so that
// this took 77 s and 189 MB (a SIGHUP with such a file burnt a core for
// as long); BenchmarkParseManyUnknownKeys (appliance) measures it.
func TestManyUnknownKeysExit3(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	file := filepath.Join(t.TempDir(), "many.json")
	var b strings.Builder
	b.WriteString(`{"node_id": "n",`)
	const n = 33_000
	for i := range n {
		fmt.Fprintf(&b, "\"unknown_%05d\": 1,\n", i)
	}
	b.WriteString(`"data_dir": "/nonexistent"}`)
	if b.Len() >= 1<<20 {
		t.Fatalf("the file is %d bytes, over the 1 MiB limit", b.Len())
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := harness.Run(t, tr, nil, bin, "config", "validate", file)
	if code != 3 || !strings.Contains(errOut, fmt.Sprintf("has %d problem(s)", n)) || !strings.Contains(errOut, "unknown_00000: unknown key (line 1)") || !strings.Contains(errOut, fmt.Sprintf("and %d more problem(s)", n-50)) {
		t.Fatalf("config validate with %d unknown keys: exit %d, want 3 naming the first and counting the rest:\n%.3000s", n, code, errOut)
	}
}
