package tune

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/atomicfile"
	"github.com/gotflow/gotflow/savedmodel"
)

// Ensemble trains Members copies of Base, each from its own seed (and, with
// Bootstrap, on its own bootstrap sample of the data), and exports them as
// one model (ExportEnsemble).
type Ensemble struct {
	// Dir holds members/<i>/ (each member's model dir and export) and the
	// ensemble's export in Dir/export. Members already exported there are
	// kept, so an interrupted Fit resumes.
	Dir  string
	Base estimator.TFEstimator
	// Data opens the training data for one member (Fit closes it).
	Data func() (arrowio.Source, error)
	// Members is how many models to train (at least 2).
	Members int
	// Bootstrap trains member i on n rows drawn with replacement from the
	// n rows of Data (read into memory), as bagging does; otherwise every
	// member sees all the rows, in its own order (Seed = Base.Seed + i,
	// shuffling on). Members start from the bundle's initial weights: for
	// members that start apart, combine exports of bundles converted with
	// different seeds (ExportEnsemble).
	Bootstrap bool
	// Combine merges the members' outputs (default mean).
	Combine savedmodel.Combine
	// Parallel is how many members train at once (default 1); CPUs is the
	// cores they share (default runtime.NumCPU()).
	Parallel, CPUs int
	Logger         *slog.Logger
}

// Fit trains the members and exports the ensemble; it returns the
// ensemble and the members' export directories.
func (en *Ensemble) Fit(ctx context.Context) (*estimator.TFModel, []string, error) {
	if en.Members < 2 {
		return nil, nil, fmt.Errorf("tune: an ensemble needs at least 2 members, got %d", en.Members)
	}
	if en.Dir == "" || en.Data == nil {
		return nil, nil, errors.New("tune: an ensemble needs Dir and Data")
	}
	how, err := savedmodel.ParseCombine(string(en.Combine))
	if err != nil {
		return nil, nil, err
	}
	par := min(max(en.Parallel, 1), en.Members)
	threads := max(1, cmp.Or(en.CPUs, runtime.NumCPU())/(par*max(en.Base.Workers, 1)))
	log := en.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	exports := make([]string, en.Members)
	errs := make([]error, en.Members)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range en.Members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			e := en.Base
			dir := filepath.Join(en.Dir, "members", strconv.Itoa(i))
			e.ModelDir, e.ExportDir, e.Seed = filepath.Join(dir, "model"), filepath.Join(dir, "export"), en.Base.Seed+int64(i)
			e.ShufflePerIter = true // the seed makes a member: its own order of the rows
			if e.IntraOpThreads == 0 {
				e.IntraOpThreads = threads
			}
			if e.TensorBoardDir != "" {
				e.TensorBoardDir = filepath.Join(e.TensorBoardDir, "member-"+strconv.Itoa(i))
			}
			src, err := en.Data()
			if err == nil && en.Bootstrap {
				src, err = bootstrap(ctx, src, uint64(en.Base.Seed), uint64(i))
			}
			if err != nil {
				errs[i] = fmt.Errorf("tune: ensemble member %d: data: %w", i, err)
				return
			}
			m, err := e.Fit(ctx, src)
			if err != nil {
				errs[i] = fmt.Errorf("tune: ensemble member %d: %w", i, err)
				return
			}
			m.Close()
			exports[i] = e.ExportDir
			log.Info("ensemble member trained", "member", i, "export", e.ExportDir)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	m, err := ExportEnsemble(filepath.Join(en.Dir, "export"), exports, how)
	return m, exports, err
}

// bootstrap reads src into memory and returns as many rows drawn from it
// with replacement, by a generator seeded with (seed, member).
func bootstrap(ctx context.Context, src arrowio.Source, seed, member uint64) (arrowio.Source, error) {
	defer src.Close()
	mem := memory.DefaultAllocator
	var recs []arrow.RecordBatch
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	var n int64
	for {
		r, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
		n += r.NumRows()
	}
	if n == 0 {
		return nil, errors.New("no rows to sample")
	}
	rng := rand.New(rand.NewPCG(seed^0x243f6a8885a308d3, member))
	ib := array.NewInt64Builder(mem)
	defer ib.Release()
	for range n {
		ib.Append(rng.Int64N(n))
	}
	idx := ib.NewArray()
	defer idx.Release()
	schema := src.Schema()
	cols := make([]arrow.Array, schema.NumFields())
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	for j := range cols {
		parts := make([]arrow.Array, len(recs))
		for k, r := range recs {
			parts[k] = r.Column(j)
		}
		whole, err := array.Concatenate(parts, mem)
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", schema.Field(j).Name, err)
		}
		cols[j], err = compute.TakeArray(ctx, whole, idx)
		whole.Release()
		if err != nil {
			return nil, fmt.Errorf("sample column %s: %w", schema.Field(j).Name, err)
		}
	}
	rec := array.NewRecordBatch(schema, cols, n)
	defer rec.Release()
	return arrowio.FromRecords(schema, rec)
}

// EnsembleFile is the description ExportEnsemble writes beside the
// ensemble's SavedModel.
const EnsembleFile = "ensemble.json"

// ExportEnsemble writes to dir one SavedModel combining the members'
// exports (directories written by Fit: saved_model/ and tfmodel.json) and a
// tfmodel.json that loads it with the first member's column mappings, so
// that estimator.Load, Transform, `gotflow predict` and TF Serving use the
// ensemble like one model. The SavedModel is written aside and replaces
// the previous one whole (atomicfile.CreateDir).
func ExportEnsemble(dir string, members []string, how savedmodel.Combine) (*estimator.TFModel, error) {
	if len(members) < 2 {
		return nil, fmt.Errorf("tune: an ensemble needs at least 2 members, got %d", len(members))
	}
	var first *estimator.TFModel
	sms := make([]string, len(members))
	for i, m := range members {
		tm, err := estimator.Load(m)
		if err != nil {
			return nil, fmt.Errorf("tune: ensemble member %s: %w", m, err)
		}
		sms[i] = tm.Path
		if i == 0 {
			first = tm
		} else {
			tm.Close()
		}
	}
	defer first.Close()
	final := filepath.Join(dir, "saved_model")
	sm, err := atomicfile.CreateDir(final)
	if err != nil {
		return nil, fmt.Errorf("tune: %w", err)
	}
	defer sm.Abort()
	if err := savedmodel.ExportEnsemble(sm.Path(), sms, how); err != nil {
		return nil, err
	}
	if err := sm.Commit(); err != nil {
		return nil, fmt.Errorf("tune: %w", err)
	}
	desc, _ := json.MarshalIndent(map[string]any{"members": members, "combine": how}, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(dir, EnsembleFile), append(desc, '\n')); err != nil {
		return nil, fmt.Errorf("tune: %w", err)
	}
	m := &estimator.TFModel{Path: final, InputMapping: first.InputMapping, OutputMapping: first.OutputMapping,
		Cast: first.Cast, BatchSize: first.BatchSize}
	if err := m.Save(dir); err != nil {
		return nil, err
	}
	return estimator.Load(dir)
}

// TopTrials returns the export directories of a study's k best completed
// trials, best first (lowest final objective for minimize, highest for
// maximize), read from its study.json.
func TopTrials(studyDir string, k int) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(studyDir, "study.json"))
	if err != nil {
		return nil, fmt.Errorf("tune: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil || st.Format != stateFormat || st.Space == nil {
		return nil, fmt.Errorf("tune: %s/study.json is not a study file of this version (%v)", studyDir, err)
	}
	res := &Result{}
	for _, t := range st.Trials {
		res.Trials = append(res.Trials, *t)
	}
	ranked := res.Ranked(st.Space.Objective)
	if len(ranked) < k {
		return nil, fmt.Errorf("tune: the study in %s has %d completed trials, fewer than the %d asked for", studyDir, len(ranked), k)
	}
	var out []string
	for _, t := range ranked[:k] {
		out = append(out, t.Export)
	}
	return out, nil
}
