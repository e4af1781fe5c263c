// Command gitlab-secrets-appliance runs and operates a GitLab secrets
// appliance node: an embedded OpenBao server on Raft storage. The commands
// are in internal/cli.
package main

import (
	"os"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/internal/cli"
)

func main() {
	os.Exit(cli.Run(os.Args))
}
