package ps

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/gotflow/gotflow/ps/pspb"
)

// Variable declares a parameter-server variable: a float32 tensor with a
// name, a shape and initial values (row-major, len = product of Shape).
// Trainable variables are updated by gradients through the optimizer;
// non-trainable ones (batch-norm statistics) only by Client.Assign.
type Variable struct {
	Name      string
	Shape     []int64
	Trainable bool
	Init      []float32
}

// Tensor carries the values of one registered variable, row-major; its
// length must equal the number of elements of the variable.
type Tensor struct {
	Name   string
	Values []float32
}

// numElements returns the number of elements of shape, or an error naming
// the variable if a dimension is negative or the product overflows.
func numElements(name string, shape []int64) (int, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("ps: variable %q: shape %v has a negative dimension", name, shape)
		}
		if d != 0 && n > math.MaxInt32*16/d {
			return 0, fmt.Errorf("ps: variable %q: shape %v has too many elements", name, shape)
		}
		n *= d
	}
	return int(n), nil
}

// littleEndian is true on the platforms where float32 memory is already
// the wire encoding.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// encodeFloat32 returns the little-endian bytes of v in a new slice.
func encodeFloat32(v []float32) []byte {
	if littleEndian && len(v) > 0 {
		return append(makeNoZero(4*len(v)), unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))...)
	}
	out := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(x))
	}
	return out
}

// decodeInto writes the n elements carried by c into dst (len n), converting
// from the chunk's dtype. It returns an error naming the chunk if the dtype
// is unsupported or the payload length does not match.
func decodeInto(dst []float32, c *pspb.Chunk) error {
	n := len(dst)
	switch c.GetDtype() {
	case pspb.DType_DTYPE_FLOAT32:
		if len(c.GetData()) != 4*n {
			return fmt.Errorf("ps: %s: %d bytes of float32, want %d (%d elements)", chunkName(c), len(c.GetData()), 4*n, n)
		}
		if n == 0 {
			return nil
		}
		if littleEndian {
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*n), c.GetData())
			return nil
		}
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(c.GetData()[4*i:]))
		}
	case pspb.DType_DTYPE_FLOAT16:
		if len(c.GetData()) != 2*n {
			return fmt.Errorf("ps: %s: %d bytes of float16, want %d (%d elements)", chunkName(c), len(c.GetData()), 2*n, n)
		}
		for i := range dst {
			dst[i] = halfToFloat(binary.LittleEndian.Uint16(c.GetData()[2*i:]))
		}
	default:
		return fmt.Errorf("ps: %s: dtype %v not supported (want DTYPE_FLOAT32, or DTYPE_FLOAT16 as transport)", chunkName(c), c.GetDtype())
	}
	return nil
}

// encodeChunk encodes v as a chunk of the given transport dtype.
func encodeChunk(name string, index uint32, v []float32, dtype pspb.DType) *pspb.Chunk {
	c := &pspb.Chunk{Name: name, Index: index, Dtype: dtype}
	if dtype == pspb.DType_DTYPE_FLOAT16 {
		b := make([]byte, 2*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint16(b[2*i:], floatToHalf(x))
		}
		c.Data = b
		return c
	}
	c.Dtype = pspb.DType_DTYPE_FLOAT32
	c.Data = encodeFloat32(v)
	return c
}

func chunkName(c *pspb.Chunk) string {
	return fmt.Sprintf("variable %q chunk %d", c.GetName(), c.GetIndex())
}

// floatToHalf converts to IEEE 754 binary16, rounding to nearest even;
// values beyond the half range become ±Inf, NaN stays NaN.
func floatToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - e)
		half := mant >> shift
		rem := mant & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | uint16(half)
	}
	half := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++ // may carry into the exponent, which is the right rounding
	}
	return sign | uint16(half)
}

// halfToFloat converts IEEE 754 binary16 to float32 exactly.
func halfToFloat(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		f := float32(mant) / 1024 / 16384
		if sign != 0 {
			return -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp-15+127)<<23 | mant<<13)
}

// allFinite reports whether v holds no NaN or Inf, and the first bad index.
func allFinite(v []float32) (int, bool) {
	// Two elements per 64-bit word: an element's exponent bits are all ones
	// exactly when adding 1 to its exponent carries into its sign bit, so
	// the whole slice is checked with one add and an OR per word; the bad
	// element is only looked for when there is one.
	if p := unsafe.SliceData(v); len(v) >= 2 && uintptr(unsafe.Pointer(p))%8 == 0 {
		var acc uint64
		for _, w := range unsafe.Slice((*uint64)(unsafe.Pointer(p)), len(v)/2) {
			acc |= (w&0x7f8000007f800000 + 0x0080000000800000) & 0x8000000080000000
		}
		if acc == 0 && (len(v)%2 == 0 || math.Float32bits(v[len(v)-1])&0x7f800000 != 0x7f800000) {
			return 0, true
		}
	}
	for i, x := range v {
		if math.Float32bits(x)&0x7f800000 == 0x7f800000 {
			return i, false
		}
	}
	return 0, true
}
