package appliance

import (
	"context"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// changeSeal runs a whole seal change as operators do: start it with the
// token, authorize it with keys (current shares, or recovery keys when the
// change asks for them), give back the new shares it issues. It returns
// the final status and the new shares.
func changeSeal(t *testing.T, a *Appliance, token, op string, c SealChange, keys []string) (seal.ChangeStatus, []string) {
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
		if st, err = a.AuthorizeSealChange(ctx, st.Nonce, keys[i]); err != nil {
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
