// Package datadir owns a node's data directory: its layout, the lock a
// running node holds on it, the offline check of its files (what a start
// refuses, and the recovery it names), setting damaged files aside, and
// the durable writes of the offline commands (geo promote --force, geo
// rejoin, restore) into it.
package datadir

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	hraft "github.com/hashicorp/raft"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/atomicfile"
)

// GeoEpochFile, in the data dir, holds this node's Geo epoch.
const GeoEpochFile = "geo-epoch.json"

// SealHeaderFile, in the data dir, records the newest seal header this
// node has seen (see seal.Options.HeaderFile). It is not in Raft, so a
// restored snapshot cannot roll it back.
const SealHeaderFile = "seal-header.json"

// InitMarker, in the data dir, stands while an init runs (see Init). It
// holds the time the init started (RFC 3339). Init removes it before the
// answer leaves (or withholds the answer), so a marker that stands means
// the answer never left this node: nobody holds the cluster's shares,
// recovery keys or root token, and no client can have written anything.
const InitMarker = "init-in-progress"

// ReadEpochFile is the epoch in dir's GeoEpochFile; none is epoch 0.
func ReadEpochFile(dir string) (geo.Epoch, error) {
	var e geo.Epoch
	b, err := os.ReadFile(filepath.Join(dir, GeoEpochFile))
	if errors.Is(err, os.ErrNotExist) {
		return e, nil
	}
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("%s: %w; restore it from a backup, or run `geo rejoin`", filepath.Join(dir, GeoEpochFile), err)
	}
	return e, nil
}

// WriteEpochFile writes e into dir atomically and durably.
func WriteEpochFile(dir string, e geo.Epoch) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	return WriteDurable(filepath.Join(dir, GeoEpochFile), append(b, '\n'), 0o600)
}

// WriteDurable writes path atomically and durably, owned like its
// directory when root writes it (see OwnLikeDir).
func WriteDurable(path string, data []byte, perm os.FileMode) error {
	uid, gid, err := dirOwner(filepath.Dir(path))
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, perm, uid, gid)
}

// dirOwner is the owner to give what root writes in dir for an offline
// command (gitlab-ctl runs them as root) on a data dir the service user
// owns: the appliance must be able to read, and OpenBao to delete, what
// it wrote. -1, -1 when there is nothing to change.
func dirOwner(dir string) (uid, gid int, err error) {
	if os.Geteuid() != 0 {
		return -1, -1, nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return -1, -1, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return -1, -1, nil
	}
	return int(st.Uid), int(st.Gid), nil
}

// OwnLikeDir gives path the owner dirOwner gives.
func OwnLikeDir(path, dir string) error {
	uid, gid, err := dirOwner(dir)
	if err != nil || uid == -1 {
		return err
	}
	return os.Lchown(path, uid, gid)
}

// NeedsConfirmationError refuses an offline command that was not
// confirmed (exit code 64 in the CLI): Message says what to add.
type NeedsConfirmationError struct{ Message string }

func (e *NeedsConfirmationError) Error() string { return e.Message }

// StopFirst turns a held data dir into what to do.
func StopFirst(err error) error {
	var inUse *InUseError
	if errors.As(err, &inUse) {
		return fmt.Errorf("%w: stop the appliance on this node first (systemctl stop gitlab-secrets-appliance, or gitlab-ctl stop gitlab-secrets-appliance)", err)
	}
	return err
}

// WritePeersJSON writes conf in the format OpenBao reads at start
// (raft.ReadConfigJSON).
func WritePeersJSON(path string, conf hraft.Configuration) error {
	type entry struct {
		ID       string `json:"id"`
		Address  string `json:"address"`
		NonVoter bool   `json:"non_voter"`
	}
	var out []entry
	for _, s := range conf.Servers {
		out = append(out, entry{ID: string(s.ID), Address: string(s.Address), NonVoter: s.Suffrage != hraft.Voter})
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return WriteDurable(path, append(b, '\n'), 0o600)
}
