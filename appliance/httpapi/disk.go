package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/openbao/openbao/sdk/v2/physical"
)

// The data dir's guard (in package appliance) refuses API writes before
// the disk is full; diskGate is where they are refused.

// raftMaxEntrySize is the most one Raft log entry, and so one stored
// value, may hold: OpenBao's default max_entry_size (2 x go-raftchunking's
// ChunkSize), which the appliance does not change.
const raftMaxEntrySize = 1 << 20

// countingBody counts the bytes read from a request body.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

// ErrDiskFull refuses a write while the data dir is nearly full.
var ErrDiskFull = errors.New("the data directory is nearly full: writes are refused until space is freed on it; reads still work")

// diskGate answers API writes with 507 while the disk is low, and turns
// OpenBao's own ENOSPC answers (a write that raced the guard) into the
// same 507, and its 500 for a value over Raft's entry limit into 413.
func (h *API) diskGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, isAPI := strings.CutPrefix(r.URL.Path, "/v1/")
		write := r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions && r.Method != "LIST"
		if !isAPI || !write || gateExempt[strings.TrimSuffix(path, "/")] {
			next.ServeHTTP(w, r)
			return
		}
		if st := h.n.CheckDisk(); st.Low {
			writeError(w, http.StatusInsufficientStorage, fmt.Errorf("%w (%s: %d bytes free, %d needed)", ErrDiskFull, h.dataDir, st.FreeBytes, st.MinFreeBytes))
			return
		}
		held := &heldAnswer{w: w, header: http.Header{}}
		body := &countingBody{ReadCloser: r.Body}
		r.Body = body
		next.ServeHTTP(held, r)
		switch {
		case held.code == http.StatusInternalServerError && strings.Contains(held.body.String(), "no space left on device"):
			// Faster than the guard.
			h.n.DiskFull()
			writeError(w, http.StatusInsufficientStorage, fmt.Errorf("%w (%s: no space left on device)", ErrDiskFull, h.dataDir))
		case held.code == http.StatusInternalServerError && strings.Contains(held.body.String(), physical.ErrValueTooLarge):
			// OpenBao answers 500 and names the key's size as the
			// value's ("got 156 bytes").
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("the value is too large to store: one stored entry is at most %d bytes (Raft's max_entry_size), and this request's body was %d bytes; store less under one key (split it over several)", raftMaxEntrySize, body.n))
		default:
			held.release()
		}
	})
}
