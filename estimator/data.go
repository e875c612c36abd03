package estimator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/loader"
)

// DefaultShuffleBuffer is the shuffle window of a training stream when
// ShufflePerIter is set and ShuffleBuffer is not.
const DefaultShuffleBuffer = 256 << 20

// trainSet is the training data as a streaming plan: the dataset projected
// on the mapped columns, the plan that converts it, and its split.
type trainSet struct {
	ds         *arrowio.StreamDataset
	plan       *feeder.Plan
	train, val []arrowio.Piece
	rows       int64             // training rows
	cache      *feeder.UnitCache // InMemory
}

func (t *trainSet) close() {
	if t == nil {
		return
	}
	if t.cache != nil {
		t.cache.Close()
	}
	t.ds.Close()
}

// scanData lists the units of Fit's data: files opened with
// arrowio.OpenDataset (optionally filtered by arrowio.Where) are streamed
// from their files; any other source is read into memory once.
func scanData(ctx context.Context, data arrowio.Source) (*arrowio.StreamDataset, error) {
	cfg := arrowio.ScanConfig{}
	src := data
	if f, ok := data.(*arrowio.Filtered); ok {
		cfg.WhereColumn, cfg.WhereValue = f.Column, f.Value
		src = f.Unfiltered()
	}
	if ds, ok := src.(*arrowio.Dataset); ok {
		return ds.Scan(cfg)
	}
	return arrowio.NewMemoryDataset(ctx, data)
}

// openTrainSet checks the mappings against ds and the bundle and splits the
// rows. It takes ownership of ds.
func (e *TFEstimator) openTrainSet(p *prepared, ds *arrowio.StreamDataset) (_ *trainSet, err error) {
	t := &trainSet{ds: ds}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	mapping, targets, err := e.mapping(p)
	if err != nil {
		return nil, err
	}
	cols := make([]string, 0, len(mapping))
	for _, in := range mapping {
		cols = append(cols, in.Column)
	}
	projected, err := ds.Project(cols) // shares ds's records held in memory
	if err != nil {
		return nil, fmt.Errorf("estimator: %w", err)
	}
	t.ds = projected
	if t.plan, err = feeder.NewPlan(t.ds.Schema(), mapping, targets, feeder.NoZeroCopy()); err != nil {
		return nil, fmt.Errorf("estimator: %w", err)
	}
	n := t.ds.NumRows()
	if n == 0 {
		return nil, errors.New("estimator: the training data is empty")
	}
	t.train, t.val = t.ds.SplitTail(e.ValidationSplit)
	t.rows = arrowio.RowsOf(t.train)
	if e.ValidationSplit > 0 && len(t.val) == 0 {
		return nil, fmt.Errorf("estimator: ValidationSplit %g of %d rows holds out no row; raise it or drop it", e.ValidationSplit, n)
	}
	if t.rows < int64(e.Workers) {
		return nil, fmt.Errorf("estimator: %d training rows for %d workers; every worker needs at least one row", t.rows, e.Workers)
	}
	if e.InMemory {
		t.cache = feeder.NewUnitCache()
	}
	if err := feeder.CheckBudget(t.ds, e.streamConfig(t, 0, 0, nil, 0)); err != nil {
		return nil, fmt.Errorf("estimator: %w (ShuffleBuffer, gotflow train --shuffle-buffer)", err)
	}
	return t, nil
}

// mapping builds the feeder mapping for the bundle's inputs then labels.
func (e *TFEstimator) mapping(p *prepared) (feeder.Mapping, []feeder.Target, error) {
	var mapping feeder.Mapping
	var targets []feeder.Target
	byName, err := byTensor(e.Inputs, e.InputMapping, e.LabelMapping)
	if err != nil {
		return nil, nil, fmt.Errorf("estimator: %w", err)
	}
	bundle := map[string]bool{}
	for _, s := range append(slices.Clone(p.b.Inputs), p.b.Labels...) {
		bundle[s.Alias] = true
	}
	for _, in := range e.Inputs {
		if !bundle[in.Tensor] {
			return nil, nil, fmt.Errorf("estimator: column %q is mapped to %q, which is neither an input nor a label of the bundle", in.Column, in.Tensor)
		}
	}
	add := func(kind string, specs []loader.BundleTensor, m map[string]string) error {
		known := map[string]bool{}
		for _, s := range specs {
			known[s.Alias] = true
			in, ok := byName[s.Alias]
			if !ok {
				in = feeder.Input{Column: s.Alias, Tensor: s.Alias}
			}
			in.Cast = in.Cast || e.Cast
			mapping = append(mapping, in)
			targets = append(targets, feeder.Target(s))
		}
		for col, t := range m {
			if !known[t] {
				have := make([]string, 0, len(specs))
				for _, s := range specs {
					have = append(have, s.Alias)
				}
				return fmt.Errorf("estimator: column %q is mapped to %s %q, which the bundle does not have (have: %v)", col, kind, t, have)
			}
		}
		return nil
	}
	if err := add("input", p.b.Inputs, e.InputMapping); err != nil {
		return nil, nil, err
	}
	if err := add("label", p.b.Labels, e.LabelMapping); err != nil {
		return nil, nil, err
	}
	return mapping, targets, nil
}

// shuffleBuffer returns the shuffle window's bytes (0 without shuffling).
func (e *TFEstimator) shuffleBuffer() int64 {
	switch {
	case !e.ShufflePerIter:
		return 0
	case e.ShuffleBuffer > 0:
		return e.ShuffleBuffer
	}
	return DefaultShuffleBuffer
}

// epochOrder returns the training pieces in the order of an epoch: units
// permuted every epoch with ShufflePerIter, PartitionShuffles times over
// the training with PartitionShuffles, else in file order. Every process of
// a job computes the same order.
func (e *TFEstimator) epochOrder(t *trainSet, epoch int) []arrowio.Piece {
	switch {
	case e.ShufflePerIter:
		return arrowio.EpochOrder(t.train, uint64(e.Seed), epoch, true)
	case e.PartitionShuffles > 0:
		epochs := orDefault(e.Epochs, DefaultEpochs)
		return arrowio.EpochOrder(t.train, uint64(e.Seed), epoch*(e.PartitionShuffles+1)/epochs, true)
	}
	return arrowio.EpochOrder(t.train, 0, 0, false)
}

// streamConfig configures the stream of one worker's share of an epoch:
// first is the epoch row its share starts at (it seeds the permutations).
func (e *TFEstimator) streamConfig(t *trainSet, epoch int, first int64, batches []int, skip int) feeder.StreamConfig {
	cfg := feeder.StreamConfig{
		Plan: t.plan, BatchRows: e.batchSize(), Batches: batches, Readers: orDefault(e.Readers, 1),
		Prefetch: orDefault(e.Prefetch, 2), Skip: skip, Cache: t.cache, ShuffleBytes: e.shuffleBuffer(),
		ShuffleRows: e.ShufflePerIter,
		Seed:        uint64(e.Seed)*0x9e3779b97f4a7c15 ^ uint64(epoch+1)*0xbf58476d1ce4e5b9 ^ uint64(first+1)*0x94d049bb133111eb,
	}
	if t.cache == nil {
		cfg.Limit = feeder.Bound(t.ds, cfg).Total
	}
	return cfg
}

// shares deals an epoch's training rows to world workers and equalises
// their step counts: share i, its first epoch row and its batch sizes.
func (e *TFEstimator) shares(t *trainSet, epoch, world int) (order []arrowio.Piece, shares [][]arrowio.Piece, firsts []int64, layouts [][]int, dropped int64) {
	order = e.epochOrder(t, epoch)
	shares = arrowio.Deal(order, world)
	rows := make([]int64, world)
	firsts = make([]int64, world)
	var at int64
	for i, s := range shares {
		rows[i] = arrowio.RowsOf(s)
		firsts[i] = at
		at += rows[i]
	}
	steps := arrowio.EqualSteps(rows, e.batchSize())
	layouts = make([][]int, world)
	for i := range shares {
		layouts[i] = arrowio.BatchLayout(rows[i], steps.Steps, e.batchSize())
		dropped += steps.Dropped[i]
	}
	return order, shares, firsts, layouts, dropped
}

// PlanInfo describes the training data plan, reported once before
// training starts (TrainHooks.OnPlan).
type PlanInfo struct {
	Rows           int64 // training rows
	ValidationRows int64
	Units          int // units (Parquet row groups, IPC record batches, files)
	Files          int
	Workers        int
	StepsPerEpoch  int   // steps every worker runs in an epoch
	DroppedRows    int64 // rows left out of each epoch to equalise step counts
	InMemory       bool
	ShuffleBuffer  int64
	// Bound is the memory one worker's stream holds at most (with
	// InMemory, the converted data is held besides).
	Bound feeder.MemoryBound
}

func (i PlanInfo) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d training rows in %d units of %d files", i.Rows, i.Units, i.Files)
	if i.ValidationRows > 0 {
		fmt.Fprintf(&b, " (+%d validation)", i.ValidationRows)
	}
	fmt.Fprintf(&b, "; %d workers × %d steps an epoch", i.Workers, i.StepsPerEpoch)
	if i.DroppedRows > 0 {
		fmt.Fprintf(&b, " (%d rows an epoch dropped to equalise steps)", i.DroppedRows)
	}
	switch {
	case i.InMemory:
		b.WriteString("; data held in memory (InMemory)")
	case i.ShuffleBuffer > 0:
		fmt.Fprintf(&b, "; streaming, shuffle buffer %s", feeder.FormatBytes(i.ShuffleBuffer))
	default:
		b.WriteString("; streaming in file order")
	}
	fmt.Fprintf(&b, "; memory bound per worker %s", i.Bound)
	return b.String()
}

// planInfo describes t for world workers.
func (e *TFEstimator) planInfo(t *trainSet, world int) PlanInfo {
	_, _, _, layouts, dropped := e.shares(t, 0, world)
	info := PlanInfo{Rows: t.rows, ValidationRows: arrowio.RowsOf(t.val), Units: len(t.ds.Units()), Files: len(t.ds.Files()),
		Workers: world, DroppedRows: dropped, InMemory: e.InMemory, ShuffleBuffer: e.shuffleBuffer(),
		Bound: feeder.Bound(t.ds, e.streamConfig(t, 0, 0, nil, 0))}
	if len(layouts) > 0 {
		info.StepsPerEpoch = len(layouts[0])
	}
	return info
}

// batches streams pieces in order in batches of bs rows, calling fn with
// each (fn must not keep the batch).
func (e *TFEstimator) batches(ctx context.Context, t *trainSet, pieces []arrowio.Piece, fn func(*feeder.StreamBatch) error) error {
	cfg := feeder.StreamConfig{Plan: t.plan, BatchRows: e.batchSize(), Readers: orDefault(e.Readers, 1), Prefetch: orDefault(e.Prefetch, 2), Cache: t.cache}
	s, err := feeder.NewStream(ctx, t.ds, pieces, cfg)
	if err != nil {
		return fmt.Errorf("estimator: %w", err)
	}
	defer s.Close()
	for {
		b, err := s.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("estimator: read data: %w", err)
		}
		err = fn(b)
		b.Close()
		if err != nil {
			return err
		}
	}
}
