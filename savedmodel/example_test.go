package savedmodel_test

import (
	"context"
	"fmt"
	"log"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
)

// Read lists a SavedModel's meta graphs and signatures without TensorFlow.
func ExampleRead() {
	info, err := savedmodel.Read(testmodels.Dir("tf1_savedmodel"))
	if err != nil {
		log.Fatal(err)
	}
	for _, mg := range info.MetaGraphs {
		fmt.Println("tags", mg.Tags)
		for _, s := range mg.Signatures {
			fmt.Println(" ", s.Key, "inputs", s.Inputs, "outputs", s.Outputs)
		}
	}
	// Output:
	// tags [custom train]
	//   predict_custom inputs [inp: float32[-1,3] (in_x:0)] outputs [out: float32[-1,2] (activation:0)]
	// tags [serve]
	//   activation inputs [inp: float32[-1,3] (in_x:0)] outputs [out: float32[-1,2] (activation:0)]
	//   scores inputs [features: float32[-1,3] (in_x:0)] outputs [class: int64[-1] (class_id:0) probs: float32[-1,2] (class_probs:0)]
}

// Load a TF2 SavedModel and run its serving_default signature by alias.
func ExampleLoad() {
	ctx := context.Background()
	m, err := savedmodel.Load(ctx, testmodels.Dir("tf2_savedmodel"))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	x, _ := tf.NewTensor([]int64{2, 4}, []float32{0, 0, 0, 0, 1, 1, 1, 1})
	defer x.Close()
	k, _ := tf.NewTensor([]int64{2}, []int64{0, 0})
	defer k.Close()
	out, err := m.Run(ctx, map[string]*tf.Tensor{"x": x, "k": k}, "y", "total")
	if err != nil {
		log.Fatal(err)
	}
	y, _ := tf.Data[float32](out[0])
	total, _ := tf.Data[float64](out[1])
	fmt.Printf("y %v\ny %.3f\ntotal %.3f\n", out[0].Shape(), y, total)
	// Python TF computes the same (scripts/fixtures/tf2_savedmodel).
	for _, t := range out {
		t.Close()
	}

	// Output:
	// y [2 3]
	// y [-0.329 -0.792 0.455 -3.460 2.236 1.157]
	// total [-0.666 -0.068]
}
