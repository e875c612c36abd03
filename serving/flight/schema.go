package flight

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"google.golang.org/grpc/codes"

	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/tf"
)

// Field metadata keys of the schemas this package writes (and reads on
// input columns).
const (
	// MetaDType is the tensor's TensorFlow element type ("float32",
	// "bfloat16", "string", ...).
	MetaDType = "gotflow.dtype"
	// MetaShape is a row's shape: the tensor's shape without its first
	// (batch) dimension, as a JSON array with -1 for an unknown
	// dimension ("[28,28,1]"; "[]" for one value per row). It is absent
	// when the signature does not know the tensor's rank.
	MetaShape = "gotflow.shape"
)

// Keys of Arrow's canonical fixed-shape tensor extension, accepted as
// the shape of an input column.
const (
	extName          = "ARROW:extension:name"
	extMeta          = "ARROW:extension:metadata"
	fixedShapeTensor = "arrow.fixed_shape_tensor"
)

// layout is how a tensor's rows are laid out in a column.
type layout int

const (
	// flatLayout: one value per row, a primitive column (rank-1 tensors).
	flatLayout layout = iota
	// fixedLayout: fixed_size_list<elem>[width], every inner dimension
	// known.
	fixedLayout
	// listLayout: list<elem>, some inner dimension (or the rank) unknown.
	listLayout
)

// column is a signature tensor as a Flight column.
type column struct {
	info  serving.TensorInfo
	elem  arrow.DataType
	kind  layout
	inner []int64 // the row shape; nil when the rank is unknown
	width int     // values per row (fixedLayout and flatLayout)
	field arrow.Field
}

// elemType is the Arrow type of a TensorFlow element type's values.
func elemType(dt tf.DataType) arrow.DataType {
	switch dt {
	case tf.Float:
		return arrow.PrimitiveTypes.Float32
	case tf.Double:
		return arrow.PrimitiveTypes.Float64
	case tf.Half:
		return arrow.FixedWidthTypes.Float16
	case tf.BFloat16:
		return arrow.PrimitiveTypes.Uint16
	case tf.Int8:
		return arrow.PrimitiveTypes.Int8
	case tf.Int16:
		return arrow.PrimitiveTypes.Int16
	case tf.Int32:
		return arrow.PrimitiveTypes.Int32
	case tf.Int64:
		return arrow.PrimitiveTypes.Int64
	case tf.Uint8:
		return arrow.PrimitiveTypes.Uint8
	case tf.Uint16:
		return arrow.PrimitiveTypes.Uint16
	case tf.Uint32:
		return arrow.PrimitiveTypes.Uint32
	case tf.Uint64:
		return arrow.PrimitiveTypes.Uint64
	case tf.Bool:
		return arrow.FixedWidthTypes.Boolean
	case tf.String:
		return arrow.BinaryTypes.Binary
	}
	return nil
}

// accepts reports whether an input of type dt takes values of Arrow type
// id; cast is set when they are converted (float64 for float32).
func accepts(dt tf.DataType, id arrow.Type) (ok, cast bool) {
	switch dt {
	case tf.Float:
		return id == arrow.FLOAT32 || id == arrow.FLOAT64, id == arrow.FLOAT64
	case tf.String:
		switch id {
		case arrow.BINARY, arrow.STRING, arrow.LARGE_BINARY, arrow.LARGE_STRING:
			return true, false
		}
		return false, false
	}
	e := elemType(dt)
	return e != nil && e.ID() == id, false
}

// newColumn describes how a signature tensor travels.
func newColumn(info serving.TensorInfo, what string) (*column, error) {
	c := &column{info: info, elem: elemType(info.DType)}
	if c.elem == nil {
		return nil, serving.Errorf(codes.FailedPrecondition, "%s %q has type %s, which Flight does not carry", what, info.Name, info.DType)
	}
	md := map[string]string{MetaDType: info.DType.String()}
	switch {
	case info.Shape == nil:
		c.kind = listLayout
	case len(info.Shape) == 0:
		return nil, serving.Errorf(codes.FailedPrecondition, "%s %q is a scalar: Flight carries tensors with one row per example (leave it out with the \"outputs\" filter)", what, info.Name)
	default:
		c.inner = slices.Clone(info.Shape[1:])
		c.width = 1
		c.kind = fixedLayout
		if len(c.inner) == 0 {
			c.kind = flatLayout
		}
		for _, d := range c.inner {
			if d < 0 {
				c.kind = listLayout
				break
			}
			c.width *= int(d)
		}
		md[MetaShape] = shapeString(c.inner)
	}
	if c.kind == fixedLayout && c.width > 1<<31-1 {
		return nil, serving.Errorf(codes.FailedPrecondition, "%s %q: %d values per row is too many for a fixed_size_list", what, info.Name, c.width)
	}
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	vals := make([]string, len(keys))
	for i, k := range keys {
		vals[i] = md[k]
	}
	c.field = arrow.Field{Name: info.Name, Type: c.columnType(), Nullable: false, Metadata: arrow.NewMetadata(keys, vals)}
	return c, nil
}

func (c *column) columnType() arrow.DataType {
	switch c.kind {
	case flatLayout:
		return c.elem
	case fixedLayout:
		return arrow.FixedSizeListOf(int32(c.width), c.elem)
	}
	return arrow.ListOf(c.elem)
}

// want describes the columns an input accepts, for error messages.
func (c *column) want() string {
	e := c.elem.String()
	if c.info.DType == tf.String {
		e = "binary"
	}
	alt := ""
	switch c.info.DType {
	case tf.Float:
		alt = "; float64 values are cast to float32"
	case tf.String:
		alt = "; string, large_binary and large_string values are taken as bytes"
	case tf.BFloat16:
		alt = "; bfloat16 travels as the uint16 of its bits"
	}
	switch c.kind {
	case flatLayout:
		return fmt.Sprintf("%s values in a primitive column (shape %s)%s", e, shapeString(c.info.Shape), alt)
	case fixedLayout:
		if c.width == 1 {
			return fmt.Sprintf("%s values in a primitive column, fixed_size_list<%s>[1] or list<%s> with 1 value per row (shape %s)%s", e, e, e, shapeString(c.info.Shape), alt)
		}
		return fmt.Sprintf("%s values in fixed_size_list<%s>[%d] or list<%s> with %d values per row (shape %s)%s", e, e, c.width, e, c.width, shapeString(c.info.Shape), alt)
	}
	if c.info.Shape == nil {
		return fmt.Sprintf("%s values in a primitive column, or fixed_size_list<%s> or list<%s> with the same number of values in every row (shape unknown)%s", e, e, e, alt)
	}
	return fmt.Sprintf("%s values in fixed_size_list<%s> or list<%s> with the same number of values in every row (shape %s)%s", e, e, e, shapeString(c.info.Shape), alt)
}

// checkType checks an input column's type, before any data: its nesting
// (fixed-size lists, lists, large lists), its element type and, when the
// nesting is made of fixed-size lists only, its values per row.
func (c *column) checkType(f arrow.Field) error {
	t := f.Type
	var dims []int64
	fixed := true
	for {
		if ext, ok := t.(arrow.ExtensionType); ok {
			t = ext.StorageType()
			continue
		}
		switch l := t.(type) {
		case *arrow.FixedSizeListType:
			dims = append(dims, int64(l.Len()))
			t = l.Elem()
			continue
		case *arrow.ListType:
			fixed = false
			dims = append(dims, -1)
			t = l.Elem()
			continue
		case *arrow.LargeListType:
			fixed = false
			dims = append(dims, -1)
			t = l.Elem()
			continue
		}
		break
	}
	if ok, _ := accepts(c.info.DType, t.ID()); !ok {
		return serving.InvalidArgument("column %q: type %s, input %q wants %s", f.Name, typeString(f.Type), c.info.Name, c.want())
	}
	if c.kind == flatLayout && len(dims) > 0 {
		return serving.InvalidArgument("column %q: type %s, input %q wants %s", f.Name, typeString(f.Type), c.info.Name, c.want())
	}
	if fixed {
		if _, err := c.shape(f, 0, dims); err != nil {
			return err
		}
	}
	return nil
}

// shape is the tensor shape of rows rows of a column whose nesting gave
// dims per row.
func (c *column) shape(f arrow.Field, rows int, dims []int64) ([]int64, error) {
	per := product(dims)
	out := func(inner []int64) []int64 { return append([]int64{int64(rows)}, inner...) }
	meta, hasMeta, err := metaShape(f)
	if err != nil {
		return nil, err
	}
	if slices.Contains(meta, -1) {
		hasMeta = false // a schema as this package writes it, not a concrete shape
	}
	if c.info.Shape == nil {
		if hasMeta && product(meta) == per {
			return out(meta), nil
		}
		return out(dims), nil
	}
	if c.kind == flatLayout {
		if len(dims) > 0 {
			return nil, serving.InvalidArgument("column %q: type %s, input %q wants %s", f.Name, typeString(f.Type), c.info.Name, c.want())
		}
		return out(nil), nil
	}
	if len(dims) == len(c.inner) && fits(dims, c.inner) {
		return out(dims), nil
	}
	if hasMeta {
		if !fits(meta, c.inner) || product(meta) != per {
			return nil, serving.InvalidArgument("column %q: field metadata shape %s does not fit input %q of shape %s with %d values per row",
				f.Name, shapeString(meta), c.info.Name, shapeString(c.info.Shape), per)
		}
		return out(meta), nil
	}
	unknown, known := 0, int64(1)
	for _, d := range c.inner {
		if d < 0 {
			unknown++
		} else {
			known *= d
		}
	}
	inner := slices.Clone(c.inner)
	switch {
	case unknown == 0 && known == per:
		return out(inner), nil
	case unknown == 1 && (known > 0 && per%known == 0 || known == 0 && per == 0):
		fill := int64(0)
		if known > 0 {
			fill = per / known
		}
		inner[slices.Index(inner, -1)] = fill
		return out(inner), nil
	case unknown > 1 && per >= 0:
		return nil, serving.InvalidArgument("column %q: input %q has shape %s with several unknown dimensions: nest fixed-size lists of the row's shape or set the field metadata %q to it",
			f.Name, c.info.Name, shapeString(c.info.Shape), MetaShape)
	}
	return nil, serving.InvalidArgument("column %q: %d values per row, input %q wants %s", f.Name, per, c.info.Name, c.want())
}

// metaShape reads a row shape from an input field's metadata: MetaShape,
// or the shape of Arrow's fixed-shape tensor extension.
func metaShape(f arrow.Field) ([]int64, bool, error) {
	if i := f.Metadata.FindKey(MetaShape); i >= 0 {
		var s []int64
		if err := json.Unmarshal([]byte(f.Metadata.Values()[i]), &s); err != nil {
			return nil, false, serving.InvalidArgument("column %q: field metadata %s=%q is not a JSON array of integers", f.Name, MetaShape, f.Metadata.Values()[i])
		}
		return s, true, nil
	}
	if i := f.Metadata.FindKey(extName); i >= 0 && f.Metadata.Values()[i] == fixedShapeTensor {
		var m struct {
			Shape       []int64 `json:"shape"`
			Permutation []int64 `json:"permutation"`
		}
		if j := f.Metadata.FindKey(extMeta); j >= 0 {
			if err := json.Unmarshal([]byte(f.Metadata.Values()[j]), &m); err != nil {
				return nil, false, serving.InvalidArgument("column %q: fixed_shape_tensor metadata %q: %v", f.Name, f.Metadata.Values()[j], err)
			}
		}
		for i, p := range m.Permutation {
			if p != int64(i) {
				return nil, false, serving.InvalidArgument("column %q: fixed_shape_tensor with permutation %v: send the tensor in row-major order", f.Name, m.Permutation)
			}
		}
		if m.Shape != nil {
			return m.Shape, true, nil
		}
	}
	return nil, false, nil
}

// fits reports whether a concrete shape matches a signature's (-1 matches
// anything).
func fits(got, want []int64) bool {
	if len(got) != len(want) {
		return false
	}
	for i, d := range want {
		if d >= 0 && got[i] != d {
			return false
		}
	}
	return true
}

func product(dims []int64) int64 {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	return n
}

func shapeString(s []int64) string {
	if s == nil {
		return "unknown"
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// typeString names an Arrow type briefly: fixed_size_list<float32>[4].
func typeString(t arrow.DataType) string {
	switch l := t.(type) {
	case *arrow.FixedSizeListType:
		return fmt.Sprintf("fixed_size_list<%s>[%d]", typeString(l.Elem()), l.Len())
	case *arrow.ListType:
		return fmt.Sprintf("list<%s>", typeString(l.Elem()))
	case *arrow.LargeListType:
		return fmt.Sprintf("large_list<%s>", typeString(l.Elem()))
	case arrow.ExtensionType:
		return fmt.Sprintf("%s<%s>", l.ExtensionName(), typeString(l.StorageType()))
	}
	return t.String()
}

// signaturePlan is what a flight runs: the version's signature and its
// inputs and outputs as columns.
type signaturePlan struct {
	target  target
	meta    *serving.Metadata
	sigKey  string
	sig     serving.Signature
	inputs  []*column
	byName  map[string]*column
	outputs []*column
	in, out *arrow.Schema
}

// newPlan resolves a target against the metadata of the version it names.
func newPlan(t target, meta *serving.Metadata) (*signaturePlan, error) {
	p := &signaturePlan{target: t, meta: meta, sigKey: t.Signature, byName: map[string]*column{}}
	if p.sigKey == "" {
		p.sigKey = serving.DefaultSignature
	}
	sig, ok := meta.Signatures[p.sigKey]
	if !ok {
		var have []string
		for k := range meta.Signatures {
			if !strings.HasPrefix(k, "__") {
				have = append(have, k)
			}
		}
		slices.Sort(have)
		return nil, serving.Errorf(codes.FailedPrecondition, "Serving signature key %q not found in model %s version %d (have: %s)", p.sigKey, meta.Model, meta.Version, strings.Join(have, ", "))
	}
	if !sig.Servable {
		return nil, serving.Errorf(codes.FailedPrecondition, "signature %q of model %s has sparse or composite tensors, which cannot be served", p.sigKey, meta.Model)
	}
	p.sig = sig
	var fields []arrow.Field
	for _, ti := range sig.Inputs {
		c, err := newColumn(ti, "input")
		if err != nil {
			return nil, err
		}
		p.inputs = append(p.inputs, c)
		p.byName[ti.Name] = c
		fields = append(fields, c.field)
	}
	p.in = arrow.NewSchema(fields, nil)
	fields = nil
	var all []string
	for _, ti := range sig.Outputs {
		all = append(all, ti.Name)
	}
	seen := map[string]bool{}
	for _, o := range t.Outputs {
		if !slices.Contains(all, o) {
			return nil, serving.InvalidArgument("output tensor alias not found in signature: %s Outputs expected to be in the set {%s}.", o, strings.Join(all, ","))
		}
		if seen[o] {
			return nil, serving.InvalidArgument("duplicate output tensor alias in the output filter: %s", o)
		}
		seen[o] = true
	}
	for _, ti := range sig.Outputs {
		if len(t.Outputs) > 0 && !seen[ti.Name] {
			continue
		}
		c, err := newColumn(ti, "output")
		if err != nil {
			return nil, err
		}
		p.outputs = append(p.outputs, c)
		fields = append(fields, c.field)
	}
	p.out = arrow.NewSchema(fields, nil)
	return p, nil
}

// checkSchema checks a client's input schema: one column per input, named
// by its alias, of a type the input accepts.
func (p *signaturePlan) checkSchema(s *arrow.Schema) error {
	seen := map[string]bool{}
	for _, f := range s.Fields() {
		c := p.byName[f.Name]
		if c == nil {
			return serving.InvalidArgument("column %q is not an input of model %s version %d signature %s (inputs: %s)", f.Name, p.meta.Model, p.meta.Version, p.sigKey, p.inputNames())
		}
		if seen[f.Name] {
			return serving.InvalidArgument("column %q appears twice", f.Name)
		}
		seen[f.Name] = true
		if err := c.checkType(f); err != nil {
			return err
		}
	}
	var missing []string
	for _, c := range p.inputs {
		if !seen[c.info.Name] {
			missing = append(missing, c.info.Name)
		}
	}
	if len(missing) > 0 {
		return serving.InvalidArgument("missing column for input %s of model %s version %d signature %s: send one column per input (inputs: %s)", strings.Join(missing, ", "), p.meta.Model, p.meta.Version, p.sigKey, p.inputNames())
	}
	return nil
}

func (p *signaturePlan) inputNames() string {
	var n []string
	for _, c := range p.inputs {
		n = append(n, c.info.Name)
	}
	return strings.Join(n, ", ")
}
