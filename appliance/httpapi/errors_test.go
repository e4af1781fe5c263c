package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
)

// An error is mapped by the list it is in, wrapped or not; what is in
// none is the request's mistake. (The node's own table: appliance's
// TestStatusOf.)
func TestErrorsStatusOf(t *testing.T) {
	notFound, forbidden, conflict := errors.New("no such thing"), errors.New("may not"), errors.New("not now")
	e := Errors{NotFound: []error{notFound}, Forbidden: []error{forbidden}, Conflict: []error{conflict}}
	for _, tc := range []struct {
		err  error
		want int
	}{
		{notFound, http.StatusNotFound},
		{forbidden, http.StatusForbidden},
		{conflict, http.StatusConflict},
		{errors.New("share 2 was already submitted"), http.StatusBadRequest},
	} {
		if got := e.StatusOf(tc.err); got != tc.want {
			t.Errorf("%v: %d, want %d", tc.err, got, tc.want)
		}
		if got := e.StatusOf(fmt.Errorf("node-3: %w", tc.err)); got != tc.want {
			t.Errorf("wrapped %v: %d, want %d", tc.err, got, tc.want)
		}
	}
	h := &API{errs: e}
	if got := h.bootstrapStatusOf(errors.New("mounting pipeline_jwt: Code: 403. Errors: * permission denied")); got != http.StatusForbidden {
		t.Errorf("bootstrap's permission denied: %d", got)
	}
}
