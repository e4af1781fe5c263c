// Command openbao is the stock OpenBao server (`bao`) built from the same
// module version the appliance embeds: the peer `make bench` measures the
// appliance against.
package main

import (
	"os"

	"github.com/openbao/openbao/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
