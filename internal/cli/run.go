// Package cli is the gitlab-secrets-appliance command line: the command
// table (commands.go) and one file per command, each parsing its flags,
// calling the package that does the work, printing, and choosing a
// documented exit code (exit.go).
package cli

import (
	"errors"
	"fmt"
	"os"
)

// Run executes the command line args (args[0] is the program) and returns
// its documented exit code.
func Run(args []string) int {
	err := newApp().Run(args)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "Error:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "Error:", err)
	return exitUsage
}
