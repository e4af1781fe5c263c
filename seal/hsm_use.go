package seal

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// hsmHealth is the outcome of the last attempt to use the HSM.
type hsmHealth struct {
	mu      sync.Mutex
	handles map[string]*HSM // open sessions by key label
	err     error           // last failure, nil after a success
	tried   time.Time
}

// hsmFor returns an open HSM session for keyLabel on this node's token,
// opening one if needed. A failed open is not retried for
// hsmRetryInterval, so a missing HSM costs little while sealed.
func (s *Seal) hsmFor(ctx context.Context, keyLabel string) (*HSM, error) {
	if s.opts.HSM == nil {
		return nil, errors.New("this node has no seal \"pkcs11\" block configured")
	}
	hh := &s.hsmHealth
	hh.mu.Lock()
	defer hh.mu.Unlock()
	if h := hh.handles[keyLabel]; h != nil {
		return h, nil
	}
	if hh.err != nil && time.Since(hh.tried) < hsmRetryInterval {
		return nil, hh.err
	}
	cfg := *s.opts.HSM
	cfg.KeyLabel = keyLabel
	hh.tried = time.Now()
	h, err := OpenHSM(ctx, cfg)
	if err != nil {
		hh.err = err
		return nil, err
	}
	if hh.handles == nil {
		hh.handles = map[string]*HSM{}
	}
	hh.handles[keyLabel] = h
	hh.err = nil
	return h, nil
}

// hsmFailed records err from using the session for keyLabel; a session the
// token dropped is closed so that the next use reopens it.
func (s *Seal) hsmFailed(keyLabel string, err error) {
	hh := &s.hsmHealth
	hh.mu.Lock()
	defer hh.mu.Unlock()
	hh.err, hh.tried = err, time.Now()
	if errors.Is(err, ErrHSMUnavailable) {
		if h := hh.handles[keyLabel]; h != nil {
			h.Close()
			delete(hh.handles, keyLabel)
		}
	}
}

func (s *Seal) unwrapWithHSM(ctx context.Context, e *hsmEnrollment) ([]byte, error) {
	h, err := s.hsmFor(ctx, e.KeyLabel)
	if err != nil {
		return nil, err
	}
	kek, err := h.Unwrap(ctx, e.Wrapped)
	if err != nil {
		s.hsmFailed(e.KeyLabel, err)
		return nil, err
	}
	return kek, nil
}

// wrapWithHSM wraps kek with the key this node's config names.
func (s *Seal) wrapWithHSM(ctx context.Context, kek []byte) (*hsmEnrollment, error) {
	if s.opts.HSM == nil {
		return nil, errors.New("this node has no seal \"pkcs11\" block configured: add one with the HSM's library, token, PIN file and key label, restart, then retry")
	}
	label := s.opts.HSM.KeyLabel
	h, err := s.hsmFor(ctx, label)
	if err != nil {
		return nil, fmt.Errorf("HSM: %w", err)
	}
	wrapped, err := h.Wrap(ctx, kek)
	if err != nil {
		s.hsmFailed(label, err)
		return nil, fmt.Errorf("HSM: %w", err)
	}
	// Prove the token can undo what it did before anything depends on it.
	back, err := h.Unwrap(ctx, wrapped)
	if err != nil || string(back) != string(kek) {
		return nil, fmt.Errorf("HSM: the token did not unwrap the key it wrapped: %v", err)
	}
	return &hsmEnrollment{TokenLabel: s.opts.HSM.TokenLabel, KeyLabel: label, Wrapped: wrapped}, nil
}

// hsmCheckTimeout bounds a status request's HSM probe: a hung token makes
// status say so rather than hang.
const hsmCheckTimeout = 3 * time.Second

// checkHSM reports whether the token is reachable and keyLabel usable now.
// The probe gets the timeout as its context too, so a goroutine stuck
// behind a hung token call gives up instead of piling up.
func (s *Seal) checkHSM(ctx context.Context, keyLabel string) error {
	ctx, cancel := context.WithTimeout(ctx, hsmCheckTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		h, err := s.hsmFor(ctx, keyLabel)
		if err == nil {
			if err = h.Check(ctx); err != nil && ctx.Err() == nil {
				s.hsmFailed(keyLabel, err)
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		if ctx.Err() != nil {
			return fmt.Errorf("%w: the token did not answer within %s", ErrHSMUnavailable, hsmCheckTimeout)
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: the token did not answer within %s", ErrHSMUnavailable, hsmCheckTimeout)
	}
}

// closeHSMs ends every HSM session.
func (s *Seal) closeHSMs() error {
	hh := &s.hsmHealth
	hh.mu.Lock()
	defer hh.mu.Unlock()
	var errs []error
	for label, h := range hh.handles {
		errs = append(errs, h.Close())
		delete(hh.handles, label)
	}
	return errors.Join(errs...)
}
