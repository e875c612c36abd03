package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tune"
)

func runEnsemble(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ensemble", stderr)
	t := addTrainFlags(fs)
	members := fs.Int("members", 5, "models to train, from seeds --seed, --seed+1, ...")
	bootstrap := fs.Bool("bootstrap", false, "train each member on a bootstrap sample of the data (rows drawn with replacement; the data is read into memory)")
	parallel := fs.Int("parallel", 1, "members trained at once")
	combine := fs.String("combine", "mean", "how outputs are merged: mean (e.g. logits), softmax (mean probabilities) or vote (fraction of members per class)")
	study := fs.String("from-study", "", "combine the top --top trials of this gotflow tune study instead of training")
	top := fs.Int("top", 3, "with --from-study: how many of the best trials")
	out := fs.String("o", "", "directory for the ensemble (members/ and the exported model); required")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: -o DIR is required", errUsage)
	}
	how, err := savedmodel.ParseCombine(*combine)
	if err != nil {
		return fmt.Errorf("%w: --combine: %v", errUsage, err)
	}
	start := time.Now()
	var m *estimator.TFModel
	if *study != "" {
		dirs, err := tune.TopTrials(*study, *top)
		if err != nil {
			return err
		}
		if m, err = tune.ExportEnsemble(filepath.Join(*out, "export"), dirs, how); err != nil {
			return err
		}
		for i, d := range dirs {
			fmt.Fprintf(stdout, "member %d: %s\n", i, d)
		}
	} else {
		t.e.ExportDir = filepath.Join(*out, "export") // each member gets its own
		e, err := t.estimator(stderr)
		if err != nil {
			return err
		}
		useThisBinary(e)
		en := tune.Ensemble{Dir: *out, Base: *e, Members: *members, Bootstrap: *bootstrap, Combine: how, Parallel: *parallel,
			Logger: e.Logger, Data: func() (arrowio.Source, error) { return openData(*t.data, *t.where) }}
		var dirs []string
		if m, dirs, err = en.Fit(ctx); err != nil {
			return err
		}
		for i, d := range dirs {
			fmt.Fprintf(stdout, "member %d: %s\n", i, d)
		}
	}
	defer m.Close()
	fmt.Fprintf(stdout, "ensemble (%s) exported to %s in %s\n", how, filepath.Dir(m.Path), time.Since(start).Round(time.Millisecond))
	return nil
}
