package seal

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal/pkcs11"
)

// Bounds on waiting for the HSM. A call into a token that does not answer
// cannot be interrupted; these bound how long the seal's callers wait for
// one (see seal/pkcs11's hang.go for what is left behind).
const (
	// hsmCallTimeout bounds one use of the HSM by the seal: unwrapping
	// the seal key (at unseal, or when a blob's key is not in memory) and
	// wrapping it (init, seal changes). A hung token then leaves the node
	// sealed, saying why, and taking Shamir shares.
	hsmCallTimeout = 30 * time.Second
	// hsmCheckTimeout bounds how long a status request waits for the HSM
	// probe; the probe itself gives up after as long.
	hsmCheckTimeout = 3 * time.Second
	// hsmHealthTTL is how long a probe's outcome is served to status
	// requests before the next one asks the token again.
	hsmHealthTTL = 5 * time.Second
	// probeBackstop is how much longer than hsmCheckTimeout a status
	// request waits for a probe to report.
	probeBackstop = time.Second
	// kekPollInterval is how often an unwrap waiting for the token looks
	// whether Shamir shares have recovered the key meanwhile.
	kekPollInterval = 100 * time.Millisecond
)

// hsmHealth is this node's access to its HSM: the open sessions and the
// outcome of the last attempt to use it. mu is never held across a call
// into the token.
type hsmHealth struct {
	mu      sync.Mutex
	handles map[string]*pkcs11.HSM  // open sessions by key label
	opening map[string]*hsmOpening  // opens in progress by key label
	probes  map[string]*probeStatus // status probes by key label
	err     error                   // last failure, nil after a success
	tried   time.Time
}

// hsmOpening is one pkcs11.Open in progress; callers wanting the same session
// wait for it rather than open another.
type hsmOpening struct {
	started time.Time
	done    chan struct{} // closed when h and err are set
	h       *pkcs11.HSM
	err     error
}

// probeStatus is the status probe of one key: the one in flight, if any,
// and the outcome of the last.
type probeStatus struct {
	running *hsmProbe
	last    *hsmProbe
}

type hsmProbe struct {
	started  time.Time
	done     chan struct{} // closed when err and finished are set
	err      error
	finished time.Time
}

// hsmFor returns an open HSM session for keyLabel on this node's token,
// opening one if needed (one open at a time per key: others wait for it,
// until their ctx ends). A failed open is not retried for
// hsmRetryInterval, so a missing HSM costs little while sealed.
func (s *Seal) hsmFor(ctx context.Context, keyLabel string) (*pkcs11.HSM, error) {
	if s.opts.HSM == nil {
		return nil, errors.New("this node has no seal \"pkcs11\" block configured")
	}
	start := time.Now()
	hh := &s.hsmHealth
	hh.mu.Lock()
	if h := hh.handles[keyLabel]; h != nil {
		hh.mu.Unlock()
		return h, nil
	}
	if op := hh.opening[keyLabel]; op != nil {
		hh.mu.Unlock()
		select {
		case <-op.done:
			return op.h, op.err
		case <-ctx.Done():
			return nil, &pkcs11.HungError{Token: s.cfgFor(keyLabel).Describe(), What: "opening a session", Since: op.started, Waited: time.Since(start), Err: ctx.Err()}
		}
	}
	if hh.err != nil && time.Since(hh.tried) < hsmRetryInterval {
		err := hh.err
		hh.mu.Unlock()
		return nil, err
	}
	op := &hsmOpening{started: time.Now(), done: make(chan struct{})}
	if hh.opening == nil {
		hh.opening = map[string]*hsmOpening{}
	}
	hh.opening[keyLabel] = op
	hh.tried = op.started
	hh.mu.Unlock()

	h, err := pkcs11.Open(ctx, s.cfgFor(keyLabel))

	hh.mu.Lock()
	defer hh.mu.Unlock()
	delete(hh.opening, keyLabel)
	if err != nil {
		hh.err, hh.tried = err, time.Now()
	} else {
		if hh.handles == nil {
			hh.handles = map[string]*pkcs11.HSM{}
		}
		hh.handles[keyLabel] = h
		hh.err = nil
	}
	op.h, op.err = h, err
	close(op.done)
	return h, err
}

// cfgFor is this node's HSM config with keyLabel as the key.
func (s *Seal) cfgFor(keyLabel string) pkcs11.Config {
	cfg := *s.opts.HSM
	cfg.KeyLabel = keyLabel
	return cfg
}

// hsmFailed records err from using h, the session for keyLabel. A session
// the token dropped is closed so that the next use reopens it; one with a
// call that has not returned is kept (its calls are refused as busy until
// the call returns, and a new session would only send the token more).
func (s *Seal) hsmFailed(keyLabel string, h *pkcs11.HSM, err error) {
	hh := &s.hsmHealth
	hh.mu.Lock()
	hh.err, hh.tried = err, time.Now()
	drop := errors.Is(err, pkcs11.ErrUnavailable) && !isHung(err) && hh.handles[keyLabel] == h
	if drop {
		delete(hh.handles, keyLabel)
	}
	hh.mu.Unlock()
	if drop {
		if cerr := h.Close(); cerr != nil {
			s.logger.Warn("closing the HSM session after a failure", "error", cerr)
		}
	}
}

func isHung(err error) bool {
	var h *pkcs11.HungError
	return errors.As(err, &h)
}

// errKEKRecovered ends an unwrap that was still waiting for the token when
// Shamir shares recovered the key.
var errKEKRecovered = errors.New("the seal key was recovered from Shamir shares while the HSM was still being asked for it; it is used instead")

// unwrapWithHSM asks the HSM for the KEK of hd. It returns within
// hsmCallTimeout (or when ctx ends) even if the token does not answer, and
// as soon as the KEK is in memory otherwise (Shamir shares submitted while
// the token keeps the unseal waiting).
func (s *Seal) unwrapWithHSM(ctx context.Context, hd *header) ([]byte, error) {
	e := hd.PKCS11
	ctx, cancel := context.WithTimeout(ctx, hsmCallTimeout)
	defer cancel()
	ctx, stop := s.untilKEK(ctx, hd.kekID())
	defer stop()
	h, err := s.hsmFor(ctx, e.KeyLabel)
	if err == nil {
		var kek []byte
		if kek, err = h.Unwrap(ctx, e.Wrapped); err == nil {
			return kek, nil
		}
		s.hsmFailed(e.KeyLabel, h, err)
	}
	if errors.Is(context.Cause(ctx), errKEKRecovered) {
		return nil, fmt.Errorf("%w (%v)", errKEKRecovered, err)
	}
	return nil, err
}

// untilKEK is ctx, cancelled with errKEKRecovered once the KEK named kekID
// is in memory.
func (s *Seal) untilKEK(ctx context.Context, kekID string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		t := time.NewTicker(kekPollInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			s.mu.Lock()
			_, ok := s.keks[kekID]
			s.mu.Unlock()
			if ok {
				cancel(errKEKRecovered)
				return
			}
		}
	}()
	return ctx, func() { cancel(nil) }
}

// wrapWithHSM wraps kek with the key this node's config names, within
// hsmCallTimeout (or until ctx ends).
func (s *Seal) wrapWithHSM(ctx context.Context, kek []byte) (*hsmEnrollment, error) {
	if s.opts.HSM == nil {
		return nil, errors.New("this node has no seal \"pkcs11\" block configured: add one with the HSM's library, token, PIN file and key label, restart, then retry")
	}
	ctx, cancel := context.WithTimeout(ctx, hsmCallTimeout)
	defer cancel()
	label := s.opts.HSM.KeyLabel
	h, err := s.hsmFor(ctx, label)
	if err != nil {
		return nil, fmt.Errorf("HSM: %w", err)
	}
	wrapped, err := h.Wrap(ctx, kek)
	if err != nil {
		s.hsmFailed(label, h, err)
		return nil, fmt.Errorf("HSM: %w", err)
	}
	// Prove the token can undo what it did before anything depends on it.
	back, err := h.Unwrap(ctx, wrapped)
	if err != nil || string(back) != string(kek) {
		return nil, fmt.Errorf("HSM: the token did not unwrap the key it wrapped: %v", err)
	}
	return &hsmEnrollment{TokenLabel: s.opts.HSM.TokenLabel, KeyLabel: label, Wrapped: wrapped}, nil
}

// checkHSM reports whether the token is reachable and keyLabel usable,
// without ever waiting long or asking the token more than once at a time:
// the outcome of the last probe is served for hsmHealthTTL; after that
// the first request starts a probe (on its own goroutine, bounded by
// hsmCheckTimeout) and every request waits for that same probe, which
// reports after hsmCheckTimeout at most.
func (s *Seal) checkHSM(ctx context.Context, keyLabel string) error {
	hh := &s.hsmHealth
	hh.mu.Lock()
	if hh.probes == nil {
		hh.probes = map[string]*probeStatus{}
	}
	ps := hh.probes[keyLabel]
	if ps == nil {
		ps = &probeStatus{}
		hh.probes[keyLabel] = ps
	}
	if last := ps.last; ps.running == nil && last != nil && time.Since(last.finished) < hsmHealthTTL {
		hh.mu.Unlock()
		return last.err
	}
	p := ps.running
	if p == nil {
		p = &hsmProbe{started: time.Now(), done: make(chan struct{})}
		ps.running = p
		go s.probe(keyLabel, ps, p)
	}
	hh.mu.Unlock()

	// The probe ends by itself after hsmCheckTimeout, saying what kept it
	// waiting; the timer is only a backstop.
	timer := time.NewTimer(time.Until(p.started.Add(hsmCheckTimeout + probeBackstop)))
	defer timer.Stop()
	select {
	case <-p.done:
		return p.err
	case <-timer.C:
	case <-ctx.Done():
	}
	return &pkcs11.HungError{Token: s.cfgFor(keyLabel).Describe(), What: "a probe", Since: p.started, Waited: time.Since(p.started), Err: ctx.Err()}
}

// probe wraps and unwraps a probe with keyLabel and records the outcome.
func (s *Seal) probe(keyLabel string, ps *probeStatus, p *hsmProbe) {
	ctx, cancel := context.WithTimeout(context.Background(), hsmCheckTimeout)
	defer cancel()
	h, err := s.hsmFor(ctx, keyLabel)
	if err == nil {
		if err = h.Check(ctx); err != nil {
			s.hsmFailed(keyLabel, h, err)
		}
	}
	hh := &s.hsmHealth
	hh.mu.Lock()
	defer hh.mu.Unlock()
	p.err, p.finished = err, time.Now()
	ps.running, ps.last = nil, p
	close(p.done)
}

// closeHSMs ends every HSM session. Each Close is bounded: a session with
// a call that has not returned is left to close if it ever does, and its
// error says so.
func (s *Seal) closeHSMs() error {
	hh := &s.hsmHealth
	hh.mu.Lock()
	handles := hh.handles
	hh.handles = nil
	hh.mu.Unlock()
	errs := make([]error, 0, len(handles))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, h := range handles {
		wg.Go(func() {
			if err := h.Close(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
