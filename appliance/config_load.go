package appliance

import (
	"errors"
	"fmt"
	"os"
	"regexp"
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
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	what := "configuration"
	if e.Source != "" {
		what = "config file " + e.Source
	}
	fmt.Fprintf(&b, "%s has %d problem(s):", what, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.String())
	}
	return b.String()
}

func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// Load reads a config file (HCL, or its JSON form when the name ends in
// .json), applies defaults and validates it. Every problem is reported in
// one *ConfigError.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, &ConfigError{Source: path, Problems: []Problem{{
			Message: fmt.Sprintf("cannot read the config file: %v", unwrapPathError(err)),
		}}}
	}
	return Parse(src, path)
}

// Parse is Load for a config already in memory; filename says which syntax
// (".json" suffix: JSON) and names the source in messages.
func Parse(src []byte, filename string) (*Config, error) {
	parser := hclparse.NewParser()
	var file *hcl.File
	var diags hcl.Diagnostics
	if strings.HasSuffix(filename, ".json") {
		file, diags = parser.ParseJSON(src, filename)
	} else {
		file, diags = parser.ParseHCL(src, filename)
	}
	if diags.HasErrors() {
		return nil, &ConfigError{Source: filename, Problems: diagProblems(diags)}
	}
	c := &Config{}
	problems := diagProblems(gohcl.DecodeBody(file.Body, nil, c))
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			problems = append(problems, ce.Problems...)
		}
	}
	if len(problems) > 0 {
		return nil, &ConfigError{Source: filename, Problems: problems}
	}
	return c, nil
}

var namedKey = regexp.MustCompile(`(?:named|of type) "([^"]+)"`)

// diagProblems turns HCL diagnostics into problems that name the key and
// the line, so "unknown key" reads the same for HCL and JSON files.
func diagProblems(diags hcl.Diagnostics) []Problem {
	var out []Problem
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		where := ""
		if d.Subject != nil {
			where = fmt.Sprintf(" (line %d)", d.Subject.Start.Line)
		}
		switch d.Summary {
		case "Unsupported argument", "Unsupported block type", "Extraneous JSON object property":
			key := "?"
			if m := namedKey.FindStringSubmatch(d.Detail); m != nil {
				key = m[1]
			}
			msg := "unknown key" + where
			if i := strings.Index(d.Detail, "Did you mean"); i >= 0 {
				msg += "; " + strings.TrimSpace(d.Detail[i:])
			} else {
				msg += "; see the config reference in the README for the keys allowed here"
			}
			out = append(out, Problem{Key: key, Message: msg})
		default:
			out = append(out, Problem{Message: strings.TrimSuffix(d.Summary, ".") + where + ": " + d.Detail})
		}
	}
	return out
}

// unwrapPathError drops the path from an *os.PathError, which the message
// around it already names.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
