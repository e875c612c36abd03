package estimator_test

import (
	"context"
	"fmt"
	"log"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/testmodels"
)

// Transform appends a Keras classifier's probabilities to iris rows read
// from Parquet (examples/predict).
func ExampleTFModel_Transform() {
	ctx := context.Background()
	dir := filepath.Join(testmodels.Root(), "examples", "predict")
	m := &estimator.TFModel{
		Path:          filepath.Join(dir, "model"),
		OutputMapping: map[string]string{"output_0": "probs"},
		BatchSize:     64,
	}
	defer m.Close()
	files := []string{filepath.Join(dir, "iris.parquet")}
	src, err := arrowio.OpenOrdered(files, 2, 64)
	if err != nil {
		log.Fatal(err)
	}
	s, err := m.Transform(ctx, src)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	row := 0
	for s.Next() {
		rec := s.RecordBatch()
		species := rec.Column(4).(*array.String)
		probs := rec.Column(5).(*array.FixedSizeList).ListValues().(*array.Float32)
		for i := 0; i < int(rec.NumRows()); i, row = i+1, row+1 {
			if row%50 == 0 {
				p := probs.Float32Values()[3*i : 3*i+3]
				fmt.Printf("row %3d %-10s %.3f\n", row, species.Value(i), p)
			}
		}
	}
	if err := s.Err(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.Schema().Field(5))
	// Output:
	// row   0 setosa     [1.000 0.000 0.000]
	// row  50 versicolor [0.000 1.000 0.000]
	// row 100 virginica  [0.000 0.000 1.000]
	// probs: type=fixed_size_list<item: float32, nullable>[3]
}
