package httpapi

import (
	"errors"
	"net/http"
	"strings"
)

// Errors sorts the node's own errors by the HTTP status they answer;
// New takes them, so that the one mapping (statusOf) lives here and the
// errors where they are made.
type Errors struct {
	NotFound  []error // what this node does not have
	Forbidden []error // who may not
	Conflict  []error // what the node's or the cluster's state refuses now
	// The restart's own refusals: the token's (403) and the node's state
	// (409); anything else it meets is a 503 to retry.
	RestartForbidden, RestartConflict []error
}

// StatusOf is the one mapping of the appliance's errors to HTTP status
// codes, for /appliance/v1 and the bao-compatible endpoints alike (a share
// sent through either door gets the same answer): who may not (403), what
// the node's or the cluster's state refuses now (409), what this node does
// not have (404); anything else is the request's own mistake (400).
func (e Errors) StatusOf(err error) int {
	switch {
	case isAny(err, e.NotFound):
		return http.StatusNotFound
	case isAny(err, e.Forbidden):
		return http.StatusForbidden
	case isAny(err, e.Conflict):
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

// restartStatusOf is the status of a refused restart, 0 for an error to
// retry.
func (e Errors) restartStatusOf(err error) int {
	switch {
	case isAny(err, e.RestartForbidden):
		return http.StatusForbidden
	case isAny(err, e.RestartConflict):
		return http.StatusConflict
	}
	return 0
}

func isAny(err error, targets []error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

func (h *API) statusOf(err error) int { return h.errs.StatusOf(err) }

// bootstrapStatusOf is statusOf for GitLab's bootstrap, whose steps carry
// OpenBao's own answers: a "permission denied" among them is the token's.
func (h *API) bootstrapStatusOf(err error) int {
	if strings.Contains(err.Error(), "permission denied") {
		return http.StatusForbidden
	}
	return h.statusOf(err)
}
