// Package snapshot reads the appliance's Raft snapshots offline (what one
// holds, whether it is whole, keyed digests of its entries), names the
// scheduled ones in a directory, and runs the schedule that takes them
// (Schedule, on a running node through Node). Nothing but the schedule
// needs a running node, and nothing here needs a key. Building a new
// cluster from a snapshot is snapshot/restore's.
package snapshot

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
	rsnap "github.com/hashicorp/raft-snapshot"
	wrapping "github.com/openbao/go-kms-wrapping/v2"
	baoraft "github.com/openbao/openbao/physical/raft"
	"github.com/openbao/openbao/sdk/v2/plugin/pb"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/seal"
	"google.golang.org/protobuf/proto"
)

// A Raft snapshot is OpenBao's archive (gzip'd tar: meta.json, state.bin
// with every storage entry, SHA256SUMS, and SHA256SUMS.sealed which only
// the cluster's seal opens). The appliance reads it offline to say what it
// is before anything is restored from it: no key is needed, and nothing
// secret is in what it reads (values stay encrypted under the barrier;
// the seal header and the Geo epoch are no secret).

// Info is what `snapshot inspect` says about a snapshot file.
type Info struct {
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

// ErrBad marks a file that is not a whole snapshot.
// StoredBarrierKeysPath is OpenBao's entry of the stored (sealed) barrier
// keys, vault.StoredBarrierKeysPath; its blob carries the seal header.
const StoredBarrierKeysPath = "core/hsm/barrier-unseal-keys"

var ErrBad = errors.New("not a complete snapshot")

// InspectFile inspects the snapshot in path; Created is its
// modification time.
func InspectFile(path string) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := Inspect(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if st, err := f.Stat(); err == nil {
		info.Created = st.ModTime().UTC()
	}
	return info, nil
}

// Inspect reads a snapshot archive to its end and checks its
// checksums; a truncated or altered one is refused (ErrBad).
func Inspect(r io.Reader) (*Info, error) {
	sum := sha256.New()
	counted := &countingReader{r: io.TeeReader(r, sum)}
	var entries int
	var header, epoch []byte
	meta, err := scan(counted, func(e *pb.StorageEntry) {
		entries++
		switch e.Key {
		case StoredBarrierKeysPath:
			header = StoredKeysHeader(e.Value)
		case geo.EpochKey:
			epoch = e.Value
		}
	})
	if err != nil {
		return nil, err
	}
	info := &Info{Index: meta.Index, Term: meta.Term, FileSize: counted.n, SHA256: hex.EncodeToString(sum.Sum(nil)), Entries: entries}
	for _, srv := range meta.Configuration.Servers {
		if srv.Suffrage == 0 {
			info.Voters = append(info.Voters, string(srv.ID))
		}
	}
	if header == nil {
		return nil, fmt.Errorf("%w: it holds no seal header: it is not a snapshot of an initialized appliance cluster", ErrBad)
	}
	if info.Seal, err = seal.ReadHeaderInfo(header); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBad, err)
	}
	if epoch != nil {
		var e struct {
			Number uint64 `json:"number"`
		}
		if json.Unmarshal(epoch, &e) == nil {
			info.Epoch = e.Number
		}
	}
	return info, nil
}

// scan reads a snapshot archive, checks its checksums and calls
// each for every storage entry of its state (as it streams: a snapshot
// may be larger than memory). A truncated or altered archive is
// ErrBad.
func scan(r io.Reader, each func(*pb.StorageEntry)) (*hraft.SnapshotMeta, error) {
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
	meta, err := rsnap.Parse(r, pw)
	pw.CloseWithError(err)
	serr := <-done
	if err != nil {
		return nil, fmt.Errorf("%w: %v; it was cut short or changed since it was taken: use another snapshot", ErrBad, err)
	}
	if serr != nil {
		return nil, fmt.Errorf("%w: its state does not decode (%v)", ErrBad, serr)
	}
	return meta, nil
}

// StoredKeysHeader is the seal header inside OpenBao's stored keys entry
// (a wrapping.BlobInfo whose wrapped key is the header), or nil.
func StoredKeysHeader(v []byte) []byte {
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
