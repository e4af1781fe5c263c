package cli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// The CLI reference (docs/reference/cli.md) and the exit code table in
// docs/reference/exit-codes.md are rendered from the command table
// (newApp) and from exitCodesHelp. TestCLIReferenceUpToDate fails when the
// files differ from what the code renders; `make docs` (GSA_UPDATE_DOCS=1)
// writes them.
const (
	cliReferenceFile = "../../docs/reference/cli.md"
	exitCodesFile    = "../../docs/reference/exit-codes.md"
	updateDocsEnv    = "GSA_UPDATE_DOCS"

	exitCodesBegin = "<!-- BEGIN GENERATED: exit codes (make docs) -->\n"
	exitCodesEnd   = "<!-- END GENERATED: exit codes -->\n"
)

func TestCLIReferenceUpToDate(t *testing.T) {
	checkGenerated(t, cliReferenceFile, func(string) (string, error) {
		return cliMarkdown(newApp()), nil
	})
	checkGenerated(t, exitCodesFile, func(old string) (string, error) {
		begin, end := strings.Index(old, exitCodesBegin), strings.Index(old, exitCodesEnd)
		if begin < 0 || end < begin {
			return "", fmt.Errorf("%s has no %q ... %q block for the generated table", exitCodesFile, strings.TrimSpace(exitCodesBegin), strings.TrimSpace(exitCodesEnd))
		}
		table, err := exitCodesMarkdown(exitCodesHelp)
		if err != nil {
			return "", err
		}
		return old[:begin+len(exitCodesBegin)] + table + old[end:], nil
	})
}

// checkGenerated compares path with render's result (given the file's
// current text), or writes it when GSA_UPDATE_DOCS=1.
func checkGenerated(t *testing.T, path string, render func(old string) (string, error)) {
	t.Helper()
	old, err := os.ReadFile(path)
	if err != nil && !(os.IsNotExist(err) && os.Getenv(updateDocsEnv) == "1") {
		t.Fatalf("%v: run make docs", err)
	}
	want, err := render(string(old))
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(updateDocsEnv) == "1" {
		if want != string(old) {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s", filepath.Clean(path))
		}
		return
	}
	if want != string(old) {
		t.Errorf("%s differs from what the command table renders (first difference at line %d): run make docs and commit the result", filepath.Clean(path), firstDiffLine(string(old), want))
	}
}

func firstDiffLine(a, b string) int {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return i + 1
		}
	}
	return min(len(al), len(bl)) + 1
}

// cliMarkdown renders the command reference: a table of every command,
// then per command its synopsis, description and flags (name, default,
// environment variable, meaning), in the order the command table has them.
func cliMarkdown(app *cli.App) string {
	var b bytes.Buffer
	b.WriteString("# CLI reference\n\n")
	b.WriteString("Every command and flag of `" + app.Name + "`, for looking one up.\n")
	b.WriteString("Generated from the command table (`internal/cli/commands.go`) by `make docs`;\n")
	b.WriteString("do not edit it by hand: `make test` fails when it differs from the code.\n")
	b.WriteString("Every command also takes `--help`, which prints its flags and the exit codes.\n")
	b.WriteString("The exit codes are in [exit-codes.md](exit-codes.md); how client commands reach a node is in\n")
	b.WriteString("[Running a real node](../operations/running-a-node.md#client-commands).\n\n")
	b.WriteString(mdText(app.Usage) + ". " + mdText(app.Description) + "\n\n")
	b.WriteString("| command | does |\n| --- | --- |\n")
	var all []*cli.Command
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden {
				continue
			}
			path := strings.TrimSpace(prefix + " " + c.Name)
			c.HelpName = path // only for rendering: the app is not run
			all = append(all, c)
			fmt.Fprintf(&b, "| [`%s`](#%s) | %s |\n", path, anchor(path), cell(c.Usage))
			walk(path, c.Subcommands)
		}
	}
	walk("", app.Commands)
	for _, c := range all {
		fmt.Fprintf(&b, "\n## %s\n\n", c.HelpName)
		b.WriteString(mdText(c.Usage) + "\n\n")
		if c.Description != "" {
			b.WriteString(mdText(c.Description) + "\n\n")
		}
		synopsis := app.Name + " " + c.HelpName
		if len(c.Subcommands) > 0 {
			synopsis += " <subcommand>"
		}
		if len(visibleFlags(c.Flags)) > 0 {
			synopsis += " [flags]"
		}
		if a := strings.TrimSpace(c.ArgsUsage); a != "" {
			synopsis += " " + a
		}
		b.WriteString("```\n" + synopsis + "\n```\n")
		if len(c.Subcommands) > 0 {
			b.WriteString("\nSubcommands:")
			for i, s := range c.Subcommands {
				if s.Hidden {
					continue
				}
				sep := ","
				if i == 0 {
					sep = ""
				}
				fmt.Fprintf(&b, "%s [`%s`](#%s)", sep, s.Name, anchor(c.HelpName+" "+s.Name))
			}
			b.WriteString(".\n")
		}
		if flags := visibleFlags(c.Flags); len(flags) > 0 {
			b.WriteString("\n| flag | default | environment | meaning |\n| --- | --- | --- | --- |\n")
			for _, f := range flags {
				b.WriteString(flagRow(f))
			}
		}
	}
	return b.String()
}

func visibleFlags(flags []cli.Flag) []cli.Flag {
	var out []cli.Flag
	for _, f := range flags {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		out = append(out, f)
	}
	return out
}

// flagRow is one flag's table row. A default shows only when the flag has
// one of its own (a zero count or an empty string means "not given").
func flagRow(f cli.Flag) string {
	var names []string
	for _, n := range f.Names() {
		if len(n) == 1 {
			names = append(names, "`-"+n+"`")
		} else {
			names = append(names, "`--"+n+"`")
		}
	}
	name := strings.Join(names, ", ")
	def, env, usage := "", "", ""
	if d, ok := f.(cli.DocGenerationFlag); ok {
		usage = d.GetUsage()
		if d.TakesValue() {
			name += " " + valueName(f)
			switch v := d.GetDefaultText(); v {
			case "", "0", `""`, "[]", "0s":
			default:
				def = "`" + strings.Trim(v, `"`) + "`"
			}
		}
		for _, e := range d.GetEnvVars() {
			if env != "" {
				env += ", "
			}
			env += "`$" + e + "`"
		}
	}
	if bf, ok := f.(*cli.BoolFlag); ok && bf.Value {
		def = "`true`"
	}
	if r, ok := f.(cli.RequiredFlag); ok && r.IsRequired() {
		def = "required"
	}
	if s, ok := f.(cli.DocGenerationSliceFlag); ok && s.IsSliceFlag() {
		usage += " (repeat the flag, or separate with commas)"
	}
	return fmt.Sprintf("| %s | %s | %s | %s |\n", name, def, env, cell(usage))
}

// valueName is what a flag's value looks like in the synopsis.
func valueName(f cli.Flag) string {
	switch f.(type) {
	case *cli.IntFlag:
		return "N"
	case *cli.DurationFlag:
		return "DURATION"
	case *cli.StringSliceFlag:
		return "VALUE,..."
	}
	return "VALUE"
}

// anchor is the GitHub/GitLab heading anchor of a "## text" heading.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// mdText keeps text that Markdown would misread as markup (a * in BAO_*,
// a <time> placeholder) as written; code spans stay as they are.
func mdText(s string) string {
	var b strings.Builder
	inCode := false
	for _, r := range s {
		switch {
		case r == '`':
			inCode = !inCode
		case !inCode && (r == '*' || r == '<'):
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// cell is text for a table cell: a | would end the cell.
func cell(s string) string {
	return strings.ReplaceAll(mdText(s), "|", `\|`)
}

// exitCodesMarkdown turns the EXIT CODES section that --help prints into
// a table, so that the two cannot disagree.
func exitCodesMarkdown(help string) (string, error) {
	var b strings.Builder
	b.WriteString("| code | meaning |\n| --- | --- |\n")
	var code, meaning string
	flush := func() {
		if code != "" {
			fmt.Fprintf(&b, "| %s | %s |\n", code, cell(meaning))
		}
	}
	for _, line := range strings.Split(help, "\n")[1:] {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if _, err := fmt.Sscanf(fields[0], "%d", new(int)); err == nil && strings.HasPrefix(line, "   ") && !strings.HasPrefix(line, "    ") {
			flush()
			code, meaning = fields[0], strings.Join(fields[1:], " ")
			continue
		}
		if code == "" {
			return "", fmt.Errorf("exitCodesHelp: %q is not under an exit code", line)
		}
		meaning += " " + strings.Join(fields, " ")
	}
	flush()
	if code == "" {
		return "", fmt.Errorf("exitCodesHelp lists no exit code")
	}
	return b.String(), nil
}
