package main

import (
	"context"
	"fmt"
	"io"

	"github.com/gotflow/gotflow/estimator"
)

func runEvaluate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("evaluate", stderr)
	model := fs.String("model", "", "trained model: the export directory of gotflow train (holds tfmodel.json)")
	data := fs.String("data", "", "labelled data: a Parquet, Arrow IPC or CSV file, a directory or a glob")
	where := fs.String("where", "", "column=value: evaluate on the rows whose column equals value (e.g. split=heldout)")
	var inputs, labels mappingFlag
	fs.Var(&inputs, "map", "column=input [dtype=T] [shape=D,..] [fill=V] [cast] [len=N] [pad=V]: feed a column to a bundle input, and how (default: as trained)")
	fs.Var(&labels, "label", "column=label [options as --map]: feed a column to a bundle label (default: as trained)")
	batch := fs.Int("batch-size", estimator.DefaultBatchSize, "rows per run")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *model == "" || *data == "" {
		return fmt.Errorf("%w: --model and --data are required", errUsage)
	}
	m, err := estimator.Load(*model)
	if err != nil {
		return err
	}
	defer m.Close()
	if len(inputs.m) > 0 {
		m.InputMapping, m.Inputs = inputs.short(), inputs.full()
	}
	if len(labels.m) > 0 {
		m.LabelMapping, m.Labels = labels.short(), labels.full()
	}
	m.BatchSize = *batch
	src, err := openData(*data, *where)
	if err != nil {
		return err
	}
	res, err := m.Evaluate(ctx, src)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rows %d  loss %.4f", res.Rows, res.Loss)
	for _, k := range sortedKeys(res.Metrics) {
		fmt.Fprintf(stdout, "  %s %.4f", k, res.Metrics[k])
	}
	fmt.Fprintln(stdout)
	return nil
}
