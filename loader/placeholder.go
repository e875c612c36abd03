package loader

import (
	"fmt"

	nodepb "github.com/wamuir/graft/tensorflow/core/framework/node_def_go_proto"

	"github.com/gotflow/gotflow/tf"
)

// placeholderSpec reads the dtype and shape attributes of a Placeholder.
func placeholderSpec(n *nodepb.NodeDef) (tf.TensorSpec, error) {
	s := tf.TensorSpec{Name: n.GetName() + ":0"}
	dt, ok := n.GetAttr()["dtype"]
	if !ok {
		return s, fmt.Errorf("placeholder %q has no dtype attribute", n.GetName())
	}
	s.DType = tf.DataType(dt.GetType())
	if !s.DType.Valid() {
		return s, fmt.Errorf("placeholder %q has data type %v, which gotflow does not handle", n.GetName(), dt.GetType())
	}
	if sh, ok := n.GetAttr()["shape"]; ok && sh.GetShape() != nil && !sh.GetShape().GetUnknownRank() {
		s.Shape = make([]int64, 0, len(sh.GetShape().GetDim()))
		for _, d := range sh.GetShape().GetDim() {
			s.Shape = append(s.Shape, d.GetSize())
		}
	}
	return s, nil
}
