// Command quickstart loads a frozen TensorFlow graph, runs a batch through it
// and prints the predictions: the smallest complete use of gotflow's tf and
// loader packages.
//
//	go run ./examples/quickstart [model.pb]
package main

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/tf"
)

func main() {
	path := "scripts/fixtures/mlp_frozen/model.pb" // x float32[-1,8] -> probs float32[-1,3]
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	def, err := loader.LoadGraphDef(path) // validated before TensorFlow sees it
	if err != nil {
		log.Fatal(err)
	}
	graph, err := def.Import()
	if err != nil {
		log.Fatal(err)
	}
	defer graph.Close()
	sess, err := tf.NewSession(graph, tf.WithIntraOpThreads(2))
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()

	x, err := graph.Output("x:0")
	if err != nil {
		log.Fatal(err)
	}
	probs, err := graph.Output("probs:0")
	if err != nil {
		log.Fatal(err)
	}
	batch := make([]float32, 4*8)
	for i := range batch {
		batch[i] = float32(i%13) / 13
	}
	in, err := tf.NewTensor([]int64{4, 8}, batch)
	if err != nil {
		log.Fatal(err)
	}
	defer in.Close()
	out, err := sess.Run(context.Background(), []tf.Feed{{Output: x, Tensor: in}}, []tf.Output{probs}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer out[0].Close()
	p, err := tf.Data[float32](out[0])
	if err != nil {
		log.Fatal(err)
	}
	for row := 0; row < 4; row++ {
		fmt.Printf("row %d: %.5f\n", row, p[row*3:row*3+3])
	}
}
