// Command gitlab-secrets-appliance runs and operates a GitLab secrets
// appliance node: an embedded OpenBao server on Raft storage.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	os.Exit(run(os.Args))
}

// run executes the CLI and maps its outcome to a documented exit code.
func run(args []string) int {
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
