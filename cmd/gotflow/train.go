package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/ps"
)

// trainFlags are the flags shared by train and worker.
type trainFlags struct {
	e                estimator.TFEstimator
	inputs, labels   mappingFlag
	data, optJSON    *string
	where            *string
	patience         *int
	seed             *int64
	verbose          *bool
	noShuffle        *bool
	fs               *flag.FlagSet
	requireExportDir bool
}

func addTrainFlags(fs *flag.FlagSet) *trainFlags {
	t := &trainFlags{fs: fs}
	e := &t.e
	t.data = fs.String("data", "", "training data: a Parquet, Arrow IPC or CSV file, a directory or a glob")
	t.where = fs.String("where", "", "column=value: train on the rows whose column equals value (e.g. split=train)")
	fs.StringVar(&e.Bundle, "bundle", "", "model bundle directory (from gotflow convert)")
	fs.Var(&t.inputs, "map", "column=input [dtype=T] [shape=D,..] [fill=V] [cast] [len=N] [pad=V]: feed a column to a bundle input, and how (repeatable, ';' or a,b lists; default: same names)")
	fs.Var(&t.labels, "label", "column=label [options as --map]: feed a column to a bundle label (repeatable; default: same names)")
	fs.BoolVar(&e.Cast, "cast", false, "allow lossy column conversions (float64 → float32, int64 → int32)")
	fs.IntVar(&e.Workers, "workers", 1, "data-parallel workers")
	fs.IntVar(&e.NumPS, "num-ps", 1, "parameter-server shards")
	fs.IntVar(&e.NumPS, "ps", 1, "the same as --num-ps")
	fs.StringVar(&e.Cluster, "cluster", "in-process", "where workers and shards run: in-process (goroutines) or processes (gotflow worker/ps on loopback)")
	fs.StringVar(&e.Mode, "mode", "hogwild", "update mode: hogwild, async-lock, sync or bounded-staleness")
	fs.IntVar(&e.MaxStaleness, "max-staleness", 0, "versions a gradient may lag in bounded-staleness mode (default 4)")
	fs.StringVar(&e.Optimizer, "optimizer", "adam", "sgd, momentum, adam, adamw, adagrad or rmsprop")
	fs.Float64Var(&e.LearningRate, "lr", 0, "learning rate (default: the optimizer's Keras default)")
	t.optJSON = fs.String("optimizer-options", "", `more optimizer settings as JSON or @file, e.g. '{"beta_1":0.8,"clipnorm":1}'`)
	fs.IntVar(&e.Epochs, "epochs", 1, "passes over the training data")
	fs.IntVar(&e.Steps, "steps", 0, "stop each worker after this many steps (0: no limit)")
	fs.IntVar(&e.BatchSize, "batch-size", estimator.DefaultTrainBatchSize, "rows per step and worker")
	fs.IntVar(&e.MiniStochasticIters, "mini-stochastic-iters", 1, "steps per mini-batch")
	fs.IntVar(&e.PullEvery, "pull-every", 1, "steps between weight pulls (-1: once per epoch)")
	fs.BoolVar(&e.OverlapPush, "overlap-push", false, "push a step's gradients while the next step computes (async modes; one more step of staleness)")
	fs.BoolVar(&e.ShufflePerIter, "shuffle", true, "reshuffle every epoch: units re-dealt to workers, rows permuted within units and within the shuffle buffer")
	t.noShuffle = fs.Bool("no-shuffle", false, "read the data in file and row-group order every epoch (same as --shuffle=false)")
	fs.Var((*byteSize)(&e.ShuffleBuffer), "shuffle-buffer", "each worker's shuffle window in bytes of converted rows, e.g. 256MiB, 1GiB (default 256MiB)")
	fs.IntVar(&e.Readers, "readers", 1, "units (Parquet row groups, IPC record batches) each worker decodes at once")
	fs.IntVar(&e.Prefetch, "prefetch", 2, "ready batches waiting for each worker")
	fs.BoolVar(&e.InMemory, "in-memory", false, "keep the converted training data in memory after the first epoch (for data that fits)")
	fs.IntVar(&e.PartitionShuffles, "partition-shuffles", 0, "times the rows are re-dealt among workers")
	fs.Float64Var(&e.ValidationSplit, "validation-split", 0, "fraction of rows (the last ones) held out for validation")
	t.patience = fs.Int("early-stopping", -1, "stop after this many epochs without validation-loss improvement (-1: off)")
	t.seed = fs.Int64("seed", 1, "seed for shuffling and partitioning")
	fs.StringVar(&e.ModelDir, "model-dir", "", "directory for snapshots and progress; a rerun resumes")
	fs.StringVar(&e.ExportDir, "export", "", "directory for the trained model (frozen.pb, saved_model/, weights)")
	fs.StringVar(&e.TensorBoardDir, "tensorboard", "", "directory for TensorBoard event files")
	fs.IntVar(&e.IntraOpThreads, "threads", 0, "TensorFlow intra-op threads per worker (0: one per core)")
	fs.DurationVar(&e.SyncTimeout, "sync-timeout", 0, "sync mode: how long a step waits for its last push (default 10s with --cluster processes, 1m in process)")
	fs.StringVar(&e.Straggler, "straggler", "drop", "sync mode: what a step does at its timeout: drop (apply the pushes that arrived) or fail (push it again)")
	fs.StringVar(&e.WAL, "wal", "", "--cluster processes: on (the shards answer a push once it is on disk, so a killed shard loses nothing acknowledged) or off; default on in every mode but hogwild")
	addPSAuthFlags(fs, &e.PSAuth)
	t.verbose = fs.Bool("v", false, "log debug details, and TensorFlow's own log lines")
	return t
}

// addPSAuthFlags registers the flags of the credentials a worker (and the
// shards train starts) use with the parameter server.
func addPSAuthFlags(fs *flag.FlagSet, c *ps.Credentials) {
	fs.StringVar(&c.TokenFile, "ps-token-file", "", "file holding the parameter servers' bearer token (or set "+ps.EnvToken+"; --cluster processes makes one per job when neither is given)")
	fs.StringVar(&c.CAFile, "ps-ca", "", "PEM CA bundle: verifies the parameter servers' certificate, and makes the shards train starts require client certificates it signed")
	fs.StringVar(&c.CertFile, "ps-cert", "", "PEM certificate presented to the parameter servers (and served by the shards train starts)")
	fs.StringVar(&c.KeyFile, "ps-key", "", "PEM private key of --ps-cert")
	fs.StringVar(&c.ServerName, "ps-server-name", "", "name to verify in the parameter servers' certificate (default: the host dialled)")
}

// estimator checks the parsed flags and returns the estimator they describe.
func (t *trainFlags) estimator(stderr io.Writer) (*estimator.TFEstimator, error) {
	e := &t.e
	if t.fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected arguments %q", errUsage, t.fs.Args())
	}
	if *t.data == "" || e.Bundle == "" {
		return nil, fmt.Errorf("%w: --bundle and --data are required", errUsage)
	}
	if t.requireExportDir && e.ExportDir == "" && e.ModelDir == "" {
		return nil, fmt.Errorf("%w: --export (or --model-dir) is required to keep the trained model", errUsage)
	}
	set := map[string]bool{}
	t.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if e.Mode == "sync" && !set["pull-every"] {
		e.PullEvery = 1
	}
	if *t.noShuffle {
		e.ShufflePerIter = false
	}
	e.Seed = *t.seed
	e.InputMapping, e.LabelMapping = t.inputs.short(), t.labels.short()
	e.Inputs = append(t.inputs.full(), t.labels.full()...)
	if *t.optJSON != "" {
		b, err := jsonArg("optimizer-options", *t.optJSON)
		if err != nil {
			return nil, err
		}
		e.OptimizerOptions = json.RawMessage(b)
	}
	if *t.patience >= 0 {
		e.EarlyStopping = &estimator.EarlyStopping{Patience: *t.patience}
	}
	level := slog.LevelWarn
	if *t.verbose {
		level = slog.LevelDebug
	}
	e.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return e, nil
}

func runTrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("train", stderr)
	t := addTrainFlags(fs)
	t.requireExportDir = true
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	e, err := t.estimator(stderr)
	if err != nil {
		return err
	}
	useThisBinary(e)
	src, err := openData(*t.data, *t.where)
	if err != nil {
		return err
	}
	bar := newTrainProgress(stderr, e.Epochs)
	e.Hooks = bar.hooks()
	start := time.Now()
	m, err := e.Fit(ctx, src)
	bar.finish()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("interrupted: %w", err)
		}
		return err
	}
	defer m.Close()
	fmt.Fprintf(stdout, "trained in %s; model exported to %s\n", time.Since(start).Round(time.Millisecond), m.Path)
	return nil
}

// useThisBinary makes a processes-mode estimator start this executable's
// `gotflow worker` and `gotflow ps` unless it names another.
func useThisBinary(e *estimator.TFEstimator) {
	if e.Cluster == estimator.Processes && e.Binary == "" {
		if self, err := os.Executable(); err == nil {
			e.Binary = self
		}
	}
}

// openData opens a data file, directory or glob, keeping only the rows
// where (column=value, or empty) selects.
func openData(path, where string) (arrowio.Source, error) {
	var col, val string
	if where != "" {
		var ok bool
		if col, val, ok = strings.Cut(where, "="); !ok || col == "" {
			return nil, fmt.Errorf("%w: --where wants column=value, got %q", errUsage, where)
		}
	}
	src, err := arrowio.OpenDataset(path)
	if err != nil || where == "" {
		return src, err
	}
	return arrowio.Where(src, col, val) // closes src on error
}

// trainProgress turns training hooks into a progress line on a terminal
// and one log line per epoch otherwise.
type trainProgress struct {
	w      io.Writer
	tty    bool
	epochs int
	start  time.Time

	mu       sync.Mutex
	last     time.Time
	lastLoss float64
	examples int64
}

func newTrainProgress(w io.Writer, epochs int) *trainProgress {
	return &trainProgress{w: w, tty: isTerminal(w), epochs: max(epochs, 1), start: time.Now()}
}

func (p *trainProgress) hooks() estimator.TrainHooks {
	return estimator.TrainHooks{OnStep: p.step, OnEpoch: p.epoch, OnPlan: p.plan}
}

// plan prints the data plan and its memory bound before training.
func (p *trainProgress) plan(i estimator.PlanInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "data: %s\n", i)
}

// byteSize is a flag holding a byte count: 1048576, 512KiB, 256MiB, 1GiB
// (KB, MB, GB are taken as the same binary units).
type byteSize int64

func (b *byteSize) String() string {
	if b == nil || *b == 0 {
		return ""
	}
	return feeder.FormatBytes(int64(*b))
}

func (b *byteSize) Set(s string) error {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(strings.ToUpper(t), strings.ToUpper(u.suffix)) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || v*float64(mult) > math.MaxInt64/2 {
		return fmt.Errorf("want a size such as 256MiB or 1GiB, got %q", s)
	}
	*b = byteSize(v * float64(mult))
	return nil
}

func (p *trainProgress) step(s estimator.StepInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastLoss, p.examples = s.Loss, s.Examples
	if !p.tty || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	rate := float64(s.Examples) / time.Since(p.start).Seconds()
	fmt.Fprintf(p.w, "\r\033[Kepoch %d/%d  loss %.4f  %.0f examples/s", s.Epoch+1, p.epochs, s.Loss, rate)
}

func (p *trainProgress) epoch(i estimator.EpochInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	line := fmt.Sprintf("epoch %d/%d  loss %.4f", i.Epoch+1, i.Epochs, i.Loss)
	for _, k := range sortedKeys(i.Metrics) {
		line += fmt.Sprintf("  %s %.4f", k, i.Metrics[k])
	}
	if !math.IsNaN(i.ValLoss) {
		line += fmt.Sprintf("  val_loss %.4f", i.ValLoss)
		for _, k := range sortedKeys(i.ValMetrics) {
			line += fmt.Sprintf("  val_%s %.4f", k, i.ValMetrics[k])
		}
	}
	line += fmt.Sprintf("  %.0f examples/s  %s", i.ExamplesSec, i.Elapsed.Round(time.Millisecond))
	if i.ETA > 0 {
		line += fmt.Sprintf("  ETA %s", i.ETA.Round(time.Second))
	}
	fmt.Fprintln(p.w, line)
}

func (p *trainProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
