package appliance

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/openbao/openbao/api/v2"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// changeSeal runs a whole seal change as operators do: start it with the
// token, authorize it with keys (current shares, or recovery keys when the
// change asks for them), give back the new shares it issues. It returns
// the final status and the new shares.
func changeSeal(t *testing.T, a *Appliance, token, op string, c client.SealChange, keys []string) (seal.ChangeStatus, []string) {
	t.Helper()
	ctx := context.Background()
	st, err := a.StartSealChange(ctx, token, op, c)
	if err != nil {
		t.Fatalf("seal %s: start: %v", op, err)
	}
	var shares []string
	for i := 0; st.State == seal.ChangeAuthorizing; i++ {
		if i == len(keys) {
			t.Fatalf("seal %s: %d keys did not authorize it: %+v", op, len(keys), st)
		}
		if st, err = a.AuthorizeSealChange(ctx, token, st.Nonce, keys[i]); err != nil {
			t.Fatalf("seal %s: authorize with key %d: %v", op, i, err)
		}
		shares = append(shares, st.Shares...)
	}
	for i := 0; st.State == seal.ChangeVerifying; i++ {
		if i == len(shares) {
			t.Fatalf("seal %s: the new shares did not verify: %+v", op, st)
		}
		if st, err = a.VerifySealChange(ctx, st.Nonce, shares[i]); err != nil {
			t.Fatalf("seal %s: verify share %d: %v", op, i, err)
		}
	}
	if st.State != seal.ChangeDone {
		t.Fatalf("seal %s: ended %+v", op, st)
	}
	return st, shares
}

// A seal change authorized by recovery keys: a key submitted without a
// token with sudo on sys/appliance/seal (none, or one without sudo) is
// refused with 403 and changes nothing, so forged keys sent between the
// holders' cannot discard their progress (recovery keys, unlike shares,
// cannot be checked one by one); the holders' keys with the token
// complete the change.
func TestRecoveryKeysForASealChangeNeedTheToken(t *testing.T) {
	cfg := testConfig(t, &syncBuffer{})
	a, res, c := startWithSecret(t, cfg, "kept")
	ctx := context.Background()
	if err := c.Sys().PutPolicy("seal-no-sudo", `path "sys/appliance/*" { capabilities = ["create", "read", "update", "delete", "list"] }`); err != nil {
		t.Fatal(err)
	}
	sec, err := c.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"seal-no-sudo"}})
	if err != nil {
		t.Fatal(err)
	}
	noSudo := sec.Auth.ClientToken
	st, err := a.StartSealChange(ctx, res.RootToken, "rotate-shares", client.SealChange{AuthorizeWith: seal.AuthorizeRecoveryKeys})
	if err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 33)
	rand.Read(part)
	part[32] = 200 // an x coordinate no holder has
	forged := base64.StdEncoding.EncodeToString(part)
	attack := func() {
		t.Helper()
		for _, tok := range []string{"", noSudo} {
			body, _ := json.Marshal(map[string]string{"nonce": st.Nonce, "key": forged})
			req, _ := http.NewRequest("POST", a.APIAddr()+"/appliance/v1/seal/authorize", bytes.NewReader(body))
			if tok != "" {
				req.Header.Set("X-Vault-Token", tok)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(out), "recovery keys cannot be checked one by one") {
				t.Fatalf("a forged recovery key (token %v): %d %s, want 403", tok != "", resp.StatusCode, out)
			}
		}
		if _, err := a.AuthorizeSealChange(ctx, "", st.Nonce, forged); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("a recovery key without a token: %v", err)
		}
	}
	attack()
	var shares []string
	for i, k := range res.RecoveryKeys[:3] {
		if st, err = a.AuthorizeSealChange(ctx, res.RootToken, st.Nonce, k); err != nil {
			t.Fatalf("recovery key %d: %v", i, err)
		}
		if st.State == seal.ChangeAuthorizing {
			if st.Progress != i+1 {
				t.Fatalf("after recovery key %d: progress %d", i, st.Progress)
			}
			attack()
		}
		shares = append(shares, st.Shares...)
	}
	for i := 0; st.State == seal.ChangeVerifying; i++ {
		if st, err = a.VerifySealChange(ctx, st.Nonce, shares[i]); err != nil {
			t.Fatalf("verify share %d: %v", i, err)
		}
	}
	if st.State != seal.ChangeDone || st.Generation != 2 {
		t.Fatalf("the change ended %+v", st)
	}
}
