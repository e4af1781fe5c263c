package appliance

import (
	"fmt"
	"net/http"

	"github.com/hashicorp/go-hclog"
)

// geoLease is why this node must not answer API requests now because of
// its Geo epoch ("" if it may; always "" without Geo).
func (a *Appliance) geoLease() string {
	if a.geo == nil {
		return ""
	}
	return a.geo.Lease()
}

// geoGuard holds back every answer below 500 written through w that the node
// cannot vouch for when it is ready (see geoLease): the client gets 503
// instead. Without Geo it is w.
func (a *Appliance) geoGuard(w http.ResponseWriter) http.ResponseWriter {
	if a.geo == nil {
		return w
	}
	return &leaseWriter{ResponseWriter: w, lease: a.geoLease, logger: a.logger}
}

// leaseWriter is geoGuard's writer; lease is a.geoLease.
type leaseWriter struct {
	http.ResponseWriter
	lease   func() string
	logger  hclog.Logger
	decided bool
	refused bool
}

func (w *leaseWriter) WriteHeader(code int) {
	if w.decided {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.decided = true
	if code >= 200 && code < 500 { // a 404 or a check-and-set's 400 tells of the state too
		if reason := w.lease(); reason != "" {
			w.refused = true
			h := w.ResponseWriter.Header()
			for k := range h {
				delete(h, k)
			}
			w.logger.Warn("geo: an answer held back: the node cannot vouch for it", "reason", reason)
			// An answer ready when the node can no longer vouch for it
			// (fenced, or its lease lapsed while the request ran).
			writeError(w.ResponseWriter, http.StatusServiceUnavailable, fmt.Errorf("%w: %s; if it was a write it may or may not have been applied on a site that is being replaced: check the promoted site", ErrOutcomeUnknown, reason))
			return
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *leaseWriter) Write(b []byte) (int, error) {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
	if w.refused {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets streamed answers through (once they were let out).
func (w *leaseWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok && w.decided && !w.refused {
		f.Flush()
	}
}

func (w *leaseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
