package tf

import (
	"fmt"
	"reflect"
	"strings"
)

// DataType is a TensorFlow element type. Its values equal the C API's
// TF_DataType (and the DataType enum of TensorFlow's protos).
type DataType int32

// The element types gotflow handles.
const (
	Float    DataType = 1
	Double   DataType = 2
	Int32    DataType = 3
	Uint8    DataType = 4
	Int16    DataType = 5
	Int8     DataType = 6
	String   DataType = 7
	Int64    DataType = 9
	Bool     DataType = 10
	BFloat16 DataType = 14
	Uint16   DataType = 17
	Half     DataType = 19
	Uint32   DataType = 22
	Uint64   DataType = 23
)

var dtypeInfo = map[DataType]struct {
	name string
	size int
}{
	Float: {"float32", 4}, Double: {"float64", 8}, Int32: {"int32", 4}, Uint8: {"uint8", 1},
	Int16: {"int16", 2}, Int8: {"int8", 1}, String: {"string", 0}, Int64: {"int64", 8},
	Bool: {"bool", 1}, BFloat16: {"bfloat16", 2}, Uint16: {"uint16", 2}, Half: {"float16", 2},
	Uint32: {"uint32", 4}, Uint64: {"uint64", 8},
}

// String returns the numpy-style name of the type ("float32", "int64",
// "string", ...), or "DataType(N)" for a type gotflow does not handle.
func (d DataType) String() string {
	if i, ok := dtypeInfo[d]; ok {
		return i.name
	}
	return fmt.Sprintf("DataType(%d)", int32(d))
}

// Size returns the number of bytes of one element, 0 for String and for
// types gotflow does not handle.
func (d DataType) Size() int { return dtypeInfo[d].size }

// Valid reports whether gotflow handles the type.
func (d DataType) Valid() bool { _, ok := dtypeInfo[d]; return ok }

// ParseDataType parses a type name: numpy-style ("float32"), TensorFlow's
// proto enum ("DT_FLOAT") or its short form ("float", "half", "double").
func ParseDataType(s string) (DataType, error) {
	n := strings.ToLower(strings.TrimSpace(s))
	n = strings.TrimPrefix(n, "dt_")
	switch n {
	case "float":
		return Float, nil
	case "double":
		return Double, nil
	case "half":
		return Half, nil
	}
	for d, i := range dtypeInfo {
		if i.name == n {
			return d, nil
		}
	}
	return 0, fmt.Errorf("tf: unknown data type %q (want one of float32, float64, float16, bfloat16, int8, int16, int32, int64, uint8, uint16, uint32, uint64, bool, string)", s)
}

// Numeric lists the Go types whose memory layout equals a TensorFlow
// fixed-width type.
type Numeric interface {
	~float32 | ~float64 | ~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64 | ~bool
}

// DataTypeOf returns the TensorFlow type whose elements have the layout of T.
func DataTypeOf[T Numeric]() DataType {
	switch reflect.TypeFor[T]().Kind() {
	case reflect.Float32:
		return Float
	case reflect.Float64:
		return Double
	case reflect.Int8:
		return Int8
	case reflect.Int16:
		return Int16
	case reflect.Int32:
		return Int32
	case reflect.Int64:
		return Int64
	case reflect.Uint8:
		return Uint8
	case reflect.Uint16:
		return Uint16
	case reflect.Uint32:
		return Uint32
	case reflect.Uint64:
		return Uint64
	case reflect.Bool:
		return Bool
	}
	panic("tf: unreachable: Numeric type without a TensorFlow type")
}
