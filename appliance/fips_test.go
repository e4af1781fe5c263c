package appliance

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/config"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/fips"
)

// fipsChildEnv marks the run of this test binary, under
// GODEBUG=fips140=on, that TestFIPSModeRefusesPGP starts.
const fipsChildEnv = "GSA_APPLIANCE_FIPS_CHILD"

// Under real FIPS 140-3 mode (this test binary run again with
// GODEBUG=fips140=on), init and seal changes refuse PGP keys by their key.
func TestFIPSModeRefusesPGP(t *testing.T) {
	if os.Getenv(fipsChildEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFIPSModeRefusesPGP$", "-test.v")
		cmd.Env = append(os.Environ(), fipsChildEnv+"=1", "GODEBUG=fips140=on")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestFIPSModeRefusesPGP") {
			t.Fatalf("under GODEBUG=fips140=on: %v\n%s", err, out)
		}
		return
	}
	if !fips.Enabled() {
		t.Fatal("GODEBUG=fips140=on did not enable FIPS 140-3 mode")
	}
	for _, tc := range []struct {
		req  client.InitRequest
		want string
	}{
		{client.InitRequest{PGPKeys: []string{"key"}}, "pgp_keys: PGP encryption is not available in FIPS 140-3 mode"},
		{client.InitRequest{RecoveryPGPKeys: []string{"key"}}, "recovery_pgp_keys: PGP encryption is not available in FIPS 140-3 mode"},
		{client.InitRequest{Shares: 5}, ""},
	} {
		err := checkInitFIPS(tc.req)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), tc.want)) || (err != nil && !errors.Is(err, fips.ErrPGP)) {
			t.Errorf("%+v: %v, want %q", tc.req, err, tc.want)
		}
	}
	a := &Appliance{cfg: config.NewConfig()}
	if _, err := a.changeRequest(t.Context(), "rotate-shares", client.SealChange{PGPKeys: []string{"key"}}); !errors.Is(err, fips.ErrPGP) {
		t.Errorf("rotate-shares with pgp_keys: %v", err)
	}
}
