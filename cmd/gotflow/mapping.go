package main

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/gotflow/gotflow/feeder"
)

// mappingFlag is the --map (and --label) of every verb: feeder.ParseMapping's
// syntax, `column=tensor [dtype=T] [shape=D,...] [fill=V] [cast] [len=N]
// [pad=V]`, repeatable, several separated by ';'. A value without spaces
// may also list plain pairs with commas (`a=x,b=y`).
type mappingFlag struct{ m feeder.Mapping }

func (f *mappingFlag) String() string {
	if f == nil || len(f.m) == 0 {
		return ""
	}
	return f.m.String()
}

func (f *mappingFlag) Set(v string) error {
	if strings.Contains(v, ",") && !strings.ContainsFunc(v, func(r rune) bool { return unicode.IsSpace(r) || r == ';' || r == '"' }) {
		// a=x,b=y: a list of plain pairs (a column whose name has a comma
		// is written quoted).
		parts := strings.Split(v, ",")
		pairs := true
		for _, p := range parts {
			pairs = pairs && strings.Contains(p, "=")
		}
		if pairs {
			v = strings.Join(parts, ";")
		}
	}
	m, err := feeder.ParseMapping(v)
	if err != nil {
		return fmt.Errorf("want COLUMN=TENSOR [dtype=T] [shape=D,..] [fill=V] [cast] [len=N] [pad=V]: %w", err)
	}
	for _, in := range m {
		for _, old := range f.m {
			if old.Column == in.Column {
				return fmt.Errorf("column %q is mapped twice", in.Column)
			}
			if old.Tensor == in.Tensor {
				return fmt.Errorf("%q is fed from two columns (%q and %q)", in.Tensor, old.Column, in.Column)
			}
		}
		f.m = append(f.m, in)
	}
	return nil
}

// plain reports whether an entry says only which column feeds which
// tensor.
func plain(in feeder.Input) bool {
	return in.DType == 0 && in.Shape == nil && in.Fill == nil && !in.Cast && in.Length == 0 && in.Pad == 0
}

// short returns the plain entries as a column → tensor map (nil if none).
func (f *mappingFlag) short() map[string]string {
	var out map[string]string
	for _, in := range f.m {
		if plain(in) {
			if out == nil {
				out = map[string]string{}
			}
			out[in.Column] = in.Tensor
		}
	}
	return out
}

// full returns the entries with options.
func (f *mappingFlag) full() feeder.Mapping {
	var out feeder.Mapping
	for _, in := range f.m {
		if !plain(in) {
			out = append(out, in)
		}
	}
	return out
}
