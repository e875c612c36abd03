// Command training measures gotflow's training throughput and convergence
// beside Python Keras' model.fit on the same model (the digits MLP of
// examples/digits), data, batch size, epochs, optimizer and thread
// settings, in the same run, and writes bench/results/training.json.
//
// Run it from the repository root after `make install`:
//
//	go run ./bench/training [-out path] [-epochs N]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/benchfmt"
)

type kerasResult struct {
	ExamplesPerSec  float64 `json:"examples_per_sec"`
	HeldoutAccuracy float64 `json:"heldout_accuracy"`
	TrainRows       int     `json:"train_rows"`
}

func main() {
	out := flag.String("out", "bench/results/training.json", "where to write the results")
	epochs := flag.Int("epochs", 10, "epochs for every run (throughput: rows over the median epoch time, first epoch excluded)")
	batch := flag.Int("batch-size", 32, "rows per step")
	cnnEpochs := flag.Int("cnn-epochs", 3, "epochs of the CNN runs")
	cnnRows := flag.Int("cnn-rows", 60000, "synthetic 28x28 training rows of the CNN runs")
	cnnOnly := flag.Bool("cnn-only", false, "run only the CNN rows")
	flag.Parse()
	if err := run(*out, *epochs, *batch, *cnnEpochs, *cnnRows, *cnnOnly); err != nil {
		log.Fatal(err)
	}
}

// keras runs scripts/bench/training.py with args and decodes its result.
func keras(args ...string) (kerasResult, error) {
	py := os.Getenv("GOTFLOW_PYTHON")
	if py == "" {
		py = filepath.Join(".venv", "bin", "python")
	}
	cmd := exec.Command(py, append([]string{"scripts/bench/training.py"}, args...)...)
	cmd.Stderr = os.Stderr
	raw, err := cmd.Output()
	if err != nil {
		return kerasResult{}, fmt.Errorf("python side: %w", err)
	}
	var k kerasResult
	if err := json.Unmarshal(raw, &k); err != nil {
		return kerasResult{}, fmt.Errorf("python side printed %q: %w", raw, err)
	}
	return k, nil
}

// cnnRows trains the CNN (two conv layers and a dense head) on synthetic
// 28x28x1 images, 10 classes: gotflow with 1 worker and 1 intra-op thread
// against Keras fit with 1 thread, and 2 workers (1 thread each, hogwild)
// against Keras fit with 2 threads.
func cnnRows(ctx context.Context, dir string, epochs, batch, rows int) ([]benchfmt.Result, error) {
	var results []benchfmt.Result
	for _, c := range []struct {
		name    string
		workers int
	}{{"1worker", 1}, {"2workers", 2}} {
		k, err := keras("--model", "cnn", "--out", dir, "--rows", fmt.Sprint(rows), "--epochs", fmt.Sprint(epochs),
			"--batch-size", fmt.Sprint(batch), "--threads", fmt.Sprint(c.workers))
		if err != nil {
			return nil, err
		}
		log.Printf("keras model.fit, CNN, %d threads: %.0f examples/s, held-out accuracy %.4f", c.workers, k.ExamplesPerSec, k.HeldoutAccuracy)
		rate, acc, err := fit(ctx, dir, c.workers, "hogwild", epochs, batch)
		if err != nil {
			return nil, fmt.Errorf("cnn %s: %w", c.name, err)
		}
		log.Printf("gotflow CNN %s: %.0f examples/s, held-out accuracy %.4f", c.name, rate, acc)
		r := benchfmt.New("training/cnn/"+c.name, "throughput", "examples/s", rate, fmt.Sprintf("keras_model_fit_%dthreads", c.workers), k.ExamplesPerSec)
		r.Note = fmt.Sprintf("%d synthetic 28x28x1 rows, conv16-pool-conv32-pool-dense64-dense10, batch %d, adam 1e-3, median of epochs 2-%d; gotflow %d worker(s) x 1 intra-op thread, hogwild; %d cores",
			k.TrainRows, batch, epochs, c.workers, runtime.NumCPU())
		a := benchfmt.New("training/cnn/"+c.name, "heldout_accuracy", "fraction", acc, "keras_model_fit", k.HeldoutAccuracy)
		a.Note = fmt.Sprintf("after %d epochs; difference: %+.1f points", epochs, 100*(acc-k.HeldoutAccuracy))
		results = append(results, r, a)
		if c.workers == 1 {
			// The same with the push of each step overlapped with the next
			// step's compute (one step of staleness).
			rate, acc, err := fit(ctx, dir, 1, "hogwild-overlap", epochs, batch)
			if err != nil {
				return nil, fmt.Errorf("cnn 1worker_overlap_push: %w", err)
			}
			log.Printf("gotflow CNN 1worker_overlap_push: %.0f examples/s, held-out accuracy %.4f", rate, acc)
			r := benchfmt.New("training/cnn/1worker_overlap_push", "throughput", "examples/s", rate, "keras_model_fit_1threads", k.ExamplesPerSec)
			r.Note = "as training/cnn/1worker, with OverlapPush"
			a := benchfmt.New("training/cnn/1worker_overlap_push", "heldout_accuracy", "fraction", acc, "keras_model_fit", k.HeldoutAccuracy)
			a.Note = fmt.Sprintf("after %d epochs; difference: %+.1f points", epochs, 100*(acc-k.HeldoutAccuracy))
			results = append(results, r, a)
		}
	}
	return results, nil
}

func run(out string, epochs, batch, cnnEpochs, cnnN int, cnnOnly bool) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "gotflow-bench-training-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if cnnOnly {
		cnn, err := cnnRows(ctx, filepath.Join(dir, "cnn"), cnnEpochs, batch, cnnN)
		if err != nil {
			return err
		}
		return benchfmt.Write(out, cnn)
	}
	py := os.Getenv("GOTFLOW_PYTHON")
	if py == "" {
		py = filepath.Join(".venv", "bin", "python")
	}
	cmd := exec.Command(py, "scripts/bench/training.py", "--out", dir, "--epochs", fmt.Sprint(epochs),
		"--batch-size", fmt.Sprint(batch), "--threads", "1")
	cmd.Stderr = os.Stderr
	raw, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("python side: %w", err)
	}
	var k kerasResult
	if err := json.Unmarshal(raw, &k); err != nil {
		return fmt.Errorf("python side printed %q: %w", raw, err)
	}
	log.Printf("keras model.fit: %.0f examples/s, held-out accuracy %.4f", k.ExamplesPerSec, k.HeldoutAccuracy)

	var results []benchfmt.Result
	type config struct {
		name    string
		workers int
		mode    string
	}
	var one float64
	for _, c := range []config{{"1worker", 1, "hogwild"}, {"1worker_overlap_push", 1, "hogwild-overlap"}, {"2workers_hogwild", 2, "hogwild"},
		{"2workers_async-lock", 2, "async-lock"}, {"2workers_sync", 2, "sync"}} {
		rate, acc, err := fit(ctx, dir, c.workers, c.mode, epochs, batch)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		log.Printf("gotflow %s: %.0f examples/s, held-out accuracy %.4f", c.name, rate, acc)
		r := benchfmt.New("training/digits_mlp/"+c.name, "throughput", "examples/s", rate, "keras_model_fit_1thread", k.ExamplesPerSec)
		r.Note = fmt.Sprintf("1 intra-op thread per worker, batch %d, adam 1e-3, median of epochs 2-%d, %d cores", batch, epochs, runtime.NumCPU())
		if c.name == "1worker" {
			one = rate
		} else if c.workers > 1 {
			r.Note += fmt.Sprintf("; scaling over gotflow 1 worker: %.2fx", rate/one)
		}
		results = append(results, r)
		a := benchfmt.New("training/digits_mlp/"+c.name, "heldout_accuracy", "fraction", acc, "keras_model_fit", k.HeldoutAccuracy)
		a.Note = fmt.Sprintf("difference: %+.1f points", 100*(acc-k.HeldoutAccuracy))
		results = append(results, a)
	}
	cnnDir := filepath.Join(dir, "cnn")
	cnn, err := cnnRows(ctx, cnnDir, cnnEpochs, batch, cnnN)
	if err != nil {
		return err
	}
	return benchfmt.Write(out, append(results, cnn...))
}

// fit trains the digits bundle and returns the steady examples/s (rows
// over the median epoch time, first epoch excluded) and held-out accuracy.
func fit(ctx context.Context, dir string, workers int, mode string, epochs, batch int) (float64, float64, error) {
	var times []time.Duration
	rows := 0
	overlap := mode == "hogwild-overlap"
	if overlap {
		mode = "hogwild"
	}
	e := estimator.TFEstimator{
		Bundle: filepath.Join(dir, "bundle"), Workers: workers, Mode: mode, Epochs: epochs, BatchSize: batch, OverlapPush: overlap,
		Optimizer: "adam", LearningRate: 1e-3, ShufflePerIter: true, Seed: 1, IntraOpThreads: 1, InterOpThreads: 1,
		LabelMapping: map[string]string{"label": "y"}, ExportDir: filepath.Join(dir, fmt.Sprintf("export-%s-%d-%v", mode, workers, overlap)),
		Hooks: estimator.TrainHooks{OnEpoch: func(i estimator.EpochInfo) {
			times = append(times, i.Elapsed)
			rows = int(i.ExamplesSec * i.Elapsed.Seconds())
		}},
	}
	src, err := arrowio.OpenDataset(filepath.Join(dir, "train.parquet"))
	if err != nil {
		return 0, 0, err
	}
	m, err := e.Fit(ctx, src)
	if err != nil {
		return 0, 0, err
	}
	defer m.Close()
	steady := append([]time.Duration(nil), times[1:]...)
	slices.Sort(steady)
	rate := float64(rows) / steady[len(steady)/2].Seconds()
	acc, err := accuracy(ctx, m, filepath.Join(dir, "heldout.parquet"))
	return rate, acc, err
}

// accuracy is the share of held-out rows whose argmax output equals the
// label.
func accuracy(ctx context.Context, m *estimator.TFModel, path string) (float64, error) {
	src, err := arrowio.OpenDataset(path)
	if err != nil {
		return 0, err
	}
	s, err := m.Transform(ctx, src)
	if err != nil {
		return 0, err
	}
	defer s.Release()
	right, total := 0, 0
	for s.Next() {
		rec := s.RecordBatch()
		labels := rec.Column(int(rec.Schema().FieldIndices("label")[0])).(*array.Int32)
		out := rec.Column(int(rec.Schema().FieldIndices("output")[0])).(*array.FixedSizeList)
		vals := out.ListValues().(*array.Float32).Float32Values()
		n := out.DataType().(interface{ Len() int32 }).Len()
		for i := 0; i < labels.Len(); i++ {
			row := vals[(out.Offset()+i)*int(n) : (out.Offset()+i+1)*int(n)]
			best := 0
			for j, v := range row {
				if v > row[best] {
					best = j
				}
			}
			if int32(best) == labels.Value(i) {
				right++
			}
			total++
		}
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	if total == 0 {
		return 0, fmt.Errorf("no held-out rows in %s", path)
	}
	return float64(right) / float64(total), nil
}
