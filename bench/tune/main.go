// Command tune measures hyper-parameter search on digits: the committed
// space of examples/digits/space.yaml (learning rate log-uniform, batch
// size, optimizer, hidden width through two bundles) searched three ways
// in one run, 16 trials each: random search to the end, the same 16 random
// trials under ASHA, and TPE. Each study's best trial is evaluated on the
// held-out split. It writes bench/results/tune.json.
//
// Run it from the repository root after `make install`:
//
//	go run ./bench/tune [-out path] [-epochs 27]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/benchfmt"
	"github.com/gotflow/gotflow/tune"
)

const data = "examples/digits/digits.parquet"

func main() {
	out := flag.String("out", "bench/results/tune.json", "where to write the results")
	epochs := flag.Int("epochs", 27, "epochs of a trial that is not stopped (ASHA's max_t)")
	flag.Parse()
	if err := run(*out, *epochs); err != nil {
		log.Fatal(err)
	}
}

type outcome struct {
	heldout float64 // the best trial's held-out accuracy
	epochs  int     // epochs trained over all trials
	wall    time.Duration
	best    tune.Trial
}

func run(out string, epochs int) error {
	work, err := os.MkdirTemp("", "gotflow-bench-tune-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bundles := map[string]string{"mlp": filepath.Join(work, "mlp64"), "mlp_wide": filepath.Join(work, "mlp128")}
	for fn, dir := range bundles {
		if err := convert(fn, dir); err != nil {
			return err
		}
	}
	space, err := tune.ReadSpace("examples/digits/space.yaml")
	if err != nil {
		return err
	}
	for i, p := range space.Parameters {
		if p.Name == "bundle" {
			space.Parameters[i].FeasibleSpace.List = []tune.Value{tune.Value(bundles["mlp"]), tune.Value(bundles["mlp_wide"])}
		}
	}
	study := func(name string, edit func(*tune.Space)) (outcome, error) {
		sp := *space
		sp.Parameters = append([]tune.Parameter(nil), space.Parameters...)
		edit(&sp)
		if err := sp.Check(); err != nil {
			return outcome{}, err
		}
		st := tune.Study{Dir: filepath.Join(work, name), Space: &sp, CPUs: 2,
			Base: estimator.TFEstimator{Bundle: bundles["mlp"], LabelMapping: map[string]string{"label": "y"}, Workers: 1,
				Epochs: epochs, ValidationSplit: 0.2, Seed: 7, CheckpointEvery: -1},
			Data: func() (arrowio.Source, error) {
				src, err := arrowio.OpenDataset(data)
				if err != nil {
					return nil, err
				}
				return arrowio.Where(src, "split", "train")
			}}
		start := time.Now()
		res, err := st.Run(context.Background())
		if err != nil {
			return outcome{}, fmt.Errorf("%s: %w", name, err)
		}
		o := outcome{wall: time.Since(start), best: *res.Best}
		for _, t := range res.Trials {
			o.epochs += len(t.Metrics)
		}
		m, err := estimator.Load(res.Best.Export)
		if err != nil {
			return outcome{}, err
		}
		defer m.Close()
		src, err := arrowio.OpenDataset(data)
		if err != nil {
			return outcome{}, err
		}
		held, err := arrowio.Where(src, "split", "heldout")
		if err != nil {
			return outcome{}, err
		}
		ev, err := m.Evaluate(context.Background(), held)
		if err != nil {
			return outcome{}, err
		}
		o.heldout = ev.Metrics["accuracy"]
		log.Printf("%s: best %s (val_accuracy %.4f, %v), held-out accuracy %.4f; %d epochs in all, %s",
			name, o.best.ID, float64(o.best.Final), o.best.Params, o.heldout, o.epochs, o.wall.Round(time.Second))
		return o, nil
	}
	random, err := study("random", func(sp *tune.Space) { sp.EarlyStopping = nil })
	if err != nil {
		return err
	}
	asha, err := study("asha", func(*tune.Space) {})
	if err != nil {
		return err
	}
	tpe, err := study("tpe", func(sp *tune.Space) {
		sp.EarlyStopping = nil
		sp.Algorithm = tune.Algorithm{AlgorithmName: "tpe", AlgorithmSettings: append(sp.Algorithm.AlgorithmSettings,
			tune.Setting{Name: "n_startup_trials", Value: "6"})}
	})
	if err != nil {
		return err
	}
	ens, err := ensembleRow(work, bundles["mlp"], epochs)
	if err != nil {
		return err
	}
	peer := "the best trial of a random search of the same 16 trials, run to the end"
	epochsRow := benchfmt.Result{Name: "tune/asha/epochs", Metric: "epochs", Unit: "epochs", Value: float64(asha.epochs),
		Peer: "random search of the same 16 trials, run to the end", PeerValue: float64(random.epochs),
		Ratio: math.Round(float64(asha.epochs)/float64(random.epochs)*1000) / 1000,
		Note:  "ratio is ASHA's epochs over the random search's (target <= 0.4)"}
	asRow := benchfmt.New("tune/asha/heldout_accuracy", "accuracy", "fraction", asha.heldout, peer, random.heldout)
	asRow.Note = fmt.Sprintf("target: within 0.01 of the peer; difference %+.4f", asha.heldout-random.heldout)
	tpeRow := benchfmt.New("tune/tpe/heldout_accuracy", "accuracy", "fraction", tpe.heldout, "the best trial of a random search of 16 trials (same space, same budget)", random.heldout)
	tpeRow.Note = fmt.Sprintf("TPE with 6 random start trials; difference %+.4f", tpe.heldout-random.heldout)
	tpeVal := benchfmt.New("tune/tpe/best_val_accuracy", "accuracy", "fraction", float64(tpe.best.Final), "the best validation accuracy of the random search's 16 trials", float64(random.best.Final))
	results := []benchfmt.Result{asRow, epochsRow, tpeRow, tpeVal, ens}
	for _, r := range results {
		log.Printf("%s: %.4g (peer %.4g, ratio %.3f)", r.Name, r.Value, r.PeerValue, r.Ratio)
	}
	return benchfmt.Write(out, results)
}

// ensembleRow trains 5 members of the digits MLP from seeds (adam, lr
// 3e-3, batch 32, as the demo) and compares the held-out accuracy of
// their ensemble (mean of logits) with its best member's.
func ensembleRow(work, bundle string, epochs int) (benchfmt.Result, error) {
	en := tune.Ensemble{Dir: filepath.Join(work, "ensemble"), Members: 5, Parallel: 2, CPUs: 2,
		Base: estimator.TFEstimator{Bundle: bundle, LabelMapping: map[string]string{"label": "y"}, Workers: 1, Epochs: epochs,
			Optimizer: "adam", LearningRate: 3e-3, BatchSize: 32, Seed: 7, CheckpointEvery: -1},
		Data: func() (arrowio.Source, error) { return split("train") }}
	m, members, err := en.Fit(context.Background())
	if err != nil {
		return benchfmt.Result{}, err
	}
	defer m.Close()
	acc, err := heldoutAccuracy(m)
	if err != nil {
		return benchfmt.Result{}, err
	}
	best := 0.0
	for i, d := range members {
		mm, err := estimator.Load(d)
		if err != nil {
			return benchfmt.Result{}, err
		}
		a, err := heldoutAccuracy(mm)
		mm.Close()
		if err != nil {
			return benchfmt.Result{}, err
		}
		log.Printf("ensemble member %d: held-out accuracy %.4f", i, a)
		best = math.Max(best, a)
	}
	log.Printf("ensemble of 5: held-out accuracy %.4f", acc)
	r := benchfmt.New("tune/ensemble/heldout_accuracy", "accuracy", "fraction", acc, "the best of its 5 members (seeds 7..11)", best)
	r.Note = "target: at least the best member's"
	return r, nil
}

func split(name string) (arrowio.Source, error) {
	src, err := arrowio.OpenDataset(data)
	if err != nil {
		return nil, err
	}
	return arrowio.Where(src, "split", name)
}

// heldoutAccuracy is the share of held-out rows whose highest logit is the
// label.
func heldoutAccuracy(m *estimator.TFModel) (float64, error) {
	src, err := split("heldout")
	if err != nil {
		return 0, err
	}
	s, err := m.Transform(context.Background(), src)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	right, rows := 0, 0
	for s.Next() {
		r := s.RecordBatch()
		out := r.Column(int(r.NumCols()) - 1).(*array.FixedSizeList)
		vals := out.ListValues().(*array.Float32).Float32Values()
		w := int(out.DataType().(*arrow.FixedSizeListType).Len())
		labels := r.Column(r.Schema().FieldIndices("label")[0]).(*array.Int32).Int32Values()
		for i := range labels {
			row := vals[i*w : (i+1)*w]
			best := 0
			for c := range row {
				if row[c] > row[best] {
					best = c
				}
			}
			if int32(best) == labels[i] {
				right++
			}
			rows++
		}
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return float64(right) / float64(rows), nil
}

// convert builds a bundle from examples/digits/model.py:fn.
func convert(fn, dir string) error {
	py := os.Getenv("GOTFLOW_PYTHON")
	if py == "" {
		py = filepath.Join(".venv", "bin", "python")
	}
	model, _ := filepath.Abs("examples/digits/model.py")
	scripts, _ := filepath.Abs("scripts")
	cmd := exec.Command(py, "-m", "converter", "keras", model+":"+fn, "--metric", "accuracy", "--loss",
		`{"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": true}}`, "-o", dir)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+scripts)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("convert %s: %w", fn, err)
	}
	return nil
}
