package feeder

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/float16"

	"github.com/gotflow/gotflow/tf"
)

type colKind int

const (
	kindFixed  colKind = iota // a numeric or bool leaf, possibly under fixed-size lists
	kindList                  // a variable-length list of a numeric or bool leaf
	kindString                // string-like values, possibly dictionary-encoded
)

// colPlan is how one column becomes one tensor.
type colPlan struct {
	in       Input
	index    int
	field    arrow.Field
	kind     colKind
	levels   []int32    // fixed-size list sizes, outermost first (kindFixed)
	leaf     arrow.Type // numeric/bool leaf type (kindFixed, kindList)
	natShape []int64    // the column's own row shape (-1: ragged width of a list)
	rowShape []int64    // the fed row shape; for lists the width may be -1 (resolved per batch)
	rowElems int64      // elements per row (for lists with unknown width: -1)
	dtype    tf.DataType
	same     bool   // the leaf's bytes are the tensor's bytes (copy or alias)
	fill     []byte // one element of the fill value in dtype; nil: nulls are errors
	fillStr  []byte // fill value of string columns
	hasFill  bool
	pad      []byte // one element of the pad value in dtype
	batch    int64  // the target's batch dimension, -1 when free
	target   string // target name for messages
	// graphName is the target's graph tensor, empty without a target.
	graphName string
}

// Plan is a checked mapping from a record schema to tensors. It is immutable
// and safe for concurrent use; its conversion counters are atomic.
type Plan struct {
	schema   *arrow.Schema
	cols     []colPlan
	zeroOnly bool
	noAlias  bool

	aliasedBytes, copiedBytes     atomic.Int64
	aliasedTensors, copiedTensors atomic.Int64
	rows, batches                 atomic.Int64
}

// PlanOption configures NewPlan.
type PlanOption interface{ applyPlan(*Plan) }

type planOptionFunc func(*Plan)

func (f planOptionFunc) applyPlan(p *Plan) { f(p) }

// RequireZeroCopy makes every conversion that would copy a fixed-width
// column fail with ErrNotZeroCopy instead (string columns are always copied
// and are not affected).
func RequireZeroCopy() PlanOption { return planOptionFunc(func(p *Plan) { p.zeroOnly = true }) }

// NoZeroCopy makes every fixed-width column take the copy path, even where
// aliasing the Arrow buffer would be possible (for benchmarks and for callers
// that modify tensors in place).
func NoZeroCopy() PlanOption { return planOptionFunc(func(p *Plan) { p.noAlias = true }) }

// PlannedInput describes one tensor a Plan produces: the column it comes
// from and the target it feeds. Target.Alias is the mapping's Input.Tensor;
// Target.Name is the target's graph tensor when NewPlan was given targets,
// else empty. The shape has -1 for the batch dimension (and for the width
// of variable-length lists fed without a Length).
type PlannedInput struct {
	Column string
	Target
}

// NewPlan checks mapping against schema and, when targets is not nil,
// against the dtype and shape of each mapped target (matched by
// Input.Tensor against Target.Alias, or Target.Name when the alias is
// empty; "x" and "x:0" are the same tensor). It returns an error
// naming the column and what was expected for every mismatch it finds
// first: missing columns, unsupported or lossy types, shapes that do not fit.
func NewPlan(schema *arrow.Schema, mapping Mapping, targets []Target, opts ...PlanOption) (*Plan, error) {
	if schema == nil {
		return nil, fmt.Errorf("feeder: nil schema")
	}
	if len(mapping) == 0 {
		return nil, fmt.Errorf("feeder: empty mapping")
	}
	p := &Plan{schema: schema}
	for _, o := range opts {
		o.applyPlan(p)
	}
	seen := map[string]bool{}
	for _, in := range mapping {
		if in.Tensor == "" {
			return nil, fmt.Errorf("feeder: column %q is mapped to an empty tensor name", in.Column)
		}
		key := canonicalTensor(in.Tensor)
		if seen[key] {
			return nil, fmt.Errorf("feeder: tensor %q is mapped twice", in.Tensor)
		}
		seen[key] = true
		var tgt *Target
		if targets != nil {
			for i := range targets {
				if canonicalTensor(targets[i].key()) == key {
					tgt = &targets[i]
					break
				}
			}
			if tgt == nil {
				names := make([]string, len(targets))
				for i, t := range targets {
					names[i] = t.key()
				}
				return nil, fmt.Errorf("feeder: column %q maps to tensor %q, which is not a target (have: %s)", in.Column, in.Tensor, strings.Join(names, ", "))
			}
		}
		c, err := planColumn(schema, in, tgt)
		if err != nil {
			return nil, err
		}
		p.cols = append(p.cols, c)
	}
	return p, nil
}

// canonicalTensor turns "x" into "x:0".
func canonicalTensor(name string) string {
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			return name
		}
	}
	return name + ":0"
}

// Schema returns the schema the plan was made for.
func (p *Plan) Schema() *arrow.Schema { return p.schema }

// Inputs describes the tensors the plan produces, in mapping order.
func (p *Plan) Inputs() []PlannedInput {
	out := make([]PlannedInput, len(p.cols))
	for i, c := range p.cols {
		out[i] = PlannedInput{Column: c.in.Column, Target: Target{Alias: c.in.Tensor,
			TensorSpec: tf.TensorSpec{Name: c.graphName, DType: c.dtype, Shape: append([]int64{-1}, c.rowShape...)}}}
	}
	return out
}

// Stats counts conversions.
type Stats struct {
	Rows, Batches                 int64
	BytesAliased, BytesCopied     int64 // fixed-width tensor bytes shared with Arrow / written by a copy
	TensorsAliased, TensorsCopied int64 // string tensors count as copied
	RecordsRead                   int64 // records read from the source (Feeder only)
}

// Stats returns the totals of every conversion made with this plan.
func (p *Plan) Stats() Stats {
	return Stats{
		Rows: p.rows.Load(), Batches: p.batches.Load(),
		BytesAliased: p.aliasedBytes.Load(), BytesCopied: p.copiedBytes.Load(),
		TensorsAliased: p.aliasedTensors.Load(), TensorsCopied: p.copiedTensors.Load(),
	}
}

// naturalDType is the TensorFlow type an Arrow leaf type maps to.
func naturalDType(t arrow.Type) (tf.DataType, bool) {
	switch t {
	case arrow.INT8:
		return tf.Int8, true
	case arrow.INT16:
		return tf.Int16, true
	case arrow.INT32:
		return tf.Int32, true
	case arrow.INT64:
		return tf.Int64, true
	case arrow.UINT8:
		return tf.Uint8, true
	case arrow.UINT16:
		return tf.Uint16, true
	case arrow.UINT32:
		return tf.Uint32, true
	case arrow.UINT64:
		return tf.Uint64, true
	case arrow.FLOAT16:
		return tf.Half, true
	case arrow.FLOAT32:
		return tf.Float, true
	case arrow.FLOAT64:
		return tf.Double, true
	case arrow.BOOL:
		return tf.Bool, true
	}
	return 0, false
}

func isStringType(t arrow.DataType) bool {
	switch t.ID() {
	case arrow.STRING, arrow.LARGE_STRING, arrow.BINARY, arrow.LARGE_BINARY,
		arrow.STRING_VIEW, arrow.BINARY_VIEW, arrow.FIXED_SIZE_BINARY:
		return true
	case arrow.DICTIONARY:
		d := t.(*arrow.DictionaryType)
		return isStringType(d.ValueType)
	}
	return false
}

// lossless reports whether every value of leaf converts exactly to dt.
func lossless(leaf arrow.Type, dt tf.DataType) bool {
	nat, _ := naturalDType(leaf)
	if nat == dt {
		return true
	}
	if leaf == arrow.BOOL {
		return dt != tf.String && dt != tf.BFloat16
	}
	wide := map[arrow.Type][]tf.DataType{
		arrow.INT8:    {tf.Int16, tf.Int32, tf.Int64, tf.Float, tf.Double},
		arrow.INT16:   {tf.Int32, tf.Int64, tf.Float, tf.Double},
		arrow.INT32:   {tf.Int64, tf.Double},
		arrow.UINT8:   {tf.Int16, tf.Int32, tf.Int64, tf.Uint16, tf.Uint32, tf.Uint64, tf.Float, tf.Double},
		arrow.UINT16:  {tf.Int32, tf.Int64, tf.Uint32, tf.Uint64, tf.Float, tf.Double},
		arrow.UINT32:  {tf.Int64, tf.Uint64, tf.Double},
		arrow.FLOAT16: {tf.Float, tf.Double},
		arrow.FLOAT32: {tf.Double},
	}
	return slices.Contains(wide[leaf], dt)
}

func castable(dt tf.DataType) bool {
	switch dt {
	case tf.Float, tf.Double, tf.Int8, tf.Int16, tf.Int32, tf.Int64, tf.Uint8, tf.Uint16, tf.Uint32, tf.Uint64, tf.Bool, tf.Half:
		return true
	}
	return false
}

func planColumn(schema *arrow.Schema, in Input, tgt *Target) (colPlan, error) {
	idx := schema.FieldIndices(in.Column)
	if len(idx) == 0 {
		names := make([]string, schema.NumFields())
		for i, f := range schema.Fields() {
			names[i] = strconv.Quote(f.Name)
		}
		return colPlan{}, colErr(in.Column, -1, ErrMissingColumn, "not in the schema (have: %s)", strings.Join(names, ", "))
	}
	if len(idx) > 1 {
		return colPlan{}, colErr(in.Column, -1, ErrMissingColumn, "the schema has %d fields of this name", len(idx))
	}
	c := colPlan{in: in, index: idx[0], field: schema.Field(idx[0]), batch: -1, target: in.Tensor, rowElems: 1}
	if err := c.classify(); err != nil {
		return colPlan{}, err
	}

	// dtype
	want := in.DType
	if want != 0 && !want.Valid() {
		return colPlan{}, colErr(in.Column, -1, ErrType, "unknown dtype %d", int(want))
	}
	if tgt != nil {
		if want != 0 && want != tgt.DType {
			return colPlan{}, colErr(in.Column, -1, ErrType, "mapping asks for %s but target %q is %s", want, tgt.key(), tgt.DType)
		}
		want = tgt.DType
		c.target, c.graphName = tgt.key(), tgt.Name
	}
	if c.kind == kindString {
		if want == 0 {
			want = tf.String
		}
		if want != tf.String {
			return colPlan{}, colErr(in.Column, -1, ErrType, "a %s column feeds string tensors only, target %q is %s", c.field.Type, c.target, want)
		}
	} else {
		nat, _ := naturalDType(c.leaf)
		if want == 0 {
			want = nat
		}
		if want == tf.String {
			return colPlan{}, colErr(in.Column, -1, ErrType, "a %s column cannot feed the string tensor %q", c.field.Type, c.target)
		}
		if !castable(want) {
			return colPlan{}, colErr(in.Column, -1, ErrType, "tensor %q has dtype %s, which the feeder does not produce", c.target, want)
		}
		if !lossless(c.leaf, want) && !in.Cast {
			return colPlan{}, colErr(in.Column, -1, ErrType, "%s values do not convert to %s without loss (set Cast to allow it)", nat, want)
		}
		c.same = nat == want && c.leaf != arrow.BOOL
	}
	c.dtype = want

	// shape
	var tshape []int64 // target row shape, nil: unknown rank
	if tgt != nil && tgt.Shape != nil {
		if len(tgt.Shape) == 0 {
			return colPlan{}, colErr(in.Column, -1, ErrShape, "target %q is a scalar; a batch needs rank ≥ 1", c.target)
		}
		c.batch = tgt.Shape[0]
		tshape = tgt.Shape[1:]
	}
	if in.Shape != nil {
		if tshape != nil && !shapeCompatible(in.Shape, tshape) {
			return colPlan{}, colErr(in.Column, -1, ErrShape, "mapping row shape %v does not fit target %q shape %v", in.Shape, c.target, tgt.Shape)
		}
		tshape = in.Shape
	}
	rs, err := c.resolveShape(tshape)
	if err != nil {
		return colPlan{}, err
	}
	c.rowShape = rs
	c.rowElems = 1
	for _, d := range rs {
		if d < 0 {
			c.rowElems = -1
			break
		}
		c.rowElems *= d
	}

	// fill and pad
	if in.Fill != nil {
		c.hasFill = true
		if c.kind == kindString {
			switch v := in.Fill.(type) {
			case string:
				c.fillStr = []byte(v)
			case []byte:
				c.fillStr = slices.Clone(v)
			default:
				return colPlan{}, colErr(in.Column, -1, ErrType, "fill for a string column must be a string, got %T", in.Fill)
			}
		} else {
			b, err := encodeScalar(c.dtype, in.Fill)
			if err != nil {
				return colPlan{}, colErr(in.Column, -1, ErrType, "fill: %v", err)
			}
			c.fill = b
		}
	}
	if c.kind == kindList {
		b, err := encodeScalar(c.dtype, in.Pad)
		if err != nil {
			return colPlan{}, colErr(in.Column, -1, ErrType, "pad: %v", err)
		}
		c.pad = b
	} else if in.Length > 0 {
		return colPlan{}, colErr(in.Column, -1, ErrType, "Length applies to variable-length lists, the column is %s", c.field.Type)
	}
	return c, nil
}

// classify finds the column's kind, leaf type and natural row shape.
func (c *colPlan) classify() error {
	t := c.field.Type
	var shape []int64
	if ext, ok := t.(arrow.ExtensionType); ok {
		if fst, ok := ext.(*FixedShapeTensorType); ok {
			if !fst.identityPermutation() {
				return colErr(c.in.Column, -1, ErrType, "%s with permutation %v is not supported (only the identity layout)", TensorTypeName, fst.Permutation)
			}
			shape = slices.Clone(fst.TensorShape)
		}
		t = ext.StorageType()
	}
	if isStringType(t) {
		c.kind = kindString
		c.natShape = []int64{}
		if d, ok := t.(*arrow.DictionaryType); ok && !arrow.IsInteger(d.IndexType.ID()) {
			return colErr(c.in.Column, -1, ErrType, "dictionary index type %s is not an integer", d.IndexType)
		}
		return nil
	}
	switch tt := t.(type) {
	case *arrow.ListType, *arrow.LargeListType:
		elem := tt.(arrow.ListLikeType).Elem()
		if _, ok := naturalDType(elem.ID()); !ok {
			return colErr(c.in.Column, -1, ErrType, "list of %s is not supported (want a list of numbers or bools)", elem)
		}
		c.kind = kindList
		c.leaf = elem.ID()
		c.natShape = []int64{-1}
		if c.in.Length > 0 {
			c.natShape = []int64{int64(c.in.Length)}
		}
		return nil
	}
	var natural []int64
	for {
		if fsl, ok := t.(*arrow.FixedSizeListType); ok {
			c.levels = append(c.levels, fsl.Len())
			natural = append(natural, int64(fsl.Len()))
			t = fsl.Elem()
			continue
		}
		break
	}
	if _, ok := naturalDType(t.ID()); !ok {
		return colErr(c.in.Column, -1, ErrType, "type %s is not supported (want numbers, bools, strings, binary, fixed-size lists, lists or %s)", c.field.Type, TensorTypeName)
	}
	c.kind = kindFixed
	c.leaf = t.ID()
	if shape != nil {
		c.natShape = shape
	} else {
		c.natShape = natural
		if c.natShape == nil {
			c.natShape = []int64{}
		}
	}
	return nil
}

func shapeCompatible(a, b []int64) bool {
	if len(a) != len(b) {
		// different ranks can still reshape if both are fully known
		na, oka := knownElems(a)
		nb, okb := knownElems(b)
		return !oka || !okb || na == nb
	}
	for i := range a {
		if a[i] >= 0 && b[i] >= 0 && a[i] != b[i] {
			return false
		}
	}
	return true
}

func knownElems(s []int64) (int64, bool) {
	n := int64(1)
	for _, d := range s {
		if d < 0 {
			return 0, false
		}
		n *= d
	}
	return n, true
}

// resolveShape turns the wanted row shape (nil: take the column's) into the
// fed row shape, reshaping when the element counts agree.
func (c *colPlan) resolveShape(want []int64) ([]int64, error) {
	nat := c.natShape
	if want == nil {
		return slices.Clone(nat), nil
	}
	natN, natKnown := knownElems(nat)
	if !natKnown {
		// a list without Length: only [-1] or [n] can be fed; n is checked per batch.
		if len(want) != 1 {
			return nil, colErr(c.in.Column, -1, ErrShape, "a variable-length list feeds rank-2 tensors, target %q wants rows of shape %v (map it with len=N, feeder.Input.Length, to pad or truncate)", c.target, want)
		}
		return slices.Clone(want), nil
	}
	out := slices.Clone(want)
	unknown := -1
	prod := int64(1)
	for i, d := range out {
		if d < 0 {
			if unknown >= 0 {
				// several unknown dims: they must line up with the column's own shape
				if len(want) == len(nat) {
					for j := range out {
						if out[j] < 0 {
							out[j] = nat[j]
						}
					}
					return c.checkElems(out, natN, want)
				}
				return nil, colErr(c.in.Column, -1, ErrShape, "cannot fit rows of shape %v into target %q rows %v", nat, c.target, want)
			}
			unknown = i
			continue
		}
		prod *= d
	}
	if unknown >= 0 {
		if prod == 0 || natN%prod != 0 {
			return nil, colErr(c.in.Column, -1, ErrShape, "rows of shape %v (%d elements) do not fit target %q rows %v", nat, natN, c.target, want)
		}
		out[unknown] = natN / prod
	}
	return c.checkElems(out, natN, want)
}

func (c *colPlan) checkElems(out []int64, natN int64, want []int64) ([]int64, error) {
	n, _ := knownElems(out)
	if n != natN {
		return nil, colErr(c.in.Column, -1, ErrShape, "rows of shape %v (%d elements) do not fit target %q rows %v (%d elements)", c.natShape, natN, c.target, want, n)
	}
	return out, nil
}

// encodeScalar encodes v as one element of dt.
func encodeScalar(dt tf.DataType, v any) ([]byte, error) {
	var f float64
	var i int64
	var u uint64
	isInt, isUint := false, false
	switch x := v.(type) {
	case float64:
		f = x
	case float32:
		f = float64(x)
	case int:
		i, isInt = int64(x), true
	case int8:
		i, isInt = int64(x), true
	case int16:
		i, isInt = int64(x), true
	case int32:
		i, isInt = int64(x), true
	case int64:
		i, isInt = x, true
	case uint:
		u, isUint = uint64(x), true
	case uint8:
		u, isUint = uint64(x), true
	case uint16:
		u, isUint = uint64(x), true
	case uint32:
		u, isUint = uint64(x), true
	case uint64:
		u, isUint = x, true
	case bool:
		if x {
			i = 1
		}
		isInt = true
	case string:
		s := strings.TrimSpace(x)
		switch strings.ToLower(s) {
		case "true":
			i, isInt = 1, true
		case "false":
			i, isInt = 0, true
		default:
			if n, err := strconv.ParseInt(s, 0, 64); err == nil {
				i, isInt = n, true
			} else if n, err := strconv.ParseUint(s, 0, 64); err == nil {
				u, isUint = n, true
			} else if n, err := strconv.ParseFloat(s, 64); err == nil {
				f = n
			} else {
				return nil, fmt.Errorf("%q is not a number", x)
			}
		}
	default:
		return nil, fmt.Errorf("want a number, bool or numeric string, got %T", v)
	}
	if isInt {
		f = float64(i)
	} else if isUint {
		f = float64(u)
		i = int64(u)
	} else {
		i = int64(f)
		u = uint64(f)
	}
	if isInt {
		u = uint64(i)
	}
	integral := isInt || isUint || (f == math.Trunc(f) && !math.IsInf(f, 0))
	inRange := func(lo, hi float64) error {
		if !integral || f < lo || f > hi {
			return fmt.Errorf("%v does not fit %s", v, dt)
		}
		return nil
	}
	b := make([]byte, dt.Size())
	switch dt {
	case tf.Float:
		*asPtr[float32](b) = float32(f)
	case tf.Double:
		*asPtr[float64](b) = f
	case tf.Half:
		*asPtr[uint16](b) = float16.New(float32(f)).Uint16()
	case tf.Bool:
		if f != 0 && f != 1 {
			return nil, fmt.Errorf("%v is not a bool (want 0, 1, true or false)", v)
		}
		if f == 1 {
			b[0] = 1
		}
	case tf.Int8:
		if err := inRange(math.MinInt8, math.MaxInt8); err != nil {
			return nil, err
		}
		*asPtr[int8](b) = int8(i)
	case tf.Int16:
		if err := inRange(math.MinInt16, math.MaxInt16); err != nil {
			return nil, err
		}
		*asPtr[int16](b) = int16(i)
	case tf.Int32:
		if err := inRange(math.MinInt32, math.MaxInt32); err != nil {
			return nil, err
		}
		*asPtr[int32](b) = int32(i)
	case tf.Int64:
		if !integral || (isUint && u > math.MaxInt64) || (!isInt && !isUint && (f < -(1<<63) || f >= 1<<63)) {
			return nil, fmt.Errorf("%v does not fit %s", v, dt)
		}
		*asPtr[int64](b) = i
	case tf.Uint8:
		if err := inRange(0, math.MaxUint8); err != nil {
			return nil, err
		}
		b[0] = uint8(i)
	case tf.Uint16:
		if err := inRange(0, math.MaxUint16); err != nil {
			return nil, err
		}
		*asPtr[uint16](b) = uint16(i)
	case tf.Uint32:
		if err := inRange(0, math.MaxUint32); err != nil {
			return nil, err
		}
		*asPtr[uint32](b) = uint32(i)
	case tf.Uint64:
		if !integral || (isInt && i < 0) || (!isInt && !isUint && (f < 0 || f >= 1<<64)) {
			return nil, fmt.Errorf("%v does not fit %s", v, dt)
		}
		if isInt {
			u = uint64(i)
		}
		*asPtr[uint64](b) = u
	default:
		return nil, fmt.Errorf("no scalar encoding for %s", dt)
	}
	return b, nil
}
