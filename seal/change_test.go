package seal

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	wrapping "github.com/openbao/go-kms-wrapping/v2"
)

// store plays the two storage entries a seal change rewrites, committed
// together as the appliance's Raft transaction does.
type store struct {
	keys, recovery *wrapping.BlobInfo
	fail           error
	commits        int
}

func (st *store) persist(ctx context.Context, enc Encryptor) error {
	if st.fail != nil {
		return st.fail
	}
	k, err := enc(ctx, []byte("stored keys"))
	if err != nil {
		return err
	}
	r, err := enc(ctx, []byte("recovery key"))
	if err != nil {
		return err
	}
	st.keys, st.recovery = k, r
	st.commits++
	return nil
}

func (st *store) header(context.Context) ([]byte, error) {
	if st.keys == nil {
		return nil, nil
	}
	return st.keys.KeyInfo.WrappedKey, nil
}

// newCluster is an initialized seal (Shamir 3 of 2) over a store.
func newCluster(t *testing.T, dir string) (*Seal, *store, []string) {
	t.Helper()
	ctx := context.Background()
	st := &store{}
	s := New(Options{StoredHeader: st.header, Persist: st.persist, HeaderFile: filepath.Join(dir, "seal-header.json")})
	shares, err := s.Initialize(ctx, InitSpec{Shamir: true, Shares: 3, Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	if st.keys, err = s.Encrypt(ctx, []byte("stored keys")); err != nil {
		t.Fatal(err)
	}
	s.refresh(ctx) // records the header, as the first status call does
	return s, st, shares
}

// opens reports whether a fresh node with this storage (and header file)
// unseals with shares.
func opens(t *testing.T, st *store, headerFile string, shares []string) error {
	t.Helper()
	ctx := context.Background()
	s := New(Options{StoredHeader: st.header, HeaderFile: headerFile})
	for _, sh := range shares {
		if _, err := s.SubmitShare(ctx, sh); err != nil {
			return err
		}
	}
	_, err := s.Decrypt(ctx, st.keys)
	return err
}

// Rotating shares: a token alone starts it, nothing changes until T current
// shares authorize it and T new shares come back; then one commit, the old
// shares are void and the new ones unseal.
func TestRotateSharesNeedsQuorumAndVerification(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, st, old := newCluster(t, dir)
	hf := filepath.Join(dir, "seal-header.json")

	ch, err := s.StartChange(ctx, ChangeRequest{Operation: RotateShares, Shares: 4, Threshold: 3, RequestedBy: "ops"}, nil)
	if err != nil || ch.State != ChangeAuthorizing || ch.AuthorizeWith != AuthorizeShares || ch.Threshold != 2 {
		t.Fatalf("start: %+v %v", ch, err)
	}
	if _, err := s.StartChange(ctx, ChangeRequest{Operation: RotateShares, Shares: 4, Threshold: 3}, nil); !errors.Is(err, ErrChangePending) {
		t.Fatalf("second change: %v", err)
	}
	if _, err := s.AuthorizeChange(ctx, "not-the-nonce", old[0]); !errors.Is(err, ErrNoChange) {
		t.Fatalf("wrong nonce: %v", err)
	}
	cluster := s.cur.clusterID()
	if _, err := s.AuthorizeChange(ctx, ch.Nonce, forge(cluster, 1, 1, 1)); !errors.Is(err, ErrUnknownShare) {
		t.Fatalf("forged share authorized: %v", err)
	}
	a, err := s.AuthorizeChange(ctx, ch.Nonce, old[0])
	if err != nil || a.Progress != 1 || len(a.Shares) != 0 {
		t.Fatalf("first current share: %+v %v", a, err)
	}
	a, err = s.AuthorizeChange(ctx, ch.Nonce, old[2])
	if err != nil || a.State != ChangeVerifying || len(a.Shares) != 4 || a.NewThreshold != 3 || a.NewGeneration != 2 {
		t.Fatalf("authorized: %+v %v", a, err)
	}
	if st.commits != 0 || opens(t, st, hf, old[:2]) != nil {
		t.Fatal("the change was stored before the new shares were verified")
	}
	if p := s.PendingChange(); p == nil || len(p.Shares) != 0 {
		t.Fatalf("pending change shows shares or is gone: %+v", p)
	}
	for i, sh := range a.Shares[:2] {
		v, err := s.VerifyChange(ctx, ch.Nonce, sh)
		if err != nil || v.State != ChangeVerifying || v.Progress != i+1 {
			t.Fatalf("verify %d: %+v %v", i, v, err)
		}
	}
	if _, err := s.VerifyChange(ctx, ch.Nonce, old[1]); !errors.Is(err, ErrVoidShare) {
		t.Fatalf("an old share given back as a new one: %v", err)
	}
	done, err := s.VerifyChange(ctx, ch.Nonce, a.Shares[3])
	if err != nil || done.State != ChangeDone || done.Generation != 2 || st.commits != 1 {
		t.Fatalf("commit: %+v %v (commits %d)", done, err, st.commits)
	}
	if s.PendingChange() != nil {
		t.Fatal("change still pending after commit")
	}
	if err := opens(t, st, hf, old[:2]); !errors.Is(err, ErrVoidShare) {
		t.Fatalf("old shares after rotation: %v", err)
	}
	if err := opens(t, st, hf, a.Shares[1:]); err != nil {
		t.Fatalf("new shares after rotation: %v", err)
	}
}

// A change that is never verified, cancelled, or whose commit fails
// leaves the old generation working and the prepared shares useless.
func TestUnfinishedChangesChangeNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	hf := filepath.Join(dir, "seal-header.json")
	s, st, old := newCluster(t, dir)

	authorize := func() ChangeStatus {
		t.Helper()
		ch, err := s.StartChange(ctx, ChangeRequest{Operation: RotateShares, Shares: 3, Threshold: 2}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.AuthorizeChange(ctx, ch.Nonce, old[0])
		a, err := s.AuthorizeChange(ctx, ch.Nonce, old[1])
		if err != nil || len(a.Shares) != 3 {
			t.Fatalf("authorize: %+v %v", a, err)
		}
		return a
	}
	cancelled := authorize()
	if err := s.CancelChange(""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyChange(ctx, cancelled.Nonce, cancelled.Shares[0]); !errors.Is(err, ErrNoChange) {
		t.Fatalf("verify after cancel: %v", err)
	}

	st.fail = errors.New("raft: not the leader")
	failing := authorize()
	s.VerifyChange(ctx, failing.Nonce, failing.Shares[0])
	_, err := s.VerifyChange(ctx, failing.Nonce, failing.Shares[1])
	if err == nil || !strings.Contains(err.Error(), "generation 1 stays current") || st.commits != 0 {
		t.Fatalf("failed commit: %v", err)
	}
	st.fail = nil

	// A restart forgets a half-done change: the old shares open, the
	// prepared ones (same generation number as a later change) do not.
	if err := opens(t, st, hf, old[1:]); err != nil {
		t.Fatalf("old shares after unfinished changes: %v", err)
	}
	for _, prepared := range [][]string{cancelled.Shares, failing.Shares} {
		if err := opens(t, st, hf, prepared[:2]); !errors.Is(err, ErrUnknownShare) {
			t.Fatalf("shares of an unfinished change: %v", err)
		}
	}
}

// A restored snapshot brings back stored keys of an older generation: a
// node that has seen the newer one refuses the old shares (and would not
// ask a removed HSM) and opens the old blob with the new shares through
// the header's history.
func TestHeaderFileKeepsOldSharesVoidAfterRestore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	hf := filepath.Join(dir, "seal-header.json")
	s, st, old := newCluster(t, dir)
	snapshot := *st

	ch, _ := s.StartChange(ctx, ChangeRequest{Operation: RotateShares, Shares: 3, Threshold: 2}, nil)
	s.AuthorizeChange(ctx, ch.Nonce, old[0])
	a, _ := s.AuthorizeChange(ctx, ch.Nonce, old[1])
	s.VerifyChange(ctx, ch.Nonce, a.Shares[0])
	if done, err := s.VerifyChange(ctx, ch.Nonce, a.Shares[1]); err != nil || done.State != ChangeDone {
		t.Fatalf("rotation: %v", err)
	}

	restored := &snapshot // storage as the snapshot left it: generation 1
	if err := opens(t, restored, hf, old[:2]); !errors.Is(err, ErrVoidShare) {
		t.Fatalf("old shares after a restore: %v", err)
	}
	if err := opens(t, restored, hf, a.Shares[1:]); err != nil {
		t.Fatalf("new shares after a restore: %v", err)
	}
	// Without the header file (another node that never saw generation 2),
	// only storage speaks: that is why every node keeps one.
	if err := opens(t, restored, filepath.Join(t.TempDir(), "none"), old[:2]); err != nil {
		t.Fatalf("control: %v", err)
	}
	fresh := New(Options{StoredHeader: restored.header, HeaderFile: hf})
	if _, _, older := fresh.StoredOlder(ctx); !older {
		t.Fatal("StoredOlder does not see the restored generation")
	}
}

// Out-of-range splits are refused before the operators are asked for
// anything, each naming the number.
func TestChangeRefusesBadSplits(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newCluster(t, t.TempDir())
	for _, r := range []ChangeRequest{
		{Operation: RotateShares, Shares: -1, Threshold: 2},
		{Operation: RotateShares, Shares: 0, Threshold: 0},
		{Operation: RotateShares, Shares: 3, Threshold: 4},
		{Operation: RotateShares, Shares: 256, Threshold: 2},
		{Operation: RotateShares, Shares: 3, Threshold: -3},
		{Operation: AddShamir, Shares: 3, Threshold: 2},
		{Operation: RemoveShamir},
		{Operation: "explode"},
	} {
		if _, err := s.StartChange(ctx, r, nil); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	if s.PendingChange() != nil {
		t.Fatal("a refused request left a change pending")
	}
}
