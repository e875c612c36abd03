package estimator

import (
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
)

// arrowOf maps a TensorFlow dtype to the Arrow type of one element, as
// feeder.AppendOutputs does.
func arrowOf(dt tf.DataType, binary bool) (arrow.DataType, bool) {
	switch dt {
	case tf.Float:
		return arrow.PrimitiveTypes.Float32, true
	case tf.Double:
		return arrow.PrimitiveTypes.Float64, true
	case tf.Half:
		return arrow.FixedWidthTypes.Float16, true
	case tf.Int8:
		return arrow.PrimitiveTypes.Int8, true
	case tf.Int16:
		return arrow.PrimitiveTypes.Int16, true
	case tf.Int32:
		return arrow.PrimitiveTypes.Int32, true
	case tf.Int64:
		return arrow.PrimitiveTypes.Int64, true
	case tf.Uint8:
		return arrow.PrimitiveTypes.Uint8, true
	case tf.Uint16:
		return arrow.PrimitiveTypes.Uint16, true
	case tf.Uint32:
		return arrow.PrimitiveTypes.Uint32, true
	case tf.Uint64:
		return arrow.PrimitiveTypes.Uint64, true
	case tf.Bool:
		return arrow.FixedWidthTypes.Boolean, true
	case tf.String:
		if binary {
			return arrow.BinaryTypes.Binary, true
		}
		return arrow.BinaryTypes.String, true
	}
	return nil, false
}

// staticField predicts the column feeder.AppendOutputs makes for an output
// from its static dtype and shape: [rows] → flat, [rows, d1, …, dn] →
// nested fixed-size lists. ok is false when the shape is not fully known;
// the stream then takes the schema from its first batch.
func staticField(ep savedmodel.Endpoint, column string, binary bool) (arrow.Field, bool) {
	t, ok := arrowOf(ep.DType, binary)
	if !ok || len(ep.Shape) == 0 {
		return arrow.Field{}, false
	}
	for i := len(ep.Shape) - 1; i >= 1; i-- {
		if ep.Shape[i] < 0 {
			return arrow.Field{}, false
		}
		t = arrow.FixedSizeListOf(int32(ep.Shape[i]), t)
	}
	return arrow.Field{Name: column, Type: t}, true
}
