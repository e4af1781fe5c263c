// Command nfpm builds the appliance's .deb and .rpm packages with nFPM as
// a library (`make package`): the binary, the systemd unit, a config file
// the package never overwrites, and the service user. It is its own Go
// module so that nFPM's dependencies stay out of the server's go.mod.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func main() {
	var o Options
	formats := strings.Join(Formats, ",")
	flag.StringVar(&o.Binary, "binary", "", "the appliance binary to package")
	flag.StringVar(&o.Unit, "unit", "", "the systemd unit file")
	flag.StringVar(&o.Version, "version", "", "package version (semantic, e.g. 0.1.0 or 0.1.0-dev.20261201.gabc1234)")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "GOARCH of the binary")
	flag.StringVar(&o.OutDir, "out", "dist", "output directory")
	flag.StringVar(&formats, "formats", formats, "comma-separated package formats")
	flag.Parse()
	// SOURCE_DATE_EPOCH (the commit time, from make) makes builds reproducible.
	o.MTime = time.Now().UTC().Truncate(time.Second)
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "SOURCE_DATE_EPOCH=%q is not a number of seconds\n", s)
			os.Exit(64)
		}
		o.MTime = time.Unix(sec, 0).UTC()
	}
	paths, err := Build(o, strings.Split(formats, ",")...)
	for _, p := range paths {
		fmt.Println(p)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
