package estimator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/tf"
)

// EvalResult is what Evaluate computed over a dataset.
type EvalResult struct {
	Rows    int64
	Loss    float64            // mean loss over the rows
	Metrics map[string]float64 // mean of each bundle metric over the rows
}

// Evaluate computes the bundle's loss and metrics for the trained weights
// over data, weighting each batch by its rows, and closes data. It needs
// Bundle and Weights (set by Fit) and the label columns (LabelMapping).
// The bundle's eval graph computes them with training behaviour off
// (dropout off, batch-norm moving statistics), so the values are those of
// Keras' model.evaluate. A bundle converted without an eval graph is
// evaluated with its training graph instead, where layers that behave
// differently in training (dropout, batch-norm) do so.
func (m *TFModel) Evaluate(ctx context.Context, data arrowio.Source) (*EvalResult, error) {
	defer data.Close()
	bundle := m.Bundle
	if bundle == "" && m.Kind == KindBundle {
		bundle = m.Path
	}
	if bundle == "" || m.Weights == "" {
		return nil, errors.New("estimator: Evaluate needs the model's Bundle and Weights (a model returned by Fit has them)")
	}
	b, err := loader.LoadBundle(bundle)
	if err != nil {
		return nil, err
	}
	ws, err := loader.ReadWeights(m.Weights)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]loader.Weight, len(ws))
	for _, w := range ws {
		byName[w.Name] = w
	}
	weights := make([]*tf.Tensor, len(b.Variables))
	defer closeAll(weights)
	for i, v := range b.Variables {
		w, ok := byName[v.Name]
		if !ok {
			return nil, fmt.Errorf("estimator: %s has no weight %q of bundle %s", m.Weights, v.Name, bundle)
		}
		if weights[i], err = w.Tensor(); err != nil {
			return nil, err
		}
	}
	e := &TFEstimator{InputMapping: m.InputMapping, LabelMapping: m.LabelMapping, Inputs: append(slices.Clone(m.Inputs), m.Labels...)}
	mapping, targets, err := e.mapping(&prepared{b: b})
	if err != nil {
		return nil, err
	}
	plan, err := feeder.NewPlan(data.Schema(), mapping, targets, feeder.NoZeroCopy())
	if err != nil {
		return nil, fmt.Errorf("estimator: %w", err)
	}
	step, err := b.NewEvalStep(tf.WithIntraOpThreads(m.IntraOpThreads), tf.WithInterOpThreads(m.InterOpThreads))
	if err != nil {
		return nil, err
	}
	defer step.Close()
	f, err := feeder.New(data, plan, feeder.BatchSize(m.batchSize()))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	res := &EvalResult{Metrics: map[string]float64{}}
	sums := make([]float64, len(b.Metrics))
	nIn := len(b.Inputs)
	for {
		batch, err := f.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("estimator: evaluate: %w", err)
		}
		out, err := step.Run(ctx, weights, batch.Tensors[:nIn], batch.Tensors[nIn:])
		rows := float64(batch.NumRows())
		batch.Close()
		if err != nil {
			return nil, fmt.Errorf("estimator: evaluate: %w", err)
		}
		l, err := scalar(out.Loss)
		for i, t := range out.Metrics {
			if err != nil {
				break
			}
			var v float64
			v, err = scalar(t)
			sums[i] += v * rows
		}
		out.Close()
		if err != nil {
			return nil, fmt.Errorf("estimator: evaluate: %w", err)
		}
		res.Loss += l * rows
		res.Rows += int64(rows)
	}
	if res.Rows == 0 {
		return nil, errors.New("estimator: evaluate: the data is empty")
	}
	res.Loss /= float64(res.Rows)
	for i, mt := range b.Metrics {
		res.Metrics[mt.Alias] = sums[i] / float64(res.Rows)
	}
	return res, nil
}
