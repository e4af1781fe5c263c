package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Limits on a config file, checked before the HCL or JSON parser sees it.
// An appliance config is a few KB nested three or four levels deep. The
// parsers recurse once per level (and once per operator of an expression),
// so a file nested some 100k deep exhausts the goroutine stack, which
// kills the process: `server`, `config validate`, or a running node on
// SIGHUP.
const (
	// MaxConfigSize is the largest config file read, in bytes (1 MiB).
	MaxConfigSize = 1 << 20
	// MaxConfigDepth is the deepest nesting accepted: blocks, braces,
	// brackets, parentheses, template interpolations and directives, and
	// the operators of one expression, counted together.
	MaxConfigDepth = 64
	// configReadTimeout bounds the read of a config "file" that is a pipe,
	// so a stalled writer cannot hang a start or a SIGHUP reload.
	configReadTimeout = 10 * time.Second
	// maxReportedProblems caps the problems listed for one file: a
	// damaged file can yield thousands of syntax errors.
	maxReportedProblems = 50
)

// readConfigFile reads at most MaxConfigSize bytes of path. It refuses a
// directory, and anything longer than the limit (/dev/zero, a pipe fed
// forever). A FIFO without a writer reads as empty rather than blocking.
func readConfigFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot read the config file: %v", PathCause(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read the config file: %v", PathCause(err))
	}
	if st.IsDir() {
		return nil, errors.New("cannot read the config file: it is a directory; give the path of the file in it")
	}
	if !st.Mode().IsRegular() {
		f.SetReadDeadline(time.Now().Add(configReadTimeout)) // pipes; ignored where unsupported
	}
	src, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read the config file: %v", PathCause(err))
	}
	if len(src) > MaxConfigSize {
		return nil, errTooLarge
	}
	return src, nil
}

var errTooLarge = fmt.Errorf("the file is larger than %d bytes (1 MiB), the limit for a config file; "+
	"an appliance config is a few KB: check that this is the config file you meant", MaxConfigSize)

// checkLimits refuses a file over MaxConfigSize or nested deeper than
// MaxConfigDepth, before a recursive parser sees it.
func checkLimits(src []byte, json bool) *Problem {
	if len(src) > MaxConfigSize {
		return &Problem{Message: errTooLarge.Error()}
	}
	var line int
	if json {
		line = jsonTooDeep(src)
	} else {
		line = hclTooDeep(src)
	}
	if line == 0 {
		return nil
	}
	return &Problem{Message: fmt.Sprintf("nested more than %d levels deep at line %d, the limit for a config file "+
		"(blocks, brackets, parentheses, interpolations and the operators of one expression count); "+
		"an appliance config needs four: check that this is the config file you meant and that it is not damaged",
		MaxConfigDepth, line)}
}

// jsonTooDeep returns the line at which JSON nesting ({ and [ outside
// strings) exceeds MaxConfigDepth, or 0. Strings end as HCL's JSON scanner
// ends them: at an unescaped quote or a control character.
func jsonTooDeep(src []byte) int {
	depth, line := 0, 1
	inString, escaping := false, false
	for _, b := range src {
		if b == '\n' {
			line++
		}
		if inString {
			switch {
			case b == '\\':
				escaping = !escaping
			case b == '"':
				inString, escaping = escaping, false
			case b < 0x20:
				inString, escaping = false, false
			default:
				escaping = false
			}
			continue
		}
		switch b {
		case '"':
			inString = true
		case '{', '[':
			if depth++; depth > MaxConfigDepth {
				return line
			}
		case '}', ']':
			if depth > 0 {
				depth--
			}
		}
	}
	return 0
}

// hclTooDeep returns the line at which HCL nesting exceeds MaxConfigDepth,
// or 0. It reads the tokens of HCL's own lexer (a state machine, no
// recursion), so strings, heredocs, comments and escapes are told apart
// exactly as the parser will see them. What counts, as the parser's
// recursion goes:
//   - each open brace, bracket, parenthesis and template sequence (${, %{);
//   - each if or for directive of a template still open;
//   - each operator (unary, binary, ?:, ., splat) and each bracketed term of
//     the expression in progress at every open level: the parser and the
//     evaluator recurse once per operator of a chain such as -----1, 1+1+1
//     or a[*][*][*]. A comma, '=', or a newline in a body or object ends
//     the expression.
//
// Closers that do not match the innermost opener are not counted down (the
// parser reports them), so a broken file is never underestimated.
func hclTooDeep(src []byte) int {
	toks, _ := hclsyntax.LexConfig(src, "", hcl.InitialPos)
	type level struct {
		open hclsyntax.TokenType
		ops  int
	}
	stack := []level{{open: hclsyntax.TokenOBrace}} // the file's body
	directives := 0
	afterControl := false
	for _, t := range toks {
		top := &stack[len(stack)-1]
		control := afterControl
		afterControl = false
		switch t.Type {
		case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack, hclsyntax.TokenOParen,
			hclsyntax.TokenTemplateInterp, hclsyntax.TokenTemplateControl:
			stack = append(stack, level{open: t.Type})
			afterControl = t.Type == hclsyntax.TokenTemplateControl
		case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen, hclsyntax.TokenTemplateSeqEnd:
			if len(stack) > 1 && closes(top.open, t.Type) {
				stack = stack[:len(stack)-1]
				if t.Type != hclsyntax.TokenTemplateSeqEnd {
					stack[len(stack)-1].ops++ // a bracketed term of the enclosing expression
				}
			}
		case hclsyntax.TokenComma, hclsyntax.TokenEqual:
			top.ops = 0
		case hclsyntax.TokenNewline:
			if top.open == hclsyntax.TokenOBrace {
				top.ops = 0
			}
		case hclsyntax.TokenIdent:
			if control {
				switch string(t.Bytes) {
				case "if", "for":
					directives++
				case "endif", "endfor":
					directives = max(0, directives-1)
				}
			}
		case hclsyntax.TokenPlus, hclsyntax.TokenMinus, hclsyntax.TokenStar, hclsyntax.TokenSlash,
			hclsyntax.TokenPercent, hclsyntax.TokenBang, hclsyntax.TokenAnd, hclsyntax.TokenOr,
			hclsyntax.TokenEqualOp, hclsyntax.TokenNotEqual, hclsyntax.TokenLessThan,
			hclsyntax.TokenLessThanEq, hclsyntax.TokenGreaterThan, hclsyntax.TokenGreaterThanEq,
			hclsyntax.TokenQuestion, hclsyntax.TokenColon, hclsyntax.TokenDot, hclsyntax.TokenEllipsis,
			hclsyntax.TokenFatArrow:
			top.ops++
		}
		depth := len(stack) - 1 + directives
		for _, l := range stack {
			depth += l.ops
		}
		if depth > MaxConfigDepth {
			return t.Range.Start.Line
		}
	}
	return 0
}

// closes reports whether closer ends a level opened by open.
func closes(open, closer hclsyntax.TokenType) bool {
	switch closer {
	case hclsyntax.TokenCBrace:
		return open == hclsyntax.TokenOBrace
	case hclsyntax.TokenCBrack:
		return open == hclsyntax.TokenOBrack
	case hclsyntax.TokenCParen:
		return open == hclsyntax.TokenOParen
	case hclsyntax.TokenTemplateSeqEnd:
		return open == hclsyntax.TokenTemplateInterp || open == hclsyntax.TokenTemplateControl
	}
	return false
}

// capProblems keeps the first maxReportedProblems problems and says how
// many more there were.
func capProblems(problems []Problem) []Problem {
	if len(problems) <= maxReportedProblems {
		return problems
	}
	more := len(problems) - maxReportedProblems
	return append(problems[:maxReportedProblems:maxReportedProblems],
		Problem{Message: fmt.Sprintf("and %d more problem(s); fix the ones above first", more)})
}
