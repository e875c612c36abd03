package estimator

import (
	"github.com/apache/arrow-go/v18/arrow"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
)

// arrowOf maps a TensorFlow dtype to the Arrow type of one element, as
// feeder.AppendOutputs does.
func arrowOf(dt tf.DataType, binary bool) (arrow.DataType, bool) {
	return feeder.ElementType(dt, binary)
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
