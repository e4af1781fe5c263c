package main

import (
	"debug/elf"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// glibcNeeds is the newest GNU C library version whose symbols the binary
// imports (the highest GLIBC_x.y[.z] symbol version in its dynamic symbol
// table), "" if it imports none (a static binary). The packages require
// at least that version: on an older C library the binary would install
// and then fail to start ("version `GLIBC_2.34' not found").
//
// The binary must be a position-independent executable (ELF type DYN
// with DF_1_PIE): make build links it with -buildmode=pie.
func glibcNeeds(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: not an ELF executable: %w", path, err)
	}
	defer f.Close()
	if !isPIE(f) {
		return "", fmt.Errorf("%s is not a position-independent executable (ELF type %v): build it with -buildmode=pie (make build does)", path, f.Type)
	}
	syms, err := f.ImportedSymbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return "", fmt.Errorf("%s: reading its dynamic symbols: %w", path, err)
	}
	var best []int
	for _, s := range syms {
		v, ok := strings.CutPrefix(s.Version, "GLIBC_")
		if !ok {
			continue // GLIBC_PRIVATE is not a version; other libraries
		}
		n, ok := parseVersion(v)
		if ok && compareVersions(n, best) > 0 {
			best = n
		}
	}
	if best == nil {
		return "", nil
	}
	parts := make([]string, len(best))
	for i, p := range best {
		parts[i] = strconv.Itoa(p)
	}
	return strings.Join(parts, "."), nil
}

// isPIE: ELF type DYN with an interpreter, or with DF_1_PIE (a static PIE
// has no interpreter); a shared library has neither.
func isPIE(f *elf.File) bool {
	if f.Type != elf.ET_DYN {
		return false
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	flags, err := f.DynValue(elf.DT_FLAGS_1)
	return err == nil && len(flags) > 0 && flags[0]&uint64(elf.DF_1_PIE) != 0
}

func parseVersion(v string) ([]int, bool) {
	var out []int
	for _, p := range strings.Split(v, ".") {
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, false
		}
		out = append(out, n)
	}
	return out, len(out) > 0
}

func compareVersions(a, b []int) int {
	for i := range max(len(a), len(b)) {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}
