package appliance

import (
	"context"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/datadir"
)

// The disk guard (datadir.DiskGuard) refuses API writes before the data
// dir is full (httpapi's diskGate asks it); the node looks every
// datadir.DiskPoll and logs each change.

// checkDisk looks at the free space and logs a change.
func (a *Appliance) checkDisk() {
	changed, err := a.disk.Look()
	if err != nil || !changed {
		return
	}
	if st := a.disk.Status(); st.Low {
		a.logger.Error("the data dir is nearly full: API writes are refused until space is freed; reads go on",
			"data_dir", a.cfg.DataDir, "free_bytes", st.FreeBytes, "min_free_bytes", st.MinFreeBytes)
	} else {
		a.logger.Info("space is back in the data dir: API writes are accepted again", "free_bytes", st.FreeBytes)
	}
}

// watchDisk runs the guard until ctx ends.
func (a *Appliance) watchDisk(ctx context.Context) {
	t := time.NewTicker(datadir.DiskPoll)
	defer t.Stop()
	for {
		a.checkDisk()
		a.disk.KeepRoom()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
