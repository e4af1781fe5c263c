package httpapi

import (
	"fmt"
	"net/http"

	"github.com/hashicorp/go-hclog"
)

// geoGuard holds back every answer below 500 written through w that the
// node cannot vouch for when it is ready (see Node.GeoLease): the client
// gets 503 instead. Without Geo it is w.
func (h *API) geoGuard(w http.ResponseWriter) http.ResponseWriter {
	if _, geo := h.n.GeoLease(); !geo {
		return w
	}
	return &leaseWriter{ResponseWriter: w, lease: func() string { r, _ := h.n.GeoLease(); return r }, logger: h.logger}
}

// leaseWriter holds back every answer below 500 that the node cannot
// vouch for (lease says why, "" when it can): the client gets 503
// instead, outcome unknown.
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
			WriteError(w.ResponseWriter, http.StatusServiceUnavailable, fmt.Errorf("%w: %s; if it was a write it may or may not have been applied on a site that is being replaced: check the promoted site", ErrOutcomeUnknown, reason))
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
