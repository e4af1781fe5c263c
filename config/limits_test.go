package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const tooDeep = "nested more than 64 levels deep"

// configProblems parses src and returns the problems (none if it is valid).
func configProblems(t *testing.T, src, filename string) []Problem {
	t.Helper()
	_, err := Parse([]byte(src), filename)
	if err == nil {
		return nil
	}
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("want a *ConfigError, got %v", err)
	}
	return ce.Problems
}

func hasProblem(problems []Problem, want string) bool {
	for _, p := range problems {
		if strings.Contains(p.Message, want) {
			return true
		}
	}
	return false
}

// Deeply nested files are refused before the recursive parsers see them;
// before the check, the deep ones overflowed the goroutine stack and killed
// the process. Each shape is one way HCL's parser (or the evaluation of
// what it built) recurses.
func TestConfigNestedTooDeep(t *testing.T) {
	deep := 200_000
	head := "node_id = \"n1\"\ndata_dir = \"/nonexistent\"\n"
	cases := []struct {
		name, file, src string
		line            int
	}{
		{"braces", "c.hcl", head + "x = " + strings.Repeat("{a=", deep), 3},
		{"brackets", "c.hcl", head + "x = " + strings.Repeat("[", deep), 3},
		{"parentheses", "c.hcl", head + "x = " + strings.Repeat("(", deep), 3},
		{"blocks", "c.hcl", head + strings.Repeat("seal {\n", 100), 67},
		{"negations", "c.hcl", head + "x = " + strings.Repeat("!", deep) + "true", 3},
		{"minus signs", "c.hcl", head + "x = " + strings.Repeat("- ", deep) + "1", 3},
		{"interpolations", "c.hcl", head + "x = " + strings.Repeat(`"${`, deep), 3},
		{"template ifs", "c.hcl", head + "x = \"" + strings.Repeat("%{if true}", 100) + strings.Repeat("%{endif}", 100) + "\"", 3},
		{"splats", "c.hcl", head + "x = a" + strings.Repeat("[*]", deep), 3},
		{"sums", "c.hcl", head + "x = 1" + strings.Repeat("+1", deep), 3},
		{"sums across lines in parentheses", "c.hcl", head + "x = (1" + strings.Repeat("\n+1", 100) + ")", 67},
		{"conditionals", "c.hcl", head + "x = " + strings.Repeat("true ? 1 : ", 1000) + "1", 3},
		{"json arrays", "c.json", "{\"node_id\": \"n1\",\n\"x\":\n" + strings.Repeat("[", deep), 3},
		{"json objects", "c.json", "{\"node_id\": \"n1\",\n\"x\":\n" + strings.Repeat(`{"a":`, deep), 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			problems := configProblems(t, tc.src, tc.file)
			want := tooDeep + " at line " + strconv.Itoa(tc.line)
			if len(problems) != 1 || !strings.Contains(problems[0].Message, want) {
				t.Fatalf("want one problem %q, got %v", want, problems)
			}
		})
	}
}

// Nesting up to the limit, and brackets that are not nesting (in strings,
// heredocs, comments), are left to the parser.
func TestConfigNestingWithinLimit(t *testing.T) {
	head := "node_id = \"n1\"\ndata_dir = \"/nonexistent\"\n"
	cases := []struct{ name, file, src string }{
		{"64 brackets", "c.hcl", head + "x = " + strings.Repeat("[", 64) + strings.Repeat("]", 64)},
		{"64 json arrays", "c.json", `{"x": ` + strings.Repeat("[", 63) + strings.Repeat("]", 63) + "}"},
		{"brackets in a string", "c.hcl", head + "x = \"" + strings.Repeat("[{(", 100) + "\""},
		{"brackets and quotes in a heredoc", "c.hcl", head + "x = <<EOT\n\"" + strings.Repeat("[{(", 100) + "\nEOT\n"},
		{"escaped interpolations", "c.hcl", head + "x = \"" + strings.Repeat("$${", 100) + "\""},
		{"brackets in comments", "c.hcl", head + "# " + strings.Repeat("[", 100) + "\n// " + strings.Repeat("{", 100) + "\n/* " + strings.Repeat("(", 100) + " */\n"},
		{"many attributes", "c.hcl", head + strings.Repeat("x = 1 + 1\n", 1000)},
		{"many list items", "c.hcl", head + "x = [" + strings.Repeat("-1, ", 1000) + "]"},
		{"many sequential interpolations", "c.hcl", head + "x = \"" + strings.Repeat("${1}", 1000) + "\""},
		{"brackets in json strings", "c.json", `{"x": "` + strings.Repeat(`[{\"`, 100) + `"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if problems := configProblems(t, tc.src, tc.file); hasProblem(problems, tooDeep) {
				t.Fatalf("refused as too deep: %v", problems)
			}
		})
	}
}

// A file over MaxConfigSize is refused while it is read: /dev/zero, a
// FIFO fed forever, a large regular file. A FIFO nobody writes to does not
// hang the read.
func TestConfigFileTooLarge(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.hcl")
	if err := os.WriteFile(big, []byte(strings.Repeat("#\n", MaxConfigSize/2+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	fed := filepath.Join(dir, "fed.hcl")
	if err := syscall.Mkfifo(fed, 0o600); err != nil {
		t.Fatal(err)
	}
	// Opened read-write, the FIFO has its writer before Load opens it (a
	// FIFO without one reads as empty); closing it ends the writes.
	w, err := os.OpenFile(fed, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		chunk := []byte(strings.Repeat("#\n", 4096))
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { w.Close(); <-writing })
	for _, path := range []string{"/dev/zero", big, fed} {
		_, err := Load(path)
		var ce *ConfigError
		if !errors.As(err, &ce) || len(ce.Problems) != 1 || !strings.Contains(ce.Problems[0].Message, "larger than 1048576 bytes (1 MiB), the limit") ||
			!strings.HasPrefix(err.Error(), "config file "+path+" has 1 problem(s)") {
			t.Errorf("%s: want the size limit named, got %v", path, err)
		}
	}
	if _, err := Parse(make([]byte, MaxConfigSize+1), "mem.hcl"); err == nil || !strings.Contains(err.Error(), "the limit for a config file") {
		t.Errorf("Parse of %d bytes: %v", MaxConfigSize+1, err)
	}

	idle := filepath.Join(dir, "idle.hcl")
	if err := syscall.Mkfifo(idle, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := Load(idle); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("an empty FIFO was accepted as a config")
		}
	case <-time.After(time.Minute):
		t.Fatal("Load blocked on a FIFO without a writer")
	}

	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "it is a directory") {
		t.Errorf("a directory: %v", err)
	}
}

// A damaged file lists its first problems, not tens of thousands.
func TestConfigProblemsCapped(t *testing.T) {
	src := "node_id = \"n1\"\n" + strings.Repeat("colour = 1\n", 1000)
	problems := configProblems(t, src, "c.hcl")
	if len(problems) != maxReportedProblems+1 || !strings.Contains(problems[maxReportedProblems].Message, "more problem(s); fix the ones above first") {
		t.Fatalf("%d problems, last %v", len(problems), problems[len(problems)-1])
	}
}

// A JSON config of 33,000 unknown keys (1 MiB): 77 s and 189 MB when every
// problem's key was named by walking the file; linear since only the
// reported ones are.
func BenchmarkParseManyUnknownKeys(b *testing.B) {
	var src strings.Builder
	src.WriteString(`{"node_id": "n", "data_dir": "/d",`)
	for i := range 33_000 {
		fmt.Fprintf(&src, "\"unknown_%05d\": 1,\n", i)
	}
	src.WriteString(`"x": 1}`)
	for b.Loop() {
		if _, err := Parse([]byte(src.String()), "many.json"); err == nil {
			b.Fatal("accepted")
		}
	}
}
