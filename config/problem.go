package config

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a config. Line is 0 when unknown; Key is
// the dotted TOML key ("smtp.listen"), empty for syntax errors.
type Problem struct {
	File string
	Line int
	Key  string
	Msg  string
}

// String formats the problem as "file:line: key: msg", leaving out the parts
// that are empty or 0, so editors and CI logs can jump to the line.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
	} else if p.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(p.Line))
		b.WriteString(": ")
	}
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is the error returned for an invalid config. It lists every
// problem found, not only the first, so an operator fixes them in one pass.
type Problems []Problem

// Error lists the problems, one a line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// sort orders problems by line, those without a line last, keeping the
// order of problems on the same key (e.g. list entries in order).
func (ps Problems) sort() {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		if c := cmp.Compare(sortLine(a.Line), sortLine(b.Line)); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
}

// sortLine puts unknown lines (0) after every known one.
func sortLine(line int) int {
	if line == 0 {
		return math.MaxInt
	}
	return line
}
