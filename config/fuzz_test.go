package config

import (
	"strings"
	"testing"
)

// The fuzz targets feed arbitrary bytes to the part of Parse that reads
// them (limits, HCL or JSON parser, decoding, defaults); Validate is left
// out because it reads the files and resolves the host names a config
// names. The seeds are in testdata/fuzz/<target>/, among them files nested
// just past MaxConfigDepth; the 200k-deep files that overflowed the stack
// before the limit existed are in TestConfigNestedTooDeep (as seeds they
// would slow every fuzzing round down). Run one with
//
//	go test ./config/ -run '^$' -fuzz FuzzParseHCL -fuzztime 30s

func FuzzParseHCL(f *testing.F) {
	f.Fuzz(func(t *testing.T, src []byte) { fuzzDecode(t, src, "fuzz.hcl") })
}

func FuzzParseJSON(f *testing.F) {
	f.Fuzz(func(t *testing.T, src []byte) { fuzzDecode(t, src, "fuzz.json") })
}

// fuzzDecode checks what must hold for any input: no panic, no stack
// overflow, a Config or at least one problem, and every problem an
// operator is shown (the first maxReportedProblems, as Parse caps them;
// those past it are only counted) says something.
func fuzzDecode(t *testing.T, src []byte, filename string) {
	c, problems := decode(src, filename)
	if c == nil && len(problems) == 0 {
		t.Fatal("no config and no problem")
	}
	ce := newConfigError(filename, problems)
	_ = ce.Error()
	for _, p := range ce.Problems {
		if strings.TrimSpace(p.Message) == "" {
			t.Fatalf("a problem without a message: %+v", p)
		}
	}
	if c != nil {
		c.applyDefaults()
	}
}
