package feeder

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// TensorTypeName is the name of Arrow's canonical fixed-shape tensor
// extension type.
const TensorTypeName = "arrow.fixed_shape_tensor"

// FixedShapeTensorType is Arrow's canonical "arrow.fixed_shape_tensor"
// extension type: each row is a tensor of a fixed shape, stored as a
// FixedSizeList<value, product(shape)> in row-major order. It is registered
// with arrow-go when this package is imported, so IPC and Parquet files
// written by pyarrow read back with the type.
type FixedShapeTensorType struct {
	arrow.ExtensionBase `json:"-"`

	TensorShape []int64  `json:"shape"`
	DimNames    []string `json:"dim_names,omitempty"`
	Permutation []int    `json:"permutation,omitempty"`
}

// NewFixedShapeTensorType returns the tensor type of value elements and the
// given per-row shape.
func NewFixedShapeTensorType(value arrow.DataType, shape []int64) (*FixedShapeTensorType, error) {
	n, err := shapeElems(shape)
	if err != nil {
		return nil, fmt.Errorf("feeder: tensor type: %w", err)
	}
	if n > 1<<31-1 {
		return nil, fmt.Errorf("feeder: tensor type: shape %v has too many elements for a fixed-size list", shape)
	}
	return &FixedShapeTensorType{
		ExtensionBase: arrow.ExtensionBase{Storage: arrow.FixedSizeListOf(int32(n), value)},
		TensorShape:   slices.Clone(shape),
	}, nil
}

func shapeElems(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %v has a negative dimension", shape)
		}
		if d != 0 && n > (1<<62)/d {
			return 0, fmt.Errorf("shape %v has too many elements", shape)
		}
		n *= d
	}
	return n, nil
}

// ArrayType implements arrow.ExtensionType.
func (*FixedShapeTensorType) ArrayType() reflect.Type { return reflect.TypeOf(FixedShapeTensorArray{}) }

// ExtensionName implements arrow.ExtensionType.
func (*FixedShapeTensorType) ExtensionName() string { return TensorTypeName }

func (t *FixedShapeTensorType) String() string {
	return fmt.Sprintf("extension<%s[value_type=%s, shape=%v]>", TensorTypeName, t.ValueType(), t.TensorShape)
}

// ValueType returns the element type.
func (t *FixedShapeTensorType) ValueType() arrow.DataType {
	if fsl, ok := t.Storage.(*arrow.FixedSizeListType); ok {
		return fsl.Elem()
	}
	return nil
}

// Serialize implements arrow.ExtensionType.
func (t *FixedShapeTensorType) Serialize() string {
	data, _ := json.Marshal(t)
	return string(data)
}

// Deserialize implements arrow.ExtensionType; it checks that the storage is a
// fixed-size list with as many elements as the shape.
func (*FixedShapeTensorType) Deserialize(storage arrow.DataType, data string) (arrow.ExtensionType, error) {
	var out FixedShapeTensorType
	dec := json.NewDecoder(strings.NewReader(data))
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("feeder: %s metadata %q: %w", TensorTypeName, data, err)
	}
	fsl, ok := storage.(*arrow.FixedSizeListType)
	if !ok {
		return nil, fmt.Errorf("feeder: %s storage is %s, want a fixed-size list", TensorTypeName, storage)
	}
	n, err := shapeElems(out.TensorShape)
	if err != nil {
		return nil, fmt.Errorf("feeder: %s: %w", TensorTypeName, err)
	}
	if n != int64(fsl.Len()) {
		return nil, fmt.Errorf("feeder: %s shape %v has %d elements, storage list has %d", TensorTypeName, out.TensorShape, n, fsl.Len())
	}
	if out.Permutation != nil {
		if len(out.Permutation) != len(out.TensorShape) {
			return nil, fmt.Errorf("feeder: %s permutation %v does not match shape %v", TensorTypeName, out.Permutation, out.TensorShape)
		}
		seen := make([]bool, len(out.Permutation))
		for _, p := range out.Permutation {
			if p < 0 || p >= len(seen) || seen[p] {
				return nil, fmt.Errorf("feeder: %s permutation %v is not a permutation", TensorTypeName, out.Permutation)
			}
			seen[p] = true
		}
	}
	if out.DimNames != nil && len(out.DimNames) != len(out.TensorShape) {
		return nil, fmt.Errorf("feeder: %s dim_names %v do not match shape %v", TensorTypeName, out.DimNames, out.TensorShape)
	}
	out.ExtensionBase = arrow.ExtensionBase{Storage: storage}
	return &out, nil
}

// ExtensionEquals implements arrow.ExtensionType.
func (t *FixedShapeTensorType) ExtensionEquals(other arrow.ExtensionType) bool {
	o, ok := other.(*FixedShapeTensorType)
	return ok && arrow.TypeEqual(t.Storage, o.Storage) && slices.Equal(t.TensorShape, o.TensorShape) &&
		slices.Equal(t.DimNames, o.DimNames) && slices.Equal(t.Permutation, o.Permutation)
}

// identityPermutation reports whether the logical and physical layouts agree.
func (t *FixedShapeTensorType) identityPermutation() bool {
	for i, p := range t.Permutation {
		if p != i {
			return false
		}
	}
	return true
}

// FixedShapeTensorArray holds arrow.fixed_shape_tensor values.
type FixedShapeTensorArray struct {
	array.ExtensionArrayBase
}

var (
	_ arrow.ExtensionType  = (*FixedShapeTensorType)(nil)
	_ array.ExtensionArray = (*FixedShapeTensorArray)(nil)
)

func init() {
	if arrow.GetExtensionType(TensorTypeName) == nil {
		_ = arrow.RegisterExtensionType(&FixedShapeTensorType{ExtensionBase: arrow.ExtensionBase{Storage: arrow.FixedSizeListOf(1, arrow.PrimitiveTypes.Float32)}})
	}
}
