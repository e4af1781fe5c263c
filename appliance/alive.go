package appliance

// Alive returns once the OpenBao core has taken its state lock (for
// reading) and let it go. Every request, unseal, seal and change of
// leadership takes that lock, so a core wedged with it held never
// answers: Alive then never returns (the systemd watchdog's pings, sent
// each time it returns, stop). It waits, too, while the lock is held for
// a legitimate while: an unseal waiting for the HSM (up to 30 s), the
// setup of a node becoming active. It cannot be interrupted: call it on a
// goroutine of its own, one call at a time.
func (a *Appliance) Alive() {
	a.core.StandbyStates() // c.stateLock.RLock, read, RUnlock
}
