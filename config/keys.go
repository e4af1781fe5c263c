package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

var (
	namedKey     = regexp.MustCompile(`(?:named|of type) "([^"]+)"`)
	jsonBlockKey = regexp.MustCompile(`one or more "([^"]+)" blocks`)
	labelledKey  = regexp.MustCompile(`^(?:Missing \S+ for|Extraneous label for) (\S+)$`)
)

// diagProblems turns HCL diagnostics into problems that name the key as
// Validate does (seal.shamir.shares, listener[1].tls_disable) and the line,
// so that a problem reads the same for HCL and JSON files. body is the
// parsed file, nil if it did not parse (syntax errors name no key).
func diagProblems(diags hcl.Diagnostics, body hcl.Body) []Problem {
	var out []Problem
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		if len(out) >= maxReportedProblems {
			// Counted, never shown (capProblems): naming its key walks
			// the file, which made a file of many bad keys quadratic.
			out = append(out, Problem{})
			continue
		}
		where, block, key := "", "", ""
		if d.Subject != nil {
			where = fmt.Sprintf(" (line %d)", d.Subject.Start.Line)
			if body != nil {
				var isAttr bool
				key, isAttr = keyAt(body, reflect.TypeFor[Config](), d.Subject.Start.Byte)
				if !isAttr {
					block = key
				}
			}
		}
		switch d.Summary {
		case "Unsupported argument", "Unsupported block type", "Extraneous JSON object property":
			name := "?"
			if m := namedKey.FindStringSubmatch(d.Detail); m != nil {
				name = m[1]
			}
			msg := "unknown key" + where
			if i := strings.Index(d.Detail, "Did you mean"); i >= 0 {
				msg += "; " + strings.TrimSpace(d.Detail[i:])
			} else {
				msg += "; see the config reference in the README for the keys allowed here"
			}
			out = append(out, Problem{Key: JoinKey(block, name), Message: msg})
		case "Unsuitable value type", "Incorrect attribute value type":
			// gohcl: "Unsuitable value: a number is required"; hcldec:
			// `Inappropriate value for attribute "shares": a number is required.`
			msg := d.Detail
			if _, after, ok := strings.Cut(msg, ": "); ok {
				msg = after
			}
			out = append(out, Problem{Key: key, Message: "wrong type" + where + ": " + strings.TrimSuffix(msg, ".")})
		case "Incorrect JSON value type":
			name := "?"
			if m := jsonBlockKey.FindStringSubmatch(d.Detail); m != nil {
				name = m[1]
			}
			out = append(out, Problem{Key: JoinKey(block, name), Message: "wrong type" + where +
				": a block is a JSON object of its keys (repeated blocks: an array of objects; labelled blocks: an object by label)"})
		default:
			if m := labelledKey.FindStringSubmatch(d.Summary); m != nil {
				key = JoinKey(block, m[1])
			}
			out = append(out, Problem{Key: key, Message: strings.TrimSuffix(d.Summary, ".") + where + ": " + d.Detail})
		}
	}
	return out
}

// JoinKey names the key name inside the block parent, as problems name keys
// (parent.name; either alone when the other is empty).
func JoinKey(parent, name string) string {
	if parent == "" || name == "" {
		return parent + name
	}
	return parent + "." + name
}

// keyAt names the key at byte offset off of a config file whose body
// decodes into a value of type t: the attribute whose range holds off
// (isAttr), else the innermost block that holds it, else "". Repeated
// blocks carry their index (listener[1]), as Validate names them.
func keyAt(body hcl.Body, t reflect.Type, off int) (key string, isAttr bool) {
	schema, _ := gohcl.ImpliedBodySchema(reflect.New(t).Interface())
	content, _, _ := body.PartialContent(schema)
	if content == nil {
		return "", false
	}
	for name, a := range content.Attributes {
		if a.Range.ContainsOffset(off) {
			return name, true
		}
	}
	fields := blockFields(t)
	seen := map[string]int{}
	for _, b := range content.Blocks {
		f, ok := fields[b.Type]
		if !ok {
			continue
		}
		key := b.Type
		if f.repeated {
			key = fmt.Sprintf("%s[%d]", b.Type, seen[b.Type])
		}
		seen[b.Type]++
		if !blockExtent(b).ContainsOffset(off) {
			continue
		}
		sub, isAttr := keyAt(b.Body, f.typ, off)
		return JoinKey(key, sub), isAttr
	}
	return "", false
}

// blockExtent is a block's range from its type to its closing brace. A
// JSON block's range begins at its property name, which repeated blocks
// share: the first block (in source order) that holds an offset is its.
func blockExtent(b *hcl.Block) hcl.Range {
	end := b.Body.MissingItemRange() // JSON: the closing brace
	if sb, ok := b.Body.(*hclsyntax.Body); ok {
		end = sb.SrcRange
	}
	return hcl.RangeBetween(b.TypeRange, end)
}

type blockField struct {
	typ      reflect.Type // the block's struct type
	repeated bool         // a slice: the key carries an index
}

// blockFields maps the block types of struct type t (hcl:"name,block") to
// their struct types.
func blockFields(t reflect.Type) map[string]blockField {
	m := map[string]blockField{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, kind, _ := strings.Cut(f.Tag.Get("hcl"), ",")
		if kind != "block" {
			continue
		}
		ft, repeated := f.Type, false
		if ft.Kind() == reflect.Slice {
			ft, repeated = ft.Elem(), true
		}
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		m[name] = blockField{typ: ft, repeated: repeated}
	}
	return m
}

// Diff lists the keys whose values differ between two configs, as the
// config file names them (seal.shamir.shares, listener[0].address; a
// block present in one only is named itself).
func Diff(a, b *Config) []string {
	return diff(reflect.ValueOf(*a), reflect.ValueOf(*b), "")
}

// diff lists the keys (hcl tags, with list indexes) whose values differ
// between two values of the same config struct type.
func diff(a, b reflect.Value, prefix string) []string {
	var out []string
	t := a.Type()
	for i := range t.NumField() {
		name, kind, _ := strings.Cut(t.Field(i).Tag.Get("hcl"), ",")
		if name == "" {
			continue // not a file key (LogOutput)
		}
		key := JoinKey(prefix, name)
		fa, fb := a.Field(i), b.Field(i)
		if kind != "block" {
			if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
				out = append(out, key)
			}
			continue
		}
		switch fa.Kind() {
		case reflect.Pointer:
			switch {
			case fa.IsNil() && fb.IsNil():
			case fa.IsNil() || fb.IsNil():
				out = append(out, key)
			default:
				out = append(out, diff(fa.Elem(), fb.Elem(), key)...)
			}
		case reflect.Slice:
			for j := range max(fa.Len(), fb.Len()) {
				ik := fmt.Sprintf("%s[%d]", key, j)
				if j >= fa.Len() || j >= fb.Len() {
					out = append(out, ik)
				} else {
					out = append(out, diff(fa.Index(j), fb.Index(j), ik)...)
				}
			}
		case reflect.Struct:
			out = append(out, diff(fa, fb, key)...)
		}
	}
	return out
}
