// Command train fits a converted Keras model on the digits data with two
// workers and a parameter server, then predicts the held-out rows: the
// TFEstimator / TFModel round trip in a few lines.
//
//	gotflow convert keras examples/digits/model.py:mlp --metric accuracy -o build/digits \
//	    --loss '{"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": true}}'
//	go run ./examples/train build/digits
package main

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
)

func main() {
	ctx := context.Background()
	bundle := "build/digits"
	if len(os.Args) > 1 {
		bundle = os.Args[1]
	}
	open := func(split string) arrowio.Source {
		ds, err := arrowio.OpenDataset("examples/digits/digits.parquet")
		if err != nil {
			log.Fatal(err)
		}
		src, err := arrowio.Where(ds, "split", split)
		if err != nil {
			log.Fatal(err)
		}
		return src
	}

	est := estimator.TFEstimator{
		Bundle:       bundle,
		LabelMapping: map[string]string{"label": "y"}, // column → bundle label
		Workers:      2, NumPS: 1, Mode: "hogwild",
		Optimizer: "adam", LearningRate: 3e-3, Epochs: 30, BatchSize: 32,
		ValidationSplit: 0.1, ShufflePerIter: true, Seed: 7,
		ExportDir: "build/digits-model",
		Hooks: estimator.TrainHooks{OnEpoch: func(e estimator.EpochInfo) {
			if (e.Epoch+1)%10 == 0 {
				fmt.Printf("epoch %d: loss %.3f, val_accuracy %.3f\n", e.Epoch+1, e.Loss, e.ValMetrics["accuracy"])
			}
		}},
	}
	model, err := est.Fit(ctx, open("train")) // returns a TFModel over the exported SavedModel
	if err != nil {
		log.Fatal(err)
	}
	defer model.Close()

	stream, err := model.Transform(ctx, open("heldout")) // appends the "output" column
	if err != nil {
		log.Fatal(err)
	}
	defer stream.Release()
	right, total := 0, 0
	for stream.Next() {
		rec := stream.RecordBatch()
		labels := rec.Column(rec.Schema().FieldIndices("label")[0]).(*array.Int32)
		logits := rec.Column(rec.Schema().FieldIndices("output")[0]).(*array.FixedSizeList)
		values := logits.ListValues().(*array.Float32).Float32Values()
		for i := 0; i < labels.Len(); i++ {
			row := values[(logits.Offset()+i)*10 : (logits.Offset()+i+1)*10]
			best := 0
			for j := range row {
				if row[j] > row[best] {
					best = j
				}
			}
			if int32(best) == labels.Value(i) {
				right++
			}
			total++
		}
	}
	if err := stream.Err(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("held-out accuracy: %.4f (%d rows)\n", float64(right)/float64(total), total)
}
