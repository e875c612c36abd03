package savedmodel_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	graphpb "github.com/wamuir/graft/tensorflow/core/framework/graph_go_proto"
	nodepb "github.com/wamuir/graft/tensorflow/core/framework/node_def_go_proto"

	"github.com/gotflow/gotflow/savedmodel"
)

// TestValidateGraphDefInputNames: inputs are parsed as "node", "node:i" or
// "^node"; a malformed index is an error, not passed on to TensorFlow.
func TestValidateGraphDefInputNames(t *testing.T) {
	graph := func(in string) *graphpb.GraphDef {
		return &graphpb.GraphDef{Node: []*nodepb.NodeDef{
			{Name: "x", Op: "Placeholder"},
			{Name: "y", Op: "Identity", Input: []string{in}},
		}}
	}
	for _, ok := range []string{"x", "x:0", "^x"} {
		_, err := savedmodel.ValidateGraphDef(graph(ok))
		require.NoError(t, err, ok)
	}
	for _, bad := range []string{"x:abc", "x:-1", ":0", "^"} {
		_, err := savedmodel.ValidateGraphDef(graph(bad))
		require.Error(t, err, bad)
	}
}
