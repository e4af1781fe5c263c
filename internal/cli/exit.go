package cli

// Exit codes, the same for every command; `--help` prints them.
const (
	exitOK          = 0  // success; for status: unsealed and serving
	exitFailed      = 1  // the operation failed; the message says why
	exitSealed      = 2  // status: the node answered but is sealed or not initialized
	exitConfig      = 3  // the configuration is invalid, its data_dir is in use, or the FIPS self-check failed; nothing was started
	exitUnreachable = 4  // no appliance answered at --address (or not within --timeout)
	exitDamaged     = 5  // a file of the data dir is damaged or missing (server refused to start; check found it)
	exitUsage       = 64 // unknown command or flag, a missing argument, or a confirmation missing
	exitRestart     = 75 // server: stopped because a restart was asked for; the supervisor starts it again
)

const exitCodesHelp = `EXIT CODES:
   0   success; for status: unsealed and serving
   1   the operation failed; the message says why
   2   status: the node answered but is sealed or not initialized
   3   the configuration is invalid, or its data_dir is in use by another node, or a FIPS build
       runs with FIPS 140-3 mode off (or any build with GODEBUG=fips140=only); nothing was started
   4   no appliance answered at --address (or not within --timeout)
   5   a file of the data dir is damaged or missing: server refused to start (the message names the
       file and what to do; nothing was started or changed), or check found it
   64  unknown command or flag, or a missing argument, or a missing confirmation (geo promote
       --force without --fenced-site, geo rejoin or snapshot restore without --yes)
   75  server: the node stopped because a restart was asked for (rolling-restart); its
       supervisor (systemd, runit) starts it again`

// exitError carries an exit code out of a command's action.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return "exit"
	}
	return e.err.Error()
}

func exit(code int, err error) error { return &exitError{code: code, err: err} }
