// Command spark measures gotflow_spark's GotflowModel.transform (a scalar
// iterator Arrow UDF over the feed column, one gotflow predict --ipc child
// per task, only the predictions returned to the JVM) against
// pyspark.ml.functions.predict_batch_udf running the same SavedModel in
// Python TensorFlow, on one local[2] SparkSession over the same cached
// DataFrame, at the same batch size and TensorFlow intra-op threads. The
// Spark side is scripts/bench/spark_transform.py, run with the project's
// Python; it checks that both sides' predictions agree before timing. It
// writes bench/results/spark.json.
//
//	go run ./bench/spark -out bench/results/spark.json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gotflow/gotflow/internal/benchfmt"
	"github.com/gotflow/gotflow/internal/testmodels"
)

// targets are the ratios (gotflow / predict_batch_udf) each model aims at.
var targets = map[string]float64{"mlp": 2, "cnn": 1}

type config struct {
	out       string
	binary    string
	models    []string
	mlpRows   int
	cnnRows   int
	batch     int
	threads   int
	repeats   int
	tolerance float64
	timeout   time.Duration
}

// result is what scripts/bench/spark_transform.py writes to --result.
type result struct {
	Spark      string `json:"spark"`
	TensorFlow string `json:"tensorflow"`
	Master     string `json:"master"`
	ArrowBatch int    `json:"arrow_max_records_per_batch"`
	Runs       []struct {
		Name       string    `json:"name"`
		Model      string    `json:"model"`
		Input      string    `json:"input"`
		Width      int       `json:"width"`
		Data       string    `json:"data"`
		Rows       int       `json:"rows"`
		Partitions int       `json:"partitions"`
		Batch      int       `json:"batch"`
		Threads    int       `json:"threads"`
		Repeats    int       `json:"repeats"`
		Gotflow    float64   `json:"gotflow_rows_per_s"`
		Peer       float64   `json:"peer_rows_per_s"`
		GPasses    []float64 `json:"gotflow_passes"`
		PPasses    []float64 `json:"peer_passes"`
		MaxAbsDiff *float64  `json:"max_abs_diff"`
	} `json:"runs"`
}

func main() {
	var c config
	var models string
	flag.StringVar(&c.out, "out", "bench/results/spark.json", "where to write the results")
	flag.StringVar(&c.binary, "binary", "", "the gotflow executable (default: $GOTFLOW_BIN, else bin/gotflow of this checkout)")
	flag.StringVar(&models, "models", "mlp,cnn", "comma-separated models to run (mlp, cnn)")
	flag.IntVar(&c.mlpRows, "mlp-rows", 600_000, "rows of the MLP's DataFrame")
	flag.IntVar(&c.cnnRows, "cnn-rows", 40_000, "rows of the CNN's DataFrame")
	flag.IntVar(&c.batch, "batch", 1024, "rows per model run, both sides")
	flag.IntVar(&c.threads, "threads", 1, "TensorFlow intra-op threads per Spark task, both sides")
	flag.IntVar(&c.repeats, "repeats", 4, "timed passes per side (alternating); the best is kept")
	flag.Float64Var(&c.tolerance, "tolerance", 1e-5, "largest |gotflow - peer| accepted over the predictions")
	flag.DurationVar(&c.timeout, "timeout", 20*time.Minute, "deadline of the whole run")
	flag.Parse()
	log.SetFlags(0)
	for _, m := range strings.Split(models, ",") {
		if m = strings.TrimSpace(m); m != "" {
			if _, ok := targets[m]; !ok {
				log.Fatalf("bench/spark: unknown model %q in -models (have mlp, cnn)", m)
			}
			c.models = append(c.models, m)
		}
	}
	if len(c.models) == 0 || c.mlpRows <= 0 || c.cnnRows <= 0 || c.batch <= 0 || c.threads <= 0 || c.repeats < 1 {
		log.Fatal("bench/spark: -models must name a model; -mlp-rows, -cnn-rows, -batch, -threads and -repeats must be positive")
	}
	if err := bench(c); err != nil {
		log.Printf("bench/spark: %v", err)
		os.Exit(1)
	}
}

func bench(c config) error {
	start := time.Now()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	root := testmodels.Root()
	bin, err := findBinary(root, c.binary)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "gotflow-bench-spark-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	resultPath := filepath.Join(tmp, "result.json")
	args := []string{
		filepath.Join(root, "scripts", "bench", "spark_transform.py"),
		"--binary", bin, "--result", resultPath, "--models", strings.Join(c.models, ","),
		"--mlp-rows", fmt.Sprint(c.mlpRows), "--cnn-rows", fmt.Sprint(c.cnnRows),
		"--batch", fmt.Sprint(c.batch), "--threads", fmt.Sprint(c.threads),
		"--repeats", fmt.Sprint(c.repeats), "--tolerance", fmt.Sprint(c.tolerance),
		"--partitions", "2", "--master", "local[2]",
	}
	if err := runPython(ctx, root, args); err != nil {
		return err
	}
	data, err := os.ReadFile(resultPath)
	if err != nil {
		return fmt.Errorf("the Python side exited without writing its results: %w", err)
	}
	var res result
	if err := json.Unmarshal(data, &res); err != nil {
		return fmt.Errorf("the Python side's results %s: %w", resultPath, err)
	}
	rows, err := toRows(c, &res)
	if err != nil {
		return err
	}
	if err := benchfmt.Write(c.out, rows); err != nil {
		return err
	}
	fmt.Printf("wrote %s in %s\n", c.out, time.Since(start).Round(time.Second))
	return nil
}

// toRows checks the Python side's results and turns them into the
// benchmark's rows, one per model.
func toRows(c config, res *result) ([]benchfmt.Result, error) {
	byName := map[string]int{}
	for i, r := range res.Runs {
		byName[r.Name] = i
	}
	var rows []benchfmt.Result
	for _, m := range c.models {
		name := fmt.Sprintf("spark/transform/%s/batch%d", m, c.batch)
		i, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("the Python side reported no run %s", name)
		}
		r := res.Runs[i]
		if r.Gotflow <= 0 || r.Peer <= 0 || len(r.GPasses) != c.repeats || len(r.PPasses) != c.repeats {
			return nil, fmt.Errorf("%s: incomplete measurements from the Python side (gotflow %v, peer %v rows/s)", name, r.GPasses, r.PPasses)
		}
		if r.MaxAbsDiff == nil || *r.MaxAbsDiff > c.tolerance {
			return nil, fmt.Errorf("%s: the predictions were not shown to agree (max |delta| %v, limit %g)", name, r.MaxAbsDiff, c.tolerance)
		}
		row := benchfmt.New(name, "throughput", "rows/s", round(r.Gotflow), "predict_batch_udf", round(r.Peer))
		row.Note = fmt.Sprintf("GotflowModel(modelPath=scripts/fixtures/%s, batchSize=%d, threads=%d).transform(df) "+
			"(a scalar-iterator pyspark arrow_udf over the feed column: one gotflow predict --ipc --outputs-only child per task, only the predictions go back to the JVM) against pyspark.ml.functions.predict_batch_udf "+
			"(make_predict_fn: tf.saved_model.load once per Python worker, serving_default signature; batch_size=%d, input_tensor_shapes=[[%d]]); "+
			"each pass writes the input column and the predictions to Spark's noop sink; "+
			"df: %d rows of one array<float> column %q (%d float32 values a row, numpy %s with a fixed seed) in %d partitions, cached in Spark memory before timing; "+
			"SparkSession %s, pyspark %s, Arrow batches of %d records, Python TensorFlow %s; "+
			"TensorFlow intra-op threads %d per task on both sides (GotflowModel threads=%d; peer tf.config.threading.set_intra_op_parallelism_threads(%d) in make_predict_fn), inter-op threads at TensorFlow's default (one per core) on both; "+
			"predictions agree (max |delta| = %.3g over all %d rows, limit %g); best of %d alternating passes after one warm-up each; target >= %g",
			r.Model, r.Batch, r.Threads, r.Batch, r.Width,
			r.Rows, r.Input, r.Width, dataDesc(r.Data), r.Partitions,
			res.Master, res.Spark, res.ArrowBatch, res.TensorFlow,
			r.Threads, r.Threads, r.Threads,
			*r.MaxAbsDiff, r.Rows, c.tolerance, r.Repeats, targets[m])
		verdict := "meets"
		if row.Ratio < targets[m] {
			verdict = "below"
		}
		fmt.Printf("%-30s gotflow %9.0f  predict_batch_udf %9.0f rows/s  x%.3f (%s target %g)\n",
			name, row.Value, row.PeerValue, row.Ratio, verdict, targets[m])
		rows = append(rows, row)
	}
	return rows, nil
}

func dataDesc(kind string) string {
	switch kind {
	case "uniform":
		return "uniform [0, 1)"
	case "normal":
		return "standard normal"
	}
	return kind
}

func round(v float64) float64 { return float64(int64(v + 0.5)) }

// findBinary returns the gotflow executable to ship to the Spark tasks.
func findBinary(root, flagValue string) (string, error) {
	bin, from := flagValue, "-binary"
	if bin == "" {
		bin, from = os.Getenv("GOTFLOW_BIN"), "$GOTFLOW_BIN"
	}
	if bin == "" {
		bin, from = filepath.Join(root, "bin", "gotflow"), "the default"
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("gotflow binary %s (%s) is missing or not executable: run `make build` or pass -binary", abs, from)
	}
	return abs, nil
}

// runPython runs the Spark side to completion. The Python process leads its
// own process group (the Spark JVM and its Python workers join it), which is
// killed as a whole on the deadline or an interrupt; it also gets SIGKILL if
// this process dies first.
func runPython(ctx context.Context, root string, args []string) error {
	python := os.Getenv("GOTFLOW_PYTHON")
	if python == "" {
		python = filepath.Join(root, ".venv", "bin", "python")
	}
	if _, err := os.Stat(python); err != nil {
		return fmt.Errorf("the project's Python %s: %w (run `make install` or set GOTFLOW_PYTHON)", python, err)
	}
	cmd := exec.CommandContext(ctx, python, args...)
	cmd.Dir = root
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	if os.Getenv("TF_CPP_MIN_LOG_LEVEL") == "" {
		cmd.Env = append(cmd.Env, "TF_CPP_MIN_LOG_LEVEL=3")
	}
	if lib := filepath.Join(root, "third_party", "libtensorflow", "lib"); os.Getenv("GOTFLOW_LIBRARY_PATH") == "" {
		if _, err := os.Stat(lib); err == nil {
			cmd.Env = append(cmd.Env, "GOTFLOW_LIBRARY_PATH="+lib)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	why := err.Error()
	if ctxErr := ctx.Err(); ctxErr != nil {
		why = fmt.Sprintf("stopped (%v)", context.Cause(ctx))
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			why = "did not finish before the deadline (-timeout)"
		}
	}
	return fmt.Errorf("%s %s %s (its output is above)", python, args[0], why)
}
