package appliance

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	hraft "github.com/hashicorp/raft"
	snapshot "github.com/hashicorp/raft-snapshot"
	wrapping "github.com/openbao/go-kms-wrapping/v2"
	baoraft "github.com/openbao/openbao/physical/raft"
	"github.com/openbao/openbao/sdk/v2/plugin/pb"
	"github.com/openbao/openbao/vault"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
	"google.golang.org/protobuf/proto"
)

// A Raft snapshot is OpenBao's archive (gzip'd tar: meta.json, state.bin
// with every storage entry, SHA256SUMS, and SHA256SUMS.sealed which only
// the cluster's seal opens). The appliance reads it offline to say what it
// is before anything is restored from it: no key is needed, and nothing
// secret is in what it reads (values stay encrypted under the barrier;
// the seal header and the Geo epoch are no secret).

// SnapshotInfo is what `snapshot inspect` says about a snapshot file.
type SnapshotInfo struct {
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	// FileSize and SHA256 are the file's; Entries the storage entries in
	// it (every secret, token, policy... each one entry, encrypted).
	FileSize int64  `json:"file_size"`
	SHA256   string `json:"sha256"`
	Entries  int    `json:"entries"`
	// Seal is the seal header of the snapshot's time: the cluster it
	// belongs to and the seal generation.
	Seal    seal.HeaderInfo `json:"seal"`
	Voters  []string        `json:"voters"`
	Epoch   uint64          `json:"geo_epoch"`
	Created time.Time       `json:"created,omitzero"`
}

// ErrBadSnapshot marks a file that is not a whole snapshot.
var ErrBadSnapshot = errors.New("not a complete snapshot")

// InspectSnapshotFile inspects the snapshot in path; Created is its
// modification time.
func InspectSnapshotFile(path string) (*SnapshotInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := InspectSnapshot(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if st, err := f.Stat(); err == nil {
		info.Created = st.ModTime().UTC()
	}
	return info, nil
}

// InspectSnapshot reads a snapshot archive to its end and checks its
// checksums; a truncated or altered one is refused (ErrBadSnapshot).
func InspectSnapshot(r io.Reader) (*SnapshotInfo, error) {
	sum := sha256.New()
	counted := &countingReader{r: io.TeeReader(r, sum)}
	var entries int
	var header, epoch []byte
	meta, err := scanSnapshot(counted, func(e *pb.StorageEntry) {
		entries++
		switch e.Key {
		case vault.StoredBarrierKeysPath:
			header = storedKeysHeader(e.Value)
		case geoEpochKey:
			epoch = e.Value
		}
	})
	if err != nil {
		return nil, err
	}
	info := &SnapshotInfo{Index: meta.Index, Term: meta.Term, FileSize: counted.n, SHA256: hex.EncodeToString(sum.Sum(nil)), Entries: entries}
	for _, srv := range meta.Configuration.Servers {
		if srv.Suffrage == 0 {
			info.Voters = append(info.Voters, string(srv.ID))
		}
	}
	if header == nil {
		return nil, fmt.Errorf("%w: it holds no seal header: it is not a snapshot of an initialized appliance cluster", ErrBadSnapshot)
	}
	if info.Seal, err = seal.ReadHeaderInfo(header); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	if epoch != nil {
		var e Epoch
		if json.Unmarshal(epoch, &e) == nil {
			info.Epoch = e.Number
		}
	}
	return info, nil
}

// scanSnapshot reads a snapshot archive, checks its checksums and calls
// each for every storage entry of its state (as it streams: a snapshot
// may be larger than memory). A truncated or altered archive is
// ErrBadSnapshot.
func scanSnapshot(r io.Reader, each func(*pb.StorageEntry)) (*hraft.SnapshotMeta, error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		dr := baoraft.NewDelimitedReader(pr, 64<<20)
		var err error
		for {
			var e pb.StorageEntry
			if err = dr.ReadMsg(&e); err != nil {
				break
			}
			each(&e)
		}
		io.Copy(io.Discard, pr) // let Parse finish whatever happened here
		if errors.Is(err, io.EOF) {
			err = nil
		}
		done <- err
	}()
	meta, err := snapshot.Parse(r, pw)
	pw.CloseWithError(err)
	serr := <-done
	if err != nil {
		return nil, fmt.Errorf("%w: %v; it was cut short or changed since it was taken: use another snapshot", ErrBadSnapshot, err)
	}
	if serr != nil {
		return nil, fmt.Errorf("%w: its state does not decode (%v)", ErrBadSnapshot, serr)
	}
	return meta, nil
}

// storedKeysHeader is the seal header inside OpenBao's stored keys entry
// (a wrapping.BlobInfo whose wrapped key is the header), or nil.
func storedKeysHeader(v []byte) []byte {
	blob := &wrapping.BlobInfo{}
	if err := proto.Unmarshal(v, blob); err != nil || blob.KeyInfo == nil {
		return nil
	}
	return blob.KeyInfo.WrappedKey
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
