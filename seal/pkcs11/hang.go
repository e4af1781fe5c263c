package pkcs11

import (
	"errors"
	"fmt"
	"time"
)

// A PKCS#11 call cannot be interrupted: a token that stops answering keeps
// the calling thread inside the library for as long as it likes. So every
// use of the HSM runs its calls on a goroutine of their own and waits for
// them only as long as its context allows. A caller that gives up leaves
// that goroutine behind (once: it is still the session's), and until its
// call returns every new use of the library is refused at once ("busy")
// rather than queued behind it or sent to the token as another call that
// would not return either.

// ErrBusy means a call to the token has not returned and was given up
// on; no new call is made until it returns. It is also ErrUnavailable.
var ErrBusy = errors.New("busy")

// HungError says that the token did not answer in time. errors.Is finds
// ErrUnavailable in it, ErrBusy when the call was refused at once,
// and the context's error when the caller's context ended.
type HungError struct {
	Token string    // which token and key (Describe), never the PIN
	What  string    // the call that has not returned: "an unwrap", "a probe", ...
	Since time.Time // when it was made
	// Busy: this use was refused at once, because that call had been given
	// up on already; otherwise this caller waited for it for Waited.
	Busy   bool
	Waited time.Duration
	Err    error // the caller's context error, if it ended
}

func (e *HungError) Error() string {
	since := e.Since.UTC().Format(time.RFC3339)
	if e.Busy {
		return fmt.Sprintf("%v: %s: busy: a call to the token (%s) has not returned since %s", ErrUnavailable, e.Token, e.What, since)
	}
	return fmt.Sprintf("%v: %s did not answer within %s (%s has been waiting since %s)", ErrUnavailable, e.Token, roundWait(e.Waited), e.What, since)
}

// Is matches ErrUnavailable always and ErrBusy for a refused use.
func (e *HungError) Is(target error) bool {
	return target == ErrUnavailable || e.Busy && target == ErrBusy
}

func (e *HungError) Unwrap() error { return e.Err }

func roundWait(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}
