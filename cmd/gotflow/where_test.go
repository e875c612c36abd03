package main

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder/arrowio"
)

// TestPredictWhere predicts only the rows --where selects.
func TestPredictWhere(t *testing.T) {
	out := filepath.Join(t.TempDir(), "setosa.parquet")
	var stdout, stderr bytes.Buffer
	code := run([]string{"predict", "--model", exampleModel, "--input", exampleData, "--output", out,
		"--where", "species=setosa", "--quiet"}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	src, err := arrowio.OpenDataset(out)
	require.NoError(t, err)
	defer src.Close()
	rows := 0
	for {
		rec, err := src.Next(context.Background())
		if err != nil {
			break
		}
		species := rec.Column(rec.Schema().FieldIndices("species")[0]).(*array.String)
		for i := 0; i < species.Len(); i++ {
			require.Equal(t, "setosa", species.Value(i))
		}
		rows += int(rec.NumRows())
		rec.Release()
	}
	require.Equal(t, 50, rows, "iris has 50 setosa rows")

	code = run([]string{"predict", "--model", exampleModel, "--input", exampleData, "--output", out,
		"--where", "colour=blue", "--quiet"}, &stdout, &stderr)
	require.NotEqual(t, 0, code)
	require.Contains(t, stderr.String(), `column "colour"`)
}
