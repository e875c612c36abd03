package loader_test

import (
	"context"
	"fmt"
	"log"

	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/tf"
)

// A training step on a bundle written by `gotflow convert tf1`: feed the
// weights, a batch and its labels; get the loss and one gradient per
// trainable variable. (Python TF computes the same loss, 0.88285, for
// this batch.)
func ExampleBundle_NewTrainStep() {
	b, err := loader.LoadBundle("testdata/bundles/tf1")
	if err != nil {
		log.Fatal(err)
	}
	for _, in := range b.Inputs {
		fmt.Printf("input %s: %s %v\n", in.Alias, in.DType, in.Shape)
	}
	for _, v := range b.Variables {
		fmt.Printf("variable %s %s%v trainable=%v\n", v.Name, v.DType, v.Shape, v.Trainable)
	}
	step, err := b.NewTrainStep()
	if err != nil {
		log.Fatal(err)
	}
	defer step.Close()
	weights, err := b.WeightTensors()
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		for _, w := range weights {
			w.Close()
		}
	}()
	x, _ := tf.NewTensor([]int64{2, 6}, []float32{1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0})
	defer x.Close()
	y, _ := tf.NewTensor([]int64{2}, []int32{0, 2})
	defer y.Close()
	r, err := step.Run(context.Background(), weights, []*tf.Tensor{x}, []*tf.Tensor{y})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	loss, _ := tf.Data[float32](r.Loss)
	fmt.Printf("loss %.4f, %d gradients\n", loss[0], len(r.Gradients))
	// Output:
	// input x: float32 [-1 6]
	// variable layer1/w float32[6 9] trainable=true
	// variable layer1/b float32[9] trainable=true
	// variable layer2/w float32[9 3] trainable=true
	// variable layer2/b float32[3] trainable=true
	// loss 0.8829, 4 gradients
}

// Evaluation of a batch on a bundle with batch-norm and dropout: eval.pb
// runs the model with training off, as Keras' model.evaluate does (Python
// computes the same loss, 1.04232, for model(x, training=False)); the
// training graph would give 1.61071 for this batch, with dropout on and
// batch statistics.
func ExampleBundle_NewEvalStep() {
	b, err := loader.LoadBundle("testdata/bundles/cnn")
	if err != nil {
		log.Fatal(err)
	}
	step, err := b.NewEvalStep()
	if err != nil {
		log.Fatal(err)
	}
	defer step.Close()
	weights, err := b.WeightTensors()
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		for _, w := range weights {
			w.Close()
		}
	}()
	xs := make([]float32, 2*6*6*2)
	for i := range xs {
		xs[i] = float32(i%7) / 7
	}
	x, _ := tf.NewTensor([]int64{2, 6, 6, 2}, xs)
	defer x.Close()
	y, _ := tf.NewTensor([]int64{2}, []int32{0, 2})
	defer y.Close()
	r, err := step.Run(context.Background(), weights, []*tf.Tensor{x}, []*tf.Tensor{y})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	loss, _ := tf.Data[float32](r.Loss)
	acc, _ := tf.Data[float32](r.Metrics[0])
	fmt.Printf("training mode: %v\nloss %.5f, %s %.2f\n", step.TrainingMode(), loss[0], b.Metrics[0].Alias, acc[0])
	// Output:
	// training mode: false
	// loss 1.04232, accuracy 0.50
}
