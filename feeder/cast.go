package feeder

import (
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/float16"

	"github.com/gotflow/gotflow/tf"
)

type number interface {
	~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64 | ~float32 | ~float64
}

// as views b as a []T without copying.
func as[T any](b []byte) []T {
	if len(b) == 0 {
		return nil
	}
	var z T
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/int(unsafe.Sizeof(z)))
}

func asPtr[T any](b []byte) *T { return (*T)(unsafe.Pointer(unsafe.SliceData(b))) }

func conv[S, D number](dst []D, src []S) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = D(v)
	}
}

// castFrom writes src converted to dt into dst.
func castFrom[S number](dst []byte, dt tf.DataType, src []S) {
	switch dt {
	case tf.Float:
		conv(as[float32](dst), src)
	case tf.Double:
		conv(as[float64](dst), src)
	case tf.Int8:
		conv(as[int8](dst), src)
	case tf.Int16:
		conv(as[int16](dst), src)
	case tf.Int32:
		conv(as[int32](dst), src)
	case tf.Int64:
		conv(as[int64](dst), src)
	case tf.Uint8:
		conv(as[uint8](dst), src)
	case tf.Uint16:
		conv(as[uint16](dst), src)
	case tf.Uint32:
		conv(as[uint32](dst), src)
	case tf.Uint64:
		conv(as[uint64](dst), src)
	case tf.Bool:
		d := dst[:len(src)]
		for i, v := range src {
			if v != 0 {
				d[i] = 1
			} else {
				d[i] = 0
			}
		}
	case tf.Half:
		d := as[uint16](dst)[:len(src)]
		for i, v := range src {
			d[i] = float16.New(float32(v)).Uint16()
		}
	default:
		panic("feeder: castFrom to " + dt.String())
	}
}

// castLeaf writes count leaf values of type lt, starting at element start of
// the leaf data buffer vals (a bitmap for BOOL), into dst as dt.
func castLeaf(dst []byte, dt tf.DataType, lt arrow.Type, vals []byte, start, count int, same bool) {
	if count == 0 {
		return
	}
	if lt == arrow.BOOL {
		switch size := dt.Size(); dt {
		case tf.Half:
			one := float16.New(1).Uint16()
			d := as[uint16](dst)
			for i := 0; i < count; i++ {
				if bitutil.BitIsSet(vals, start+i) {
					d[i] = one
				} else {
					d[i] = 0
				}
			}
		default:
			clear(dst[:count*size])
			for i := 0; i < count; i++ {
				if bitutil.BitIsSet(vals, start+i) {
					setOne(dst[i*size:], dt)
				}
			}
		}
		return
	}
	if same {
		w := dt.Size()
		copy(dst[:count*w], vals[start*w:(start+count)*w])
		return
	}
	switch lt {
	case arrow.INT8:
		castFrom(dst, dt, as[int8](vals)[start:start+count])
	case arrow.INT16:
		castFrom(dst, dt, as[int16](vals)[start:start+count])
	case arrow.INT32:
		castFrom(dst, dt, as[int32](vals)[start:start+count])
	case arrow.INT64:
		castFrom(dst, dt, as[int64](vals)[start:start+count])
	case arrow.UINT8:
		castFrom(dst, dt, as[uint8](vals)[start:start+count])
	case arrow.UINT16:
		castFrom(dst, dt, as[uint16](vals)[start:start+count])
	case arrow.UINT32:
		castFrom(dst, dt, as[uint32](vals)[start:start+count])
	case arrow.UINT64:
		castFrom(dst, dt, as[uint64](vals)[start:start+count])
	case arrow.FLOAT32:
		castFrom(dst, dt, as[float32](vals)[start:start+count])
	case arrow.FLOAT64:
		castFrom(dst, dt, as[float64](vals)[start:start+count])
	case arrow.FLOAT16:
		src := as[uint16](vals)[start : start+count]
		if dt == tf.Half {
			copy(as[uint16](dst), src)
			return
		}
		var tmp [256]float32
		for i := 0; i < len(src); i += len(tmp) {
			n := min(len(tmp), len(src)-i)
			for j := 0; j < n; j++ {
				tmp[j] = float16.FromBits(src[i+j]).Float32()
			}
			castFrom(dst[i*dt.Size():], dt, tmp[:n])
		}
	default:
		panic("feeder: castLeaf from " + lt.String())
	}
}

func setOne(b []byte, dt tf.DataType) {
	switch dt {
	case tf.Float:
		*asPtr[float32](b) = 1
	case tf.Double:
		*asPtr[float64](b) = 1
	case tf.Int8, tf.Uint8, tf.Bool:
		b[0] = 1
	case tf.Int16, tf.Uint16:
		*asPtr[uint16](b) = 1
	case tf.Int32, tf.Uint32:
		*asPtr[uint32](b) = 1
	case tf.Int64, tf.Uint64:
		*asPtr[uint64](b) = 1
	}
}

// fillElems writes n copies of the element e into dst.
func fillElems(dst []byte, e []byte, n int) {
	w := len(e)
	if n == 0 || w == 0 {
		return
	}
	copy(dst[:w], e)
	for done := w; done < n*w; done *= 2 {
		copy(dst[done:n*w], dst[:done])
	}
}
