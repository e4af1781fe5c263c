package seal

import (
	"errors"
	"fmt"
	"io"
	"os"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/atomicfile"
)

// maxHeaderFile bounds what loadHeaderFile reads: a header is a few KB
// (its history grows by about 70 bytes per seal change).
const maxHeaderFile = 4 << 20

// loadHeaderFile reads the header recorded at path; nil if there is none.
func loadHeaderFile(path string) (*header, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxHeaderFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxHeaderFile {
		return nil, fmt.Errorf("%s is larger than %d bytes: it is not a seal header", path, maxHeaderFile)
	}
	return decodeHeader(b)
}

// saveHeaderFile writes h to path atomically and durably: a crash leaves
// the old file or the new one, never a torn one.
func saveHeaderFile(path string, h *header) error {
	if path == "" {
		return nil
	}
	return atomicfile.WriteFile(path, h.encode(), 0o600, -1, -1)
}

// ReadHeaderFile reads the seal header recorded at path, for an offline
// check of a stopped node's data dir: its cluster id and generation.
// present is false when there is no file.
func ReadHeaderFile(path string) (cluster string, generation uint32, present bool, err error) {
	if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
		return "", 0, false, nil
	}
	h, err := loadHeaderFile(path)
	if err != nil {
		return "", 0, true, err
	}
	if h == nil {
		return "", 0, true, errors.New("empty")
	}
	return h.Cluster, h.Gen, true, nil
}
