package tf

import (
	"strconv"
	"strings"
)

// TensorSpec describes a tensor of a graph: which one, its element type and
// its static shape. It is the one description every gotflow package uses;
// where callers know a tensor by another name (a signature alias, a bundle
// manifest's name, a mapping's name), the type that holds the spec adds an
// Alias field next to it.
type TensorSpec struct {
	// Name is the graph tensor, "op:index" (as Output.Name returns it).
	// Graph.Output also resolves "op" alone as index 0.
	Name string
	// DType is the element type; zero when it is not known.
	DType DataType
	// Shape is the static shape: -1 for a dimension of unknown size, nil
	// for an unknown rank, empty (not nil) for a scalar.
	Shape []int64
}

// String formats the spec as "op:0: float32[-1,8]": "[]" for a scalar,
// "<unknown rank>" for a nil shape and "invalid" for a zero DType.
func (s TensorSpec) String() string {
	return s.Name + ": " + dtypeName(s.DType) + ShapeString(s.Shape)
}

// ShapeString formats a shape as "[-1,8]": "[]" for a scalar and
// "<unknown rank>" for nil.
func ShapeString(shape []int64) string {
	if shape == nil {
		return "<unknown rank>"
	}
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = strconv.FormatInt(d, 10)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func dtypeName(d DataType) string {
	if d == 0 {
		return "invalid"
	}
	return d.String()
}

// Spec describes the output as a TensorSpec. It fails (with ErrClosed once
// the graph is closed) only when the graph cannot report the shape, and
// then returns a zero spec.
func (o Output) Spec() (TensorSpec, error) {
	shape, ok, err := o.Shape()
	if err != nil {
		return TensorSpec{}, err
	}
	s := TensorSpec{Name: o.Name(), DType: o.DataType()}
	if ok {
		s.Shape = shape
	}
	return s, nil
}

// CompatibleShapes reports whether two static shapes can describe the same
// tensor: a nil shape (unknown rank) fits any, otherwise the ranks are
// equal and every dimension known in both (≥ 0) is the same.
func CompatibleShapes(a, b []int64) bool {
	if a == nil || b == nil {
		return true
	}
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] >= 0 && b[i] >= 0 && a[i] != b[i] {
			return false
		}
	}
	return true
}
