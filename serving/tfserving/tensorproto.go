package tfserving

import (
	"encoding/binary"
	"fmt"
	"math"

	tensorpb "github.com/wamuir/graft/tensorflow/core/framework/tensor_go_proto"
	tspb "github.com/wamuir/graft/tensorflow/core/framework/tensor_shape_go_proto"
	typespb "github.com/wamuir/graft/tensorflow/core/framework/types_go_proto"

	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/tf"
)

// maxFilledBytes bounds a tensor whose proto gives fewer values than its
// shape holds (the rest repeat the last value, or are zero): such a proto
// can be a few bytes long and still describe any size, so what it expands
// to is capped rather than bounded by the message size.
const maxFilledBytes = 256 << 20

// FromTensorProto decodes a TensorProto as TensorFlow's Tensor::FromProto
// does:
//
//   - the shape must be known and its dimensions non-negative; no shape
//     is a scalar;
//   - tensor_content, when not empty, must hold exactly the elements'
//     bytes (little-endian; for strings, TensorFlow's string-list
//     encoding: one varint length per element, then the bytes);
//   - otherwise the typed field of the dtype is read (float_val,
//     double_val, int_val for int8/16/32 and uint8/16, int64_val,
//     uint32_val, uint64_val, bool_val, half_val for float16 and
//     bfloat16, string_val): extra values are ignored, missing ones
//     repeat the last value given, and a field with no value gives
//     zeros (or empty strings). Fields of other types are ignored.
//
// The dtypes are those serving.Tensor holds; the others are refused.
// The error says what is wrong, without the input's name. The tensor
// shares tensor_content's and string_val's memory with p.
func FromTensorProto(p *tensorpb.TensorProto) (*serving.Tensor, error) {
	if p == nil {
		p = &tensorpb.TensorProto{}
	}
	dt := tf.DataType(p.GetDtype())
	if p.GetDtype() == typespb.DataType_DT_INVALID {
		return nil, fmt.Errorf("dtype is DT_INVALID")
	}
	if !dt.Valid() {
		return nil, fmt.Errorf("unsupported dtype %s", p.GetDtype())
	}
	shape, n, err := shapeOf(p.GetTensorShape())
	if err != nil {
		return nil, err
	}
	t := &serving.Tensor{DType: dt, Shape: shape}
	if dt == tf.String {
		t.Strings, err = stringsOf(p, n)
		return t, err
	}
	size := int64(dt.Size())
	if content := p.GetTensorContent(); len(content) > 0 && n > 0 {
		if int64(len(content)) != n*size {
			return nil, fmt.Errorf("tensor_content holds %d bytes, but %d %s elements take %d", len(content), n, dt, n*size)
		}
		t.Data = content
		return t, nil
	}
	in, put := fieldOf(p, dt)
	if int64(in) < n && n*size > maxFilledBytes {
		return nil, fmt.Errorf("shape %v holds %d elements but the proto gives %d values; the filled tensor would take %d bytes, more than %d", shape, n, in, n*size, maxFilledBytes)
	}
	t.Data = make([]byte, n*size)
	if in == 0 || n == 0 {
		return t, nil
	}
	for i := int64(0); i < n && i < int64(in); i++ {
		put(t.Data[i*size:], int(i))
	}
	if int64(in) < n {
		last := t.Data[(int64(in)-1)*size : int64(in)*size]
		for i := int64(in); i < n; i++ {
			copy(t.Data[i*size:], last)
		}
	}
	return t, nil
}

// shapeOf checks a shape proto and returns its dimensions and element
// count.
func shapeOf(s *tspb.TensorShapeProto) ([]int64, int64, error) {
	if s.GetUnknownRank() {
		return nil, 0, fmt.Errorf("the shape has an unknown rank")
	}
	shape := make([]int64, len(s.GetDim()))
	n := int64(1)
	for i, d := range s.GetDim() {
		if d.GetSize() < 0 {
			return nil, 0, fmt.Errorf("dimension %d of the shape is %d", i, d.GetSize())
		}
		shape[i] = d.GetSize()
		if shape[i] > 0 && n > math.MaxInt64/8/shape[i] {
			return nil, 0, fmt.Errorf("the shape %v has too many elements", shapeDims(s))
		}
		n *= shape[i]
	}
	return shape, n, nil
}

func shapeDims(s *tspb.TensorShapeProto) []int64 {
	out := make([]int64, len(s.GetDim()))
	for i, d := range s.GetDim() {
		out[i] = d.GetSize()
	}
	return out
}

// stringsOf decodes a string tensor's n elements.
func stringsOf(p *tensorpb.TensorProto, n int64) ([][]byte, error) {
	if content := p.GetTensorContent(); len(content) > 0 && n > 0 {
		return decodeStringList(content, n)
	}
	vals := p.GetStringVal()
	out := make([][]byte, 0, min(n, int64(len(vals))))
	for i := int64(0); i < n && i < int64(len(vals)); i++ {
		out = append(out, vals[i])
	}
	if int64(len(out)) < n {
		var last []byte
		if len(out) > 0 {
			last = out[len(out)-1]
		}
		if (n-int64(len(out)))*int64(len(last)+16) > maxFilledBytes {
			return nil, fmt.Errorf("shape holds %d elements but the proto gives %d values; the filled tensor would take more than %d bytes", n, len(vals), maxFilledBytes)
		}
		for int64(len(out)) < n {
			out = append(out, last)
		}
	}
	for i, s := range out {
		if s == nil {
			out[i] = []byte{}
		}
	}
	return out, nil
}

// decodeStringList reads TensorFlow's encoding of a string tensor's
// tensor_content: n varint32 lengths, then the strings back to back,
// nothing more.
func decodeStringList(b []byte, n int64) ([][]byte, error) {
	if n > int64(len(b)) {
		return nil, fmt.Errorf("tensor_content of %d bytes cannot hold %d strings", len(b), n)
	}
	sizes := make([]uint64, n)
	total := uint64(0)
	for i := range sizes {
		v, k := binary.Uvarint(b)
		if k <= 0 || v > math.MaxUint32 {
			return nil, fmt.Errorf("tensor_content: bad length of string %d", i)
		}
		sizes[i], b = v, b[k:]
		total += v
	}
	if total != uint64(len(b)) {
		return nil, fmt.Errorf("tensor_content: the string lengths add up to %d bytes, but %d follow them", total, len(b))
	}
	out := make([][]byte, n)
	for i, sz := range sizes {
		out[i], b = b[:sz:sz], b[sz:]
	}
	return out, nil
}

// fieldOf returns how many values the dtype's typed field holds and a
// function storing value j at the start of dst.
func fieldOf(p *tensorpb.TensorProto, dt tf.DataType) (int, func(dst []byte, j int)) {
	le := binary.LittleEndian
	switch dt {
	case tf.Float:
		v := p.GetFloatVal()
		return len(v), func(d []byte, j int) { le.PutUint32(d, math.Float32bits(v[j])) }
	case tf.Double:
		v := p.GetDoubleVal()
		return len(v), func(d []byte, j int) { le.PutUint64(d, math.Float64bits(v[j])) }
	case tf.Int32:
		v := p.GetIntVal()
		return len(v), func(d []byte, j int) { le.PutUint32(d, uint32(v[j])) }
	case tf.Int16, tf.Uint16:
		v := p.GetIntVal()
		return len(v), func(d []byte, j int) { le.PutUint16(d, uint16(v[j])) }
	case tf.Int8, tf.Uint8:
		v := p.GetIntVal()
		return len(v), func(d []byte, j int) { d[0] = byte(v[j]) }
	case tf.Int64:
		v := p.GetInt64Val()
		return len(v), func(d []byte, j int) { le.PutUint64(d, uint64(v[j])) }
	case tf.Uint32:
		v := p.GetUint32Val()
		return len(v), func(d []byte, j int) { le.PutUint32(d, v[j]) }
	case tf.Uint64:
		v := p.GetUint64Val()
		return len(v), func(d []byte, j int) { le.PutUint64(d, v[j]) }
	case tf.Bool:
		v := p.GetBoolVal()
		return len(v), func(d []byte, j int) {
			d[0] = 0
			if v[j] {
				d[0] = 1
			}
		}
	case tf.Half, tf.BFloat16:
		v := p.GetHalfVal()
		return len(v), func(d []byte, j int) { le.PutUint16(d, uint16(v[j])) }
	}
	return 0, nil
}

// ToTensorProto encodes a tensor as a TensorProto: numeric elements in
// tensor_content when asContent is set (TF Serving's
// --enable_serialization_as_tensor_content), in the dtype's typed field
// otherwise (Tensor::AsProtoField); strings always in string_val. The
// proto shares t's Data and Strings.
func ToTensorProto(t *serving.Tensor, asContent bool) *tensorpb.TensorProto {
	p := &tensorpb.TensorProto{Dtype: typespb.DataType(t.DType), TensorShape: &tspb.TensorShapeProto{}}
	for _, d := range t.Shape {
		p.TensorShape.Dim = append(p.TensorShape.Dim, &tspb.TensorShapeProto_Dim{Size: d})
	}
	if t.DType == tf.String {
		p.StringVal = t.Strings
		return p
	}
	if asContent {
		if len(t.Data) > 0 {
			p.TensorContent = t.Data
		}
		return p
	}
	le := binary.LittleEndian
	d := t.Data
	size := t.DType.Size()
	if size == 0 {
		return p
	}
	n := len(d) / size
	switch t.DType {
	case tf.Float:
		p.FloatVal = make([]float32, n)
		for i := range n {
			p.FloatVal[i] = math.Float32frombits(le.Uint32(d[4*i:]))
		}
	case tf.Double:
		p.DoubleVal = make([]float64, n)
		for i := range n {
			p.DoubleVal[i] = math.Float64frombits(le.Uint64(d[8*i:]))
		}
	case tf.Int32:
		p.IntVal = make([]int32, n)
		for i := range n {
			p.IntVal[i] = int32(le.Uint32(d[4*i:]))
		}
	case tf.Int16:
		p.IntVal = make([]int32, n)
		for i := range n {
			p.IntVal[i] = int32(int16(le.Uint16(d[2*i:])))
		}
	case tf.Uint16:
		p.IntVal = make([]int32, n)
		for i := range n {
			p.IntVal[i] = int32(le.Uint16(d[2*i:]))
		}
	case tf.Int8:
		p.IntVal = make([]int32, n)
		for i := range n {
			p.IntVal[i] = int32(int8(d[i]))
		}
	case tf.Uint8:
		p.IntVal = make([]int32, n)
		for i := range n {
			p.IntVal[i] = int32(d[i])
		}
	case tf.Int64:
		p.Int64Val = make([]int64, n)
		for i := range n {
			p.Int64Val[i] = int64(le.Uint64(d[8*i:]))
		}
	case tf.Uint32:
		p.Uint32Val = make([]uint32, n)
		for i := range n {
			p.Uint32Val[i] = le.Uint32(d[4*i:])
		}
	case tf.Uint64:
		p.Uint64Val = make([]uint64, n)
		for i := range n {
			p.Uint64Val[i] = le.Uint64(d[8*i:])
		}
	case tf.Bool:
		p.BoolVal = make([]bool, n)
		for i := range n {
			p.BoolVal[i] = d[i] != 0
		}
	case tf.Half, tf.BFloat16:
		p.HalfVal = make([]int32, n)
		for i := range n {
			p.HalfVal[i] = int32(le.Uint16(d[2*i:]))
		}
	}
	return p
}
