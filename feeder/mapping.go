package feeder

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/gotflow/gotflow/tf"
)

// Input maps one Arrow column to one tensor (a graph input, a placeholder,
// a SavedModel signature input).
type Input struct {
	// Column is the name of a top-level field of the record schema.
	Column string
	// Tensor names the target, e.g. "x" or "x:0". It is matched against
	// Target.Alias (or Target.Name) when the plan is checked against graph
	// inputs.
	Tensor string
	// DType is the tensor's element type. Zero takes it from the target,
	// or, without a target, from the column (int64 → int64, utf8 → string…).
	DType tf.DataType
	// Shape is the shape of one row (the tensor shape without the batch
	// dimension). Nil takes it from the target, or from the column. A shape
	// with the same element count as the column's row reshapes it, e.g. a
	// FixedSizeList<784> fed as [28, 28, 1].
	Shape []int64
	// Fill replaces nulls (a null row of a list fills the whole row). Nil
	// means nulls are an error. Numeric columns take any Go number, a bool,
	// or a string holding a number; string columns take a string or []byte.
	Fill any
	// Cast allows lossy conversions (int64 → int32, float64 → float32,
	// float → int, numbers → bool). Lossless widening is always allowed.
	Cast bool
	// Length, when positive, pads or truncates variable-length lists to
	// this many elements per row. Zero requires every row of a batch to
	// have the same length.
	Length int
	// Pad is the value used for padding when Length is set.
	Pad float64
}

// Mapping is an ordered list of inputs; tensors are produced in this order.
type Mapping []Input

// Target describes a tensor the plan must produce: what the graph expects.
// NewPlan matches it to the mapping entry whose Input.Tensor names it: its
// Alias, or its Name when Alias is empty.
type Target struct {
	// Alias is the name the mapping uses for the tensor when that is not
	// the graph tensor's (a signature alias, a bundle input's name).
	Alias string
	// TensorSpec is the graph tensor with its dtype and full shape,
	// including the batch dimension; -1 marks an unknown dimension, nil an
	// unknown rank.
	tf.TensorSpec
}

// key is the name Input.Tensor uses for the target.
func (t Target) key() string {
	if t.Alias != "" {
		return t.Alias
	}
	return t.Name
}

// TargetOf describes a graph output (a placeholder) as a Target.
func TargetOf(o tf.Output) (Target, error) {
	spec, err := o.Spec()
	if err != nil {
		return Target{}, fmt.Errorf("feeder: shape of a graph input: %w", err)
	}
	return Target{TensorSpec: spec}, nil
}

// Output maps one tensor produced by a session back to an Arrow column.
type Output struct {
	// Tensor names the fetched tensor; informational, used in errors.
	Tensor string
	// Column is the name of the appended column.
	Column string
	// TensorType stores rank ≥ 2 tensors as the arrow.fixed_shape_tensor
	// extension type instead of (nested) fixed-size lists.
	TensorType bool
	// Binary stores string tensors as binary instead of utf8 columns. Without
	// it, a string tensor holding invalid UTF-8 is an error.
	Binary bool
}

// ParseMapping reads a mapping written one input per line or separated by
// ';': `column=tensor [dtype=float32] [shape=28,28] [fill=0] [cast] [len=10]
// [pad=0]`. Column and tensor names may be Go-quoted strings.
func ParseMapping(s string) (Mapping, error) {
	var m Mapping
	for n, entry := range strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == '\n' }) {
		toks, err := tokenize(entry)
		if err != nil {
			return nil, fmt.Errorf("feeder: mapping entry %d: %w", n+1, err)
		}
		if len(toks) == 0 {
			continue
		}
		col, tensor, ok := splitKV(toks[0])
		if !ok || col == "" || tensor == "" {
			return nil, fmt.Errorf("feeder: mapping entry %d: want column=tensor, got %q", n+1, toks[0])
		}
		in := Input{Column: col, Tensor: tensor}
		for _, t := range toks[1:] {
			k, v, hasV := splitKV(t)
			switch k {
			case "cast":
				if hasV {
					return nil, fmt.Errorf("feeder: mapping %q: cast takes no value", col)
				}
				in.Cast = true
			case "dtype":
				dt, err := tf.ParseDataType(v)
				if err != nil {
					return nil, fmt.Errorf("feeder: mapping %q: %w", col, err)
				}
				in.DType = dt
			case "shape":
				sh, err := parseShape(v)
				if err != nil {
					return nil, fmt.Errorf("feeder: mapping %q: %w", col, err)
				}
				in.Shape = sh
			case "fill":
				if !hasV {
					return nil, fmt.Errorf("feeder: mapping %q: fill needs a value", col)
				}
				in.Fill = v
			case "len":
				l, err := strconv.Atoi(v)
				if err != nil || l <= 0 {
					return nil, fmt.Errorf("feeder: mapping %q: len wants a positive integer, got %q", col, v)
				}
				in.Length = l
			case "pad":
				p, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return nil, fmt.Errorf("feeder: mapping %q: pad wants a number, got %q", col, v)
				}
				in.Pad = p
			default:
				return nil, fmt.Errorf("feeder: mapping %q: unknown option %q (want dtype, shape, fill, cast, len, pad)", col, k)
			}
		}
		m = append(m, in)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("feeder: empty mapping")
	}
	return m, nil
}

// String formats the mapping in the syntax ParseMapping reads.
func (m Mapping) String() string {
	var b strings.Builder
	for i, in := range m {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(quoteName(in.Column) + "=" + quoteName(in.Tensor))
		if in.DType != 0 {
			b.WriteString(" dtype=" + in.DType.String())
		}
		if in.Shape != nil {
			parts := make([]string, len(in.Shape))
			for j, d := range in.Shape {
				parts[j] = strconv.FormatInt(d, 10)
			}
			b.WriteString(" shape=[" + strings.Join(parts, ",") + "]")
		}
		if in.Fill != nil {
			b.WriteString(" fill=" + quoteName(fmt.Sprint(in.Fill)))
		}
		if in.Cast {
			b.WriteString(" cast")
		}
		if in.Length > 0 {
			b.WriteString(" len=" + strconv.Itoa(in.Length))
			b.WriteString(" pad=" + strconv.FormatFloat(in.Pad, 'g', -1, 64))
		}
	}
	return b.String()
}

func quoteName(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || r == '=' || r == ';' || r == '"' || !unicode.IsPrint(r)
	}) {
		return strconv.Quote(s)
	}
	return s
}

func splitKV(t string) (k, v string, ok bool) {
	// a quoted key may contain '='; tokens keep quotes until here.
	k, v, ok = cutUnquoted(t)
	var err error
	if k, err = unquote(k); err != nil {
		return "", "", false
	}
	if v, err = unquote(v); err != nil {
		return "", "", false
	}
	return k, v, ok
}

func cutUnquoted(t string) (string, string, bool) {
	inq, esc := false, false
	for i, r := range t {
		switch {
		case esc:
			esc = false
		case r == '\\' && inq:
			esc = true
		case r == '"':
			inq = !inq
		case r == '=' && !inq:
			return t[:i], t[i+1:], true
		}
	}
	return t, "", false
}

func unquote(s string) (string, error) {
	if strings.HasPrefix(s, `"`) {
		return strconv.Unquote(s)
	}
	return s, nil
}

// tokenize splits on spaces outside quotes.
func tokenize(s string) ([]string, error) {
	var toks []string
	var cur strings.Builder
	inq, esc, have := false, false, false
	for _, r := range s {
		switch {
		case esc:
			esc = false
			cur.WriteRune(r)
		case r == '\\' && inq:
			esc = true
			cur.WriteRune(r)
		case r == '"':
			inq = !inq
			have = true
			cur.WriteRune(r)
		case unicode.IsSpace(r) && !inq:
			if have {
				toks = append(toks, cur.String())
				cur.Reset()
				have = false
			}
		default:
			have = true
			cur.WriteRune(r)
		}
	}
	if inq {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if have {
		toks = append(toks, cur.String())
	}
	return toks, nil
}

func parseShape(orig string) ([]int64, error) {
	v := strings.TrimSpace(orig)
	v = strings.TrimPrefix(v, "[")
	v = strings.TrimSuffix(v, "]")
	if strings.TrimSpace(v) == "" {
		return []int64{}, nil
	}
	var sh []int64
	for _, p := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == 'x' }) {
		d, err := strconv.ParseInt(strings.TrimSpace(p), 10, 64)
		if err != nil || d < -1 {
			return nil, fmt.Errorf("shape wants dimensions ≥ -1 like [28,28], got %q", orig)
		}
		sh = append(sh, d)
	}
	return sh, nil
}

// Targets looks up the graph input of every mapping entry and describes it
// as a Target, ready for NewPlan.
func Targets(g *tf.Graph, m Mapping) ([]Target, error) {
	outs, err := Inputs(g, m)
	if err != nil {
		return nil, err
	}
	ts := make([]Target, len(outs))
	for i, o := range outs {
		if ts[i], err = TargetOf(o); err != nil {
			return nil, err
		}
	}
	return ts, nil
}

// Inputs returns the graph outputs (placeholders) the mapping feeds, in
// mapping order, for Batch.Feeds.
func Inputs(g *tf.Graph, m Mapping) ([]tf.Output, error) {
	outs := make([]tf.Output, len(m))
	for i, in := range m {
		o, err := g.Output(in.Tensor)
		if err != nil {
			return nil, fmt.Errorf("feeder: column %q maps to tensor %q: %w", in.Column, in.Tensor, err)
		}
		outs[i] = o
	}
	return outs, nil
}
