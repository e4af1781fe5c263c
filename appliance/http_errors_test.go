package appliance

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/openbao/openbao/sdk/v2/logical"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo/reconciler"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// Every error the handlers meet has one status, wrapped or not; what is
// not the appliance's own is the request's mistake (see httpapi.Errors;
// GitLab's bootstrap: httpapi's TestErrorsStatusOf).
func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{ErrNoGeo, http.StatusNotFound},
		{ErrUnauthorized, http.StatusForbidden},
		{ErrGeoUnauthorized, http.StatusForbidden},
		{ErrResetRefused, http.StatusForbidden},
		{logical.ErrPermissionDenied, http.StatusForbidden},
		{ErrAlreadyInitialized, http.StatusConflict},
		{ErrInitRunning, http.StatusConflict},
		{reconciler.ErrFenced, http.StatusConflict},
		{ErrNotActive, http.StatusConflict},
		{ErrGeoNotActive, http.StatusConflict},
		{reconciler.ErrPreflight, http.StatusConflict},
		{seal.ErrChangePending, http.StatusConflict},
		{seal.ErrNoChange, http.StatusConflict},
		{errors.New("share 2 was already submitted"), http.StatusBadRequest},
	} {
		if got := httpErrors.StatusOf(tc.err); got != tc.want {
			t.Errorf("%v: %d, want %d", tc.err, got, tc.want)
		}
		if got := httpErrors.StatusOf(fmt.Errorf("node-3: %w", tc.err)); got != tc.want {
			t.Errorf("wrapped %v: %d, want %d", tc.err, got, tc.want)
		}
	}
}
