package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// ErrInvalidConfig marks every configuration error; the *ConfigError that
// wraps it lists each problem.
var ErrInvalidConfig = errors.New("invalid configuration")

// Problem is one thing wrong with a configuration: the key (as written in
// the config file, with list indexes) and what is wrong with it.
type Problem struct {
	Key     string `json:"key"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Key == "" {
		return p.Message
	}
	return p.Key + ": " + p.Message
}

// ConfigError lists every problem found in a configuration at once.
type ConfigError struct {
	Source   string // the file, or "" for a Config built in code
	Problems []Problem
	// Total counts every problem found, when Problems lists only the
	// first ones (then its last entry says how many more); else 0.
	Total int
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	what := "configuration"
	if e.Source != "" {
		what = "config file " + e.Source
	}
	total := len(e.Problems)
	if e.Total > 0 {
		total = e.Total
	}
	fmt.Fprintf(&b, "%s has %d problem(s):", what, total)
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.String())
	}
	return b.String()
}

func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// Load reads a config file (HCL, or its JSON form when the name ends in
// .json), applies defaults and validates it. Every problem is reported in
// one *ConfigError. A file over MaxConfigSize or nested deeper than
// MaxConfigDepth is refused before it is parsed.
func Load(path string) (*Config, error) {
	src, err := readConfigFile(path)
	if err != nil {
		return nil, &ConfigError{Source: path, Problems: []Problem{{Message: err.Error()}}}
	}
	return Parse(src, path)
}

// Parse is Load for a config already in memory; filename says which syntax
// (".json" suffix: JSON) and names the source in messages.
func Parse(src []byte, filename string) (*Config, error) {
	c, problems := decode(src, filename)
	if c != nil {
		c.applyDefaults()
		if err := c.Validate(); err != nil {
			var ce *ConfigError
			if errors.As(err, &ce) {
				problems = append(problems, ce.Problems...)
			}
		}
	}
	if len(problems) > 0 {
		return nil, newConfigError(filename, problems)
	}
	return c, nil
}

// newConfigError is what an operator is shown of problems: the first
// maxReportedProblems, and how many there were in all when there were
// more (those past the cap are counted, not named).
func newConfigError(source string, problems []Problem) *ConfigError {
	ce := &ConfigError{Source: source, Problems: capProblems(problems)}
	if len(problems) > maxReportedProblems {
		ce.Total = len(problems)
	}
	return ce
}

// decode checks the limits, parses src and decodes it into a Config, with
// no defaults and no validation: the part of Parse that reads untrusted
// bytes and touches nothing else (FuzzParseHCL and FuzzParseJSON run it).
// The Config is nil when the file does not parse.
func decode(src []byte, filename string) (*Config, []Problem) {
	isJSON := strings.HasSuffix(filename, ".json")
	if p := checkLimits(src, isJSON); p != nil {
		return nil, []Problem{*p}
	}
	parser := hclparse.NewParser()
	var file *hcl.File
	var diags hcl.Diagnostics
	if isJSON {
		file, diags = parser.ParseJSON(src, filename)
	} else {
		file, diags = parser.ParseHCL(src, filename)
	}
	if diags.HasErrors() {
		return nil, diagProblems(diags, nil)
	}
	c := &Config{}
	return c, diagProblems(gohcl.DecodeBody(file.Body, nil, c), file.Body)
}

// ReadCAPool reads a PEM file of CA certificates into a pool: the one
// loader of every *_ca_file key (geo.ca_cert_file, a listener's
// tls_client_ca_file, gitlab.jwks_ca_file, the CLI's --ca-cert).
func ReadCAPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, PathCause(err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// PathCause drops the path from an *os.PathError, which the message around
// it already names ("data_dir: cannot create /x: permission denied", not
// "... mkdir /x: permission denied").
func PathCause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
