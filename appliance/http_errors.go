package appliance

import (
	"errors"
	"net/http"
	"strings"

	"github.com/openbao/openbao/sdk/v2/logical"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo/reconciler"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
)

// statusOf is the one mapping of the appliance's errors to HTTP status
// codes, for /appliance/v1 and the bao-compatible endpoints alike (a share
// sent through either door gets the same answer): who may not (403), what
// the node's or the cluster's state refuses now (409), what this node does
// not have (404); anything else is the request's own mistake (400).
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrNoGeo):
		return http.StatusNotFound
	case errors.Is(err, ErrUnauthorized), errors.Is(err, ErrGeoUnauthorized), errors.Is(err, ErrResetRefused),
		errors.Is(err, logical.ErrPermissionDenied):
		return http.StatusForbidden
	case errors.Is(err, ErrAlreadyInitialized), errors.Is(err, ErrInitRunning), errors.Is(err, reconciler.ErrFenced),
		errors.Is(err, ErrNotActive), errors.Is(err, ErrGeoNotActive), errors.Is(err, reconciler.ErrPreflight),
		errors.Is(err, seal.ErrChangePending), errors.Is(err, seal.ErrNoChange):
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

// bootstrapStatusOf is statusOf for GitLab's bootstrap, whose steps carry
// OpenBao's own answers: a "permission denied" among them is the token's.
func bootstrapStatusOf(err error) int {
	if strings.Contains(err.Error(), "permission denied") {
		return http.StatusForbidden
	}
	return statusOf(err)
}
