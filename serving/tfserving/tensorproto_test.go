package tfserving_test

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	tensorpb "github.com/wamuir/graft/tensorflow/core/framework/tensor_go_proto"
	tspb "github.com/wamuir/graft/tensorflow/core/framework/tensor_shape_go_proto"
	typespb "github.com/wamuir/graft/tensorflow/core/framework/types_go_proto"

	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/serving/tfserving"
	"github.com/gotflow/gotflow/tf"
)

func dims(shape ...int64) *tspb.TensorShapeProto {
	s := &tspb.TensorShapeProto{}
	for _, d := range shape {
		s.Dim = append(s.Dim, &tspb.TensorShapeProto_Dim{Size: d})
	}
	return s
}

// TestTensorProtoEveryDType: each dtype serving.Tensor holds decodes from
// its typed field, and encodes back both into the typed field and into
// tensor_content, to the same elements.
func TestTensorProtoEveryDType(t *testing.T) {
	for _, tc := range []struct {
		proto *tensorpb.TensorProto
		want  *serving.Tensor
	}{
		{&tensorpb.TensorProto{Dtype: typespb.DataType_DT_FLOAT, FloatVal: []float32{1.5, -2}}, serving.NewTensor([]int64{2}, []float32{1.5, -2})},
		{&tensorpb.TensorProto{Dtype: typespb.DataType_DT_DOUBLE, DoubleVal: []float64{1e300, -2}}, serving.NewTensor([]int64{2}, []float64{1e300, -2})},
		{&tensorpb.TensorProto{Dtype: typespb.DataType_DT_INT8, IntVal: []int32{-128, 127}}, serving.NewTensor([]int64{2}, []int8{-128, 127})},
		{&tensorpb.TensorProto{Dtype: typespb.DataType_DT_UINT8, IntVal: []int32{0, 255}}, serving.NewTensor([]int64{2}, []uint8{0, 255})},
		{&tensorpb.TensorProto{Dtype: typespb.DataType_DT_INT16, IntVal: []int32{-32768, 7}}, serving.NewTensor([]int64{2}, []int16{-32768, 7})},
		{&tensorpb.TensorProto{Dtype: typespb.DataType_DT_UINT16, IntVal: []int32{65535, 7}}, serving.NewTensor([]int64{2}, []uint16{65535, 7})},
		{&tensorpb.TensorProto{Dtype: typespb.DataType_DT_INT32, IntVal: []int32{math.MinInt32, 7}}, serving.NewTensor([]int64{2}, []int32{math.MinInt32, 7})},
		{&tensorpb.TensorProto{Dtype: typespb.DataType_DT_UINT32, Uint32Val: []uint32{math.MaxUint32, 7}}, serving.NewTensor([]int64{2}, []uint32{math.MaxUint32, 7})},
		{&tensorpb.TensorProto{Dtype: typespb.DataType_DT_INT64, Int64Val: []int64{math.MinInt64, 1 << 60}}, serving.NewTensor([]int64{2}, []int64{math.MinInt64, 1 << 60})},
		{&tensorpb.TensorProto{Dtype: typespb.DataType_DT_UINT64, Uint64Val: []uint64{math.MaxUint64, 7}}, serving.NewTensor([]int64{2}, []uint64{math.MaxUint64, 7})},
		{&tensorpb.TensorProto{Dtype: typespb.DataType_DT_BOOL, BoolVal: []bool{true, false}}, serving.NewTensor([]int64{2}, []bool{true, false})},
		// float16 1.0 = 0x3c00, -2.0 = 0xc000; bfloat16 1.0 = 0x3f80, -2.0 = 0xc000.
		{&tensorpb.TensorProto{Dtype: typespb.DataType_DT_HALF, HalfVal: []int32{0x3c00, 0xc000}}, &serving.Tensor{DType: tf.Half, Shape: []int64{2}, Data: []byte{0x00, 0x3c, 0x00, 0xc0}}},
		{&tensorpb.TensorProto{Dtype: typespb.DataType_DT_BFLOAT16, HalfVal: []int32{0x3f80, 0xc000}}, &serving.Tensor{DType: tf.BFloat16, Shape: []int64{2}, Data: []byte{0x80, 0x3f, 0x00, 0xc0}}},
		{&tensorpb.TensorProto{Dtype: typespb.DataType_DT_STRING, StringVal: [][]byte{[]byte("a"), {}}}, &serving.Tensor{DType: tf.String, Shape: []int64{2}, Strings: [][]byte{[]byte("a"), {}}}},
	} {
		t.Run(tc.want.DType.String(), func(t *testing.T) {
			tc.proto.TensorShape = dims(2)
			got, err := tfserving.FromTensorProto(tc.proto)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)

			fields := tfserving.ToTensorProto(got, false)
			require.Empty(t, fields.TensorContent)
			require.Equal(t, tc.proto.String(), fields.String())

			content := tfserving.ToTensorProto(got, true)
			if got.DType == tf.String {
				require.Equal(t, tc.proto.StringVal, content.StringVal)
			} else {
				require.Equal(t, got.Data, content.TensorContent)
			}
			back, err := tfserving.FromTensorProto(content)
			require.NoError(t, err)
			require.Equal(t, tc.want, back)
		})
	}
}

// TestTensorProtoFill follows Tensor::FromProto: typed fields with fewer
// values than the shape repeat the last one (zeros when there is none),
// extra values are dropped, tensor_content must be exact.
func TestTensorProtoFill(t *testing.T) {
	get := func(p *tensorpb.TensorProto) []float32 {
		t.Helper()
		x, err := tfserving.FromTensorProto(p)
		require.NoError(t, err)
		v, err := serving.Values[float32](x)
		require.NoError(t, err)
		return v
	}
	require.Equal(t, []float32{7, 7, 7, 7}, get(&tensorpb.TensorProto{Dtype: typespb.DataType_DT_FLOAT, TensorShape: dims(2, 2), FloatVal: []float32{7}}))
	require.Equal(t, []float32{1, 2, 2}, get(&tensorpb.TensorProto{Dtype: typespb.DataType_DT_FLOAT, TensorShape: dims(3), FloatVal: []float32{1, 2}}))
	require.Equal(t, []float32{1, 2}, get(&tensorpb.TensorProto{Dtype: typespb.DataType_DT_FLOAT, TensorShape: dims(2), FloatVal: []float32{1, 2, 3}}))
	require.Equal(t, []float32{0, 0}, get(&tensorpb.TensorProto{Dtype: typespb.DataType_DT_FLOAT, TensorShape: dims(2)}))
	// A field of another type is not read.
	require.Equal(t, []float32{0, 0}, get(&tensorpb.TensorProto{Dtype: typespb.DataType_DT_FLOAT, TensorShape: dims(2), DoubleVal: []float64{1, 2}}))
	// No shape is a scalar.
	require.Equal(t, []float32{4}, get(&tensorpb.TensorProto{Dtype: typespb.DataType_DT_FLOAT, FloatVal: []float32{4}}))
	// Empty tensors ignore their values.
	x, err := tfserving.FromTensorProto(&tensorpb.TensorProto{Dtype: typespb.DataType_DT_FLOAT, TensorShape: dims(0, 3), FloatVal: []float32{1}})
	require.NoError(t, err)
	require.Equal(t, []int64{0, 3}, x.Shape)
	require.Empty(t, x.Data)

	s, err := tfserving.FromTensorProto(&tensorpb.TensorProto{Dtype: typespb.DataType_DT_STRING, TensorShape: dims(3), StringVal: [][]byte{[]byte("a"), []byte("b")}})
	require.NoError(t, err)
	require.Equal(t, [][]byte{[]byte("a"), []byte("b"), []byte("b")}, s.Strings)

	content := make([]byte, 8)
	binary.LittleEndian.PutUint32(content, math.Float32bits(1))
	binary.LittleEndian.PutUint32(content[4:], math.Float32bits(-1))
	require.Equal(t, []float32{1, -1}, get(&tensorpb.TensorProto{Dtype: typespb.DataType_DT_FLOAT, TensorShape: dims(2), TensorContent: content, FloatVal: []float32{9}}))

	// Strings in tensor_content: varint lengths, then the bytes.
	s, err = tfserving.FromTensorProto(&tensorpb.TensorProto{Dtype: typespb.DataType_DT_STRING, TensorShape: dims(2), TensorContent: []byte{1, 3, 'a', 'x', 'y', 'z'}})
	require.NoError(t, err)
	require.Equal(t, [][]byte{[]byte("a"), []byte("xyz")}, s.Strings)
}

// TestTensorProtoRefused: protos Tensor::FromProto rejects, types
// serving.Tensor does not hold, and fills that would expand a small
// message into a huge tensor.
func TestTensorProtoRefused(t *testing.T) {
	for name, p := range map[string]*tensorpb.TensorProto{
		"nil":                   nil,
		"DT_INVALID":            {TensorShape: dims(1), FloatVal: []float32{1}},
		"complex":               {Dtype: typespb.DataType_DT_COMPLEX64, ScomplexVal: []float32{1, 2}},
		"reference type":        {Dtype: typespb.DataType_DT_FLOAT_REF, FloatVal: []float32{1}},
		"unknown rank":          {Dtype: typespb.DataType_DT_FLOAT, TensorShape: &tspb.TensorShapeProto{UnknownRank: true}},
		"negative dimension":    {Dtype: typespb.DataType_DT_FLOAT, TensorShape: dims(2, -1)},
		"short content":         {Dtype: typespb.DataType_DT_FLOAT, TensorShape: dims(2), TensorContent: []byte{1, 2, 3, 4}},
		"long content":          {Dtype: typespb.DataType_DT_INT8, TensorShape: dims(2), TensorContent: []byte{1, 2, 3}},
		"string content short":  {Dtype: typespb.DataType_DT_STRING, TensorShape: dims(2), TensorContent: []byte{1, 3, 'a', 'x'}},
		"string content long":   {Dtype: typespb.DataType_DT_STRING, TensorShape: dims(1), TensorContent: []byte{1, 'a', 'x'}},
		"overflowing shape":     {Dtype: typespb.DataType_DT_FLOAT, TensorShape: dims(1<<40, 1<<40)},
		"huge fill":             {Dtype: typespb.DataType_DT_FLOAT, TensorShape: dims(1 << 30), FloatVal: []float32{1}},
		"huge fill, no values":  {Dtype: typespb.DataType_DT_DOUBLE, TensorShape: dims(1 << 30)},
		"huge fill of a string": {Dtype: typespb.DataType_DT_STRING, TensorShape: dims(1 << 30), StringVal: [][]byte{[]byte("abc")}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := tfserving.FromTensorProto(p)
			require.Error(t, err)
		})
	}
}
