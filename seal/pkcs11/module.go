//go:build cgo

package pkcs11

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/miekg/pkcs11"
)

// module is one loaded, initialized PKCS#11 library.
//
// PKCS#11 allows one C_Initialize per library per process, and C_Finalize
// ends every session of the process on it. So HSM handles on the same
// library share one module, counted by refs, and the library is finalized
// when the last handle closes. The table of modules is the one piece of
// process-wide state in this package, for that reason.
type module struct {
	path  string // canonical path, the key in the table
	ctx   *pkcs11.Ctx
	refs  int  // open HSM handles and calls left running; guarded by the table's lock
	owned bool // we called C_Initialize (false: someone else in the process had, so we never finalize it)

	// mu guards the fields below. It is never held across a call into the
	// library: calls hold the library shared (users > 0) and a
	// re-initialization holds it exclusively (reinit), and waiting for
	// either honours the waiter's context.
	mu      sync.Mutex
	users   int
	reinit  bool
	running map[*call]struct{} // calls into the library that have not returned
	changed chan struct{}      // closed when users, reinit or running change
	// gen counts the re-initializations, so that a handle notices its
	// session went with the old one and opens a new one; written with the
	// library held exclusively, read with it held.
	gen    uint64
	broken bool // the last re-initialization failed (same rule as gen)
}

// call is one run of calls into the library on a goroutine of its own.
type call struct {
	token, what string
	since       time.Time
	finished    bool // it returned
	gaveUp      bool // its caller stopped waiting before it returned
}

// modules is the table of loaded libraries. lock is a one-slot semaphore,
// so that waiting for it can end with a context.
var modules = struct {
	lock   chan struct{}
	byPath map[string]*module
}{lock: make(chan struct{}, 1), byPath: map[string]*module{}}

// loadModule returns the module for the library at path, loading and
// initializing it if no handle has it open. shared reports that it was
// already open.
func loadModule(ctx context.Context, path string) (m *module, shared bool, err error) {
	if path == "" {
		return nil, false, fmt.Errorf("%w: no library path given", ErrLibrary)
	}
	// The same library under two names (a symlink) is one library: dlopen
	// returns the same copy, and one C_Finalize would end both.
	canon, err := filepath.EvalSymlinks(path)
	if err == nil {
		canon, err = filepath.Abs(canon)
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: %s: %v", ErrLibrary, path, unwrapPath(err))
	}
	if st, err := os.Stat(canon); err != nil {
		return nil, false, fmt.Errorf("%w: %s: %v", ErrLibrary, path, unwrapPath(err))
	} else if !st.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%w: %s is not a file", ErrLibrary, path)
	}

	select {
	case modules.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, false, fmt.Errorf("waiting to load %s: %w", path, ctx.Err())
	}
	defer func() { <-modules.lock }()
	if m := modules.byPath[canon]; m != nil {
		m.refs++
		return m, true, nil
	}
	ctx11 := pkcs11.New(canon)
	if ctx11 == nil {
		return nil, false, fmt.Errorf("%w: %s is not a loadable PKCS#11 module", ErrLibrary, path)
	}
	owned := true
	if err := ctx11.Initialize(); err != nil {
		if !isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			ctx11.Destroy()
			return nil, false, fmt.Errorf("%w: %s: C_Initialize: %v", ErrLibrary, path, err)
		}
		owned = false // another part of this process (e.g. OpenBao's own pkcs11 seal) initialized it
	}
	m = &module{path: canon, ctx: ctx11, refs: 1, owned: owned, running: map[*call]struct{}{}}
	modules.byPath[canon] = m
	return m, false, nil
}

// release drops one reference; the last one finalizes and unloads the
// library. Only ever called once no call of that reference is running.
func (m *module) release() {
	modules.lock <- struct{}{}
	defer func() { <-modules.lock }()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(modules.byPath, m.path)
	if m.owned {
		m.ctx.Finalize()
	}
	m.ctx.Destroy()
}

// notify wakes everyone waiting on m.changed; the caller holds m.mu.
func (m *module) notify() {
	if m.changed != nil {
		close(m.changed)
		m.changed = nil
	}
}

// changedCh is closed at the next change; the caller holds m.mu.
func (m *module) changedCh() <-chan struct{} {
	if m.changed == nil {
		m.changed = make(chan struct{})
	}
	return m.changed
}

// hung returns the oldest call that was given up on and has not returned,
// and the oldest call running at all; the caller holds m.mu.
func (m *module) hung() (gaveUp, oldest *call) {
	for c := range m.running {
		if c.gaveUp && (gaveUp == nil || c.since.Before(gaveUp.since)) {
			gaveUp = c
		}
		if oldest == nil || c.since.Before(oldest.since) {
			oldest = c
		}
	}
	return gaveUp, oldest
}

func (c *call) busy() error {
	return &HungError{Token: c.token, What: c.what, Since: c.since, Busy: true}
}

// waited is the error of a caller whose context ended while c kept it
// waiting since start.
func (c *call) waited(ctx context.Context, start time.Time) error {
	return &HungError{Token: c.token, What: c.what, Since: c.since, Waited: time.Since(start), Err: ctx.Err()}
}

// enter holds the library shared (for calls on a session) or exclusively
// (to re-initialize it), waiting until ctx ends. A library with a call
// that was given up on is refused at once.
func (m *module) enter(ctx context.Context, exclusive bool) error {
	start := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		gaveUp, oldest := m.hung()
		if gaveUp != nil {
			return gaveUp.busy()
		}
		if !m.reinit && (!exclusive || m.users == 0) {
			if exclusive {
				m.reinit = true
			} else {
				m.users++
			}
			return nil
		}
		ch := m.changedCh()
		m.mu.Unlock()
		select {
		case <-ch:
			m.mu.Lock()
		case <-ctx.Done():
			m.mu.Lock()
			if oldest != nil {
				return oldest.waited(ctx, start)
			}
			return fmt.Errorf("waiting for the PKCS#11 library %s: %w", m.path, ctx.Err())
		}
	}
}

// exit undoes enter.
func (m *module) exit(exclusive bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if exclusive {
		m.reinit = false
	} else {
		m.users--
	}
	m.notify()
}

// run runs f, which calls into the library, on a goroutine of its own and
// waits for it until ctx ends. after runs on that goroutine once f has
// returned, whether or not the caller still waits (gaveUp says), and
// must release what the caller held for f. If ctx ends first, run returns
// a *HungError with gaveUp true: f's goroutine is left to finish on its
// own, and until it does every new use of the library is refused.
func (m *module) run(ctx context.Context, token, what string, f func() error, after func(err error, gaveUp bool)) (gaveUp bool, err error) {
	c := &call{token: token, what: what, since: time.Now()}
	m.mu.Lock()
	m.running[c] = struct{}{}
	m.mu.Unlock()
	res := make(chan error, 1)
	go func() {
		err := f()
		m.mu.Lock()
		c.finished = true
		gaveUp := c.gaveUp
		delete(m.running, c)
		m.notify()
		m.mu.Unlock()
		after(err, gaveUp)
		res <- err
	}()
	select {
	case err := <-res:
		return false, err
	case <-ctx.Done():
	}
	m.mu.Lock()
	if c.finished {
		m.mu.Unlock()
		return false, <-res
	}
	c.gaveUp = true
	m.notify()
	m.mu.Unlock()
	return true, c.waited(ctx, c.since)
}

// reinitialize finalizes and initializes the library again. Modules such
// as SoftHSM list their tokens only in C_Initialize, so a token that came
// back after being removed is invisible until then. Every session on the
// module ends; the other handles open new ones on their next call. The
// caller holds a reference; if it gives up (gaveUp), the reference goes
// with the call, which releases it when it returns.
func (m *module) reinitialize(ctx context.Context) (gaveUp bool, err error) {
	if err := m.enter(ctx, true); err != nil {
		return false, err
	}
	return m.run(ctx, "the PKCS#11 library "+m.path, "a re-initialization", func() error {
		m.gen++
		m.ctx.Finalize()
		err := m.ctx.Initialize()
		m.broken = err != nil && !isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)
		if m.broken {
			return fmt.Errorf("%w: %s: C_Initialize: %v", ErrUnavailable, m.path, err)
		}
		return nil
	}, func(_ error, gaveUp bool) {
		m.exit(true)
		if gaveUp {
			m.release()
		}
	})
}
