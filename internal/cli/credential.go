package cli

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// credential is the user (and groups) a node runs as, for `config
// validate --user`.
type credential struct {
	name   string
	uid    int
	gid    int
	groups []int
}

func (c *credential) String() string { return fmt.Sprintf("user %s (uid %d)", c.name, c.uid) }

// lookupCredential reads USER or USER:GROUP[:GROUP...] as chpst -u does
// (the Omnibus run script's form): the first group is the primary one,
// all of them the supplementary groups; with USER alone, the user's
// primary group and the groups that list it. Names or numbers.
func lookupCredential(spec string) (*credential, error) {
	parts := strings.Split(spec, ":")
	u, err := user.Lookup(parts[0])
	if err != nil {
		if u, err = user.LookupId(parts[0]); err != nil {
			return nil, fmt.Errorf("no user %q", parts[0])
		}
	}
	c := &credential{name: u.Username}
	c.uid, _ = strconv.Atoi(u.Uid)
	ids := []string{u.Gid}
	if len(parts) > 1 {
		ids = parts[1:]
	} else if more, err := u.GroupIds(); err == nil {
		ids = append(ids, more...)
	}
	for i, g := range ids {
		n, err := strconv.Atoi(g)
		if err != nil {
			grp, lerr := user.LookupGroup(g)
			if lerr != nil {
				return nil, fmt.Errorf("no group %q", g)
			}
			n, _ = strconv.Atoi(grp.Gid)
		}
		if i == 0 {
			c.gid = n
		}
		c.groups = append(c.groups, n)
	}
	return c, nil
}

var credMu sync.Mutex

// do runs f with c as the process's effective user and groups, then
// returns to its own. Root only (its saved user ID lets it return), and
// not needed when the process already is c's user. syscall's Setresuid
// and the like change every thread of the process.
func (c *credential) do(f func()) error {
	euid := os.Geteuid()
	if euid == c.uid {
		f()
		return nil
	}
	if euid != 0 {
		return fmt.Errorf("checking the paths as %s needs root (this is uid %d): run config validate as root or as that user", c, euid)
	}
	credMu.Lock()
	defer credMu.Unlock()
	egid := os.Getegid()
	groups, err := syscall.Getgroups()
	if err != nil {
		return err
	}
	if err := errors.Join(syscall.Setgroups(c.groups), syscall.Setresgid(-1, c.gid, -1)); err != nil {
		return fmt.Errorf("taking the groups of %s: %w", c, err)
	}
	if err := syscall.Setresuid(-1, c.uid, -1); err != nil {
		return errors.Join(fmt.Errorf("becoming %s: %w", c, err), syscall.Setresgid(-1, egid, -1), syscall.Setgroups(groups))
	}
	f()
	if err := errors.Join(syscall.Setresuid(-1, euid, -1), syscall.Setresgid(-1, egid, -1), syscall.Setgroups(groups)); err != nil {
		// Half-returned credentials must not run anything else.
		fmt.Fprintln(os.Stderr, "cannot return to root after checking the paths:", err)
		os.Exit(exitFailed)
	}
	return nil
}
