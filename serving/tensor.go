package serving

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/gotflow/gotflow/tf"
)

// Tensor is a request or response tensor in Go memory: what every front
// end decodes its wire format into and encodes the results from. Fixed
// width elements are in Data (row-major, little-endian, as TensorFlow
// lays them out); string elements are in Strings.
type Tensor struct {
	DType   tf.DataType
	Shape   []int64
	Data    []byte
	Strings [][]byte
}

// NumElements is the product of the shape (1 for a scalar).
func (t *Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Check reports a tensor whose buffer does not match its type and shape.
func (t *Tensor) Check(name string) error {
	if !t.DType.Valid() {
		return InvalidArgument("input %q: unsupported data type %s", name, t.DType)
	}
	if len(t.Shape) > tf.MaxRank {
		return InvalidArgument("input %q: rank %d is more than TensorFlow's maximum of %d dimensions", name, len(t.Shape), tf.MaxRank)
	}
	n := int64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return InvalidArgument("input %q: negative dimension in shape %v", name, t.Shape)
		}
		if d > 0 && n > math.MaxInt32*int64(64)/d {
			return InvalidArgument("input %q: shape %v is too large", name, t.Shape)
		}
		n *= d
	}
	if t.DType == tf.String {
		if int64(len(t.Strings)) != n {
			return InvalidArgument("input %q: %d string values for shape %v (%d elements)", name, len(t.Strings), t.Shape, n)
		}
		return nil
	}
	if want := n * int64(t.DType.Size()); int64(len(t.Data)) != want {
		return InvalidArgument("input %q: %d bytes of %s for shape %v, want %d", name, len(t.Data), t.DType, t.Shape, want)
	}
	return nil
}

// NewTensor copies values into a Tensor of the matching type.
func NewTensor[T tf.Numeric](shape []int64, values []T) *Tensor {
	t := &Tensor{DType: tf.DataTypeOf[T](), Shape: append([]int64(nil), shape...)}
	if len(values) > 0 {
		t.Data = append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(&values[0])), len(values)*int(unsafe.Sizeof(values[0])))...)
	} else {
		t.Data = []byte{}
	}
	return t
}

// Values returns a fixed-width tensor's elements as T, which must match
// its type.
func Values[T tf.Numeric](t *Tensor) ([]T, error) {
	if dt := tf.DataTypeOf[T](); dt != t.DType {
		return nil, fmt.Errorf("serving: tensor is %s, not %s", t.DType, dt)
	}
	var zero T
	n := len(t.Data) / int(unsafe.Sizeof(zero))
	out := make([]T, n)
	if n > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), len(t.Data)), t.Data)
	}
	return out, nil
}

// Float64At returns element i of a numeric tensor as float64 (bool as 0
// or 1); front ends that write JSON use it.
func (t *Tensor) Float64At(i int) float64 {
	d := t.Data
	switch t.DType {
	case tf.Float:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:])))
	case tf.Double:
		return math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:]))
	case tf.Int8:
		return float64(int8(d[i]))
	case tf.Uint8:
		return float64(d[i])
	case tf.Bool:
		if d[i] != 0 {
			return 1
		}
		return 0
	case tf.Int16:
		return float64(int16(binary.LittleEndian.Uint16(d[2*i:])))
	case tf.Uint16:
		return float64(binary.LittleEndian.Uint16(d[2*i:]))
	case tf.Half:
		return float64(halfToFloat(binary.LittleEndian.Uint16(d[2*i:])))
	case tf.BFloat16:
		return float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(d[2*i:])) << 16))
	case tf.Int32:
		return float64(int32(binary.LittleEndian.Uint32(d[4*i:])))
	case tf.Uint32:
		return float64(binary.LittleEndian.Uint32(d[4*i:]))
	case tf.Int64:
		return float64(int64(binary.LittleEndian.Uint64(d[8*i:])))
	case tf.Uint64:
		return float64(binary.LittleEndian.Uint64(d[8*i:]))
	}
	return math.NaN()
}

// Int64At returns element i of an integer tensor exactly.
func (t *Tensor) Int64At(i int) int64 {
	d := t.Data
	switch t.DType {
	case tf.Int64:
		return int64(binary.LittleEndian.Uint64(d[8*i:]))
	case tf.Uint64:
		return int64(binary.LittleEndian.Uint64(d[8*i:]))
	case tf.Int32:
		return int64(int32(binary.LittleEndian.Uint32(d[4*i:])))
	case tf.Uint32:
		return int64(binary.LittleEndian.Uint32(d[4*i:]))
	}
	return int64(t.Float64At(i))
}

// SetFloat64 stores v as element i of a numeric tensor, converted to its
// type; front ends that read JSON use it.
func (t *Tensor) SetFloat64(i int, v float64) {
	d := t.Data
	switch t.DType {
	case tf.Float:
		binary.LittleEndian.PutUint32(d[4*i:], math.Float32bits(float32(v)))
	case tf.Double:
		binary.LittleEndian.PutUint64(d[8*i:], math.Float64bits(v))
	case tf.Int8:
		d[i] = byte(int8(v))
	case tf.Uint8:
		d[i] = byte(v)
	case tf.Bool:
		d[i] = 0
		if v != 0 {
			d[i] = 1
		}
	case tf.Int16:
		binary.LittleEndian.PutUint16(d[2*i:], uint16(int16(v)))
	case tf.Uint16:
		binary.LittleEndian.PutUint16(d[2*i:], uint16(v))
	case tf.Half:
		binary.LittleEndian.PutUint16(d[2*i:], floatToHalf(float32(v)))
	case tf.BFloat16:
		binary.LittleEndian.PutUint16(d[2*i:], uint16(math.Float32bits(float32(v))>>16))
	case tf.Int32:
		binary.LittleEndian.PutUint32(d[4*i:], uint32(int32(v)))
	case tf.Uint32:
		binary.LittleEndian.PutUint32(d[4*i:], uint32(v))
	case tf.Int64:
		binary.LittleEndian.PutUint64(d[8*i:], uint64(int64(v)))
	case tf.Uint64:
		binary.LittleEndian.PutUint64(d[8*i:], uint64(v))
	}
}

// SetInt64 stores an integer exactly (int64 and uint64 beyond 2^53).
func (t *Tensor) SetInt64(i int, v int64) {
	switch t.DType {
	case tf.Int64, tf.Uint64:
		binary.LittleEndian.PutUint64(t.Data[8*i:], uint64(v))
	default:
		t.SetFloat64(i, float64(v))
	}
}

func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		f := float32(frac) / 1024 * float32(math.Pow(2, -14))
		if sign != 0 {
			return -f
		}
		return f
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}

func floatToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23&0xff) - 127 + 15
	frac := b & 0x7fffff
	switch {
	case b&0x7fffffff > 0x7f800000: // NaN
		return sign | 0x7e00
	case exp >= 0x1f:
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		frac |= 0x800000
		return sign | uint16(frac>>(14-exp))
	}
	return sign | uint16(exp)<<10 | uint16(frac>>13)
}

// toTF copies the tensor into TensorFlow memory.
func (t *Tensor) toTF() (*tf.Tensor, error) {
	if t.DType == tf.String {
		return tf.NewStringTensor(t.Shape, t.Strings)
	}
	return tf.NewTensorFill(t.DType, t.Shape, func(buf []byte) error {
		copy(buf, t.Data)
		return nil
	})
}

// fromTF copies a TensorFlow tensor into Go memory.
func fromTF(x *tf.Tensor) (*Tensor, error) {
	t := &Tensor{DType: x.DataType(), Shape: x.Shape()}
	if t.DType == tf.String {
		s, err := x.Strings()
		if err != nil {
			return nil, err
		}
		t.Strings = s
		return t, nil
	}
	if !t.DType.Valid() {
		return nil, Internal("output of unsupported type %s", t.DType)
	}
	t.Data = append([]byte(nil), x.Bytes()...)
	return t, nil
}
