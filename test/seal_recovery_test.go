package test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// A seal change authorized by recovery keys through the CLI: `seal
// authorize` sends each key with the token (--token-file), and the change
// completes; with a token that is not one (read from the input's first
// line), a key is refused (403) and the progress kept.
func TestSealAuthorizeWithRecoveryKeysTakesTheToken(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	addr, res := startActive(t, tr, bin, "--shares", "3", "--threshold", "2")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(res.RootToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Start with one recovery key; the others come with `seal authorize`.
	out, errOut, code := harness.Run(t, tr, []byte(res.RecoveryKeys[0]+"\n"), bin, "seal", "rotate-shares",
		"--authorize-with", "recovery-keys", "--address", addr, "--token-file", tokenFile)
	if code != 0 || !strings.Contains(errOut, "1 of 3 keys in") {
		t.Fatalf("seal rotate-shares with one recovery key: exit %d: %s %s", code, out, errOut)
	}
	// A key with a token that is none: refused, and the progress kept.
	_, errOut, code = harness.Run(t, tr, []byte("not-a-token\n"+res.RecoveryKeys[1]+"\n"), bin, "seal", "authorize", "--address", addr)
	if code == 0 || !strings.Contains(errOut, "recovery keys cannot be checked one by one") {
		t.Fatalf("seal authorize without a token: exit %d: %s", code, errOut)
	}
	var st sealChange
	if _, err := adminCall(&http.Client{Timeout: 30 * time.Second}, addr, "", "seal/change", nil, &st); err != nil || st.Progress != 1 {
		t.Fatalf("the change after the refused key: %+v %v, want progress 1", st, err)
	}
	out, errOut, code = harness.Run(t, tr, []byte(res.RecoveryKeys[1]+"\n"+res.RecoveryKeys[2]+"\n"), bin, "seal", "authorize",
		"--address", addr, "--token-file", tokenFile)
	if code != 0 || !strings.Contains(out, "New unseal share 3:") {
		t.Fatalf("seal authorize with the token: exit %d: %s %s", code, out, errOut)
	}
	var shares []string
	for _, l := range strings.Split(out, "\n") {
		if _, s, ok := strings.Cut(l, "New unseal share "); ok {
			shares = append(shares, strings.TrimSpace(s[strings.Index(s, ":")+1:]))
		}
	}
	if _, errOut, code := harness.Run(t, tr, []byte(strings.Join(shares, "\n")+"\n"), bin, "seal", "verify", "--address", addr); code != 0 {
		t.Fatalf("seal verify: exit %d: %s", code, errOut)
	}
	if st, _ := status(t, tr, bin, addr); st.Seal.Generation != 2 {
		t.Fatalf("after the change: generation %d, want 2", st.Seal.Generation)
	}
}
