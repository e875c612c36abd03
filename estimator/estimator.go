package estimator

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/ps"
	"github.com/gotflow/gotflow/ps/optim"
)

// The values of TFEstimator.Cluster.
const (
	InProcess = ""
	Processes = "processes"
)

// Defaults of TFEstimator's parameters.
const (
	DefaultTrainBatchSize = 32
	DefaultEpochs         = 1
)

// TFEstimator trains a model bundle (see `gotflow convert`) data-parallel:
// workers run the bundle's training graph on their share of the data and
// push gradients to a parameter server, which applies them with the
// configured optimizer. Fit returns a TFModel over the exported result.
//
// The exported fields are its parameters, with a meaningful zero value
// except Bundle; they mirror SparkFlow's SparkAsyncDL, TensorFlowOnSpark's
// TFEstimator and Elephas' ElephasEstimator. Validate explains every bad
// combination.
type TFEstimator struct {
	// Bundle is the model bundle directory written by `gotflow convert`.
	Bundle string `json:"bundle"`
	// InputMapping maps a column to the bundle input it feeds; LabelMapping
	// a column to a bundle label. Empty maps each input (label) to the
	// column of the same name.
	InputMapping map[string]string `json:"input_mapping,omitempty"`
	LabelMapping map[string]string `json:"label_mapping,omitempty"`
	// Inputs are full mappings for bundle inputs and labels: for a
	// column, the tensor it feeds and how (dtype, row shape, Fill for
	// nulls, Cast, Length and Pad for variable-length lists), in
	// feeder.ParseMapping's syntax on the command line. InputMapping and
	// LabelMapping are the short form; a tensor may be named in only one.
	Inputs feeder.Mapping `json:"inputs,omitempty"`
	// Cast allows lossy column conversions (float64 → float32, int64 →
	// int32); lossless widening is always allowed.
	Cast bool `json:"cast,omitempty"`

	// ModelDir keeps the parameter server's snapshots and the training
	// progress; a Fit with the same ModelDir resumes where the last one
	// stopped. Empty uses a temporary directory removed after Fit.
	ModelDir string `json:"model_dir,omitempty"`
	// ExportDir receives the trained model: frozen.pb (a frozen GraphDef),
	// saved_model/ (a SavedModel with a serving_default signature),
	// weights.safetensors and tfmodel.json. Empty means ModelDir/export;
	// one of the two is required.
	ExportDir string `json:"export_dir,omitempty"`

	// BatchSize is the rows per training step and worker (default 32).
	// MiniBatchSize is SparkFlow's name for it; set one or the other.
	BatchSize     int `json:"batch_size,omitempty"`
	MiniBatchSize int `json:"mini_batch_size,omitempty"`
	// MiniStochasticIters runs this many steps on each mini-batch before
	// drawing the next one (SparkFlow's miniStochasticIters; default 1).
	MiniStochasticIters int `json:"mini_stochastic_iters,omitempty"`
	// Epochs is the number of passes over the training data (default 1).
	Epochs int `json:"epochs,omitempty"`
	// Steps, when positive, stops each worker after this many steps, even
	// within an epoch.
	Steps int `json:"steps,omitempty"`
	// ShufflePerIter shuffles the training data every epoch (Keras'
	// shuffle=True, SparkFlow's shufflePerIter): the units (Parquet row
	// groups, IPC record batches) are permuted and dealt to the workers
	// anew, the rows inside each unit are permuted, and each worker
	// permutes its rows within a window of ShuffleBuffer bytes. Without
	// it, the data is read in file and row-group order.
	ShufflePerIter bool `json:"shuffle_per_iter,omitempty"`
	// ShuffleBuffer is the shuffle window of each worker in bytes of
	// converted rows (default 256 MiB; see DefaultShuffleBuffer). Memory
	// per worker stays below Readers × the largest unit + ShuffleBuffer +
	// Prefetch batches, whatever the size of the data.
	ShuffleBuffer int64 `json:"shuffle_buffer,omitempty"`
	// Prefetch is how many ready batches wait for each worker (default 2).
	Prefetch int `json:"prefetch,omitempty"`
	// InMemory keeps the converted training data in memory after the first
	// epoch instead of reading it again (tf.data's cache()): for data that
	// fits. Batches are the same as when streaming.
	InMemory bool `json:"in_memory,omitempty"`
	// CheckpointEvery is how many steps the in-process workers run between
	// mid-epoch checkpoints (default 500): the shards' snapshot and the
	// position in the epoch's plan are saved together, so a Fit killed
	// mid-epoch resumes at that step, with the same batches after it as an
	// uninterrupted run. Negative: at the end of epochs only.
	CheckpointEvery int `json:"checkpoint_every,omitempty"`
	// PartitionShuffles re-deals the rows among the workers this many times
	// over the whole training (0: the partition is fixed).
	PartitionShuffles int `json:"partition_shuffles,omitempty"`
	// ValidationSplit holds out this fraction of the rows (the last ones, as
	// Keras' validation_split does) for evaluation after every epoch.
	ValidationSplit float64 `json:"validation_split,omitempty"`
	// EarlyStopping stops training when the validation loss stops
	// improving; it needs a ValidationSplit.
	EarlyStopping *EarlyStopping `json:"early_stopping,omitempty"`
	// Seed makes shuffling and partitioning reproducible.
	Seed int64 `json:"seed,omitempty"`

	// Workers is the number of data-parallel workers (ClusterSize; at
	// least 1, required); NumPS the number of parameter-server shards
	// (default 1). Readers is how many units each worker decodes at once
	// (default 1); the batches are the same whatever it is.
	Workers int `json:"workers,omitempty"`
	NumPS   int `json:"num_ps,omitempty"`
	Readers int `json:"readers,omitempty"`
	// Mode is how the parameter server applies gradients: "hogwild"
	// (default), "async-lock", "sync" or "bounded-staleness".
	Mode string `json:"mode,omitempty"`
	// MaxStaleness bounds how many versions old a gradient may be in
	// bounded-staleness mode (default 4).
	MaxStaleness int `json:"max_staleness,omitempty"`
	// PullEvery is how many steps a worker runs between weight pulls:
	// 1 (default) pulls after every step, as synchronous SGD needs; larger
	// values are Elephas' "frequency". A negative value pulls once per epoch.
	PullEvery int `json:"pull_every,omitempty"`
	// SyncTimeout is how long a "sync" step waits for its last push
	// (default 10s in Processes mode, where a worker can die, and one
	// minute in process); Straggler is what the step does then: "drop"
	// (default: apply the pushes that arrived) or "fail" (discard the step;
	// the workers push it again). When a worker is declared dead the steps
	// are re-formed with the survivors at once, without waiting for the
	// timeout.
	SyncTimeout time.Duration `json:"sync_timeout,omitempty"`
	Straggler   string        `json:"straggler,omitempty"`
	// OverlapPush sends step t's gradients while step t+1 computes, on the
	// weights from before step t: the round trip to the parameter server is
	// hidden at the price of one more step of staleness. Not with "sync".
	OverlapPush bool `json:"overlap_push,omitempty"`

	// Optimizer is "sgd", "momentum", "adam" (default), "adamw",
	// "adagrad" or "rmsprop"; LearningRate its learning rate (default the
	// optimizer's Keras default). OptimizerOptions holds the rest as
	// SparkFlow's optimizerOptions JSON, e.g. {"beta_1": 0.8}; fields it
	// sets win over Optimizer and LearningRate.
	Optimizer        string          `json:"optimizer,omitempty"`
	LearningRate     float64         `json:"learning_rate,omitempty"`
	OptimizerOptions json.RawMessage `json:"optimizer_options,omitempty"`

	// IntraOpThreads and InterOpThreads size each worker's TensorFlow
	// thread pools (0: TensorFlow's default).
	IntraOpThreads int `json:"intra_op_threads,omitempty"`
	InterOpThreads int `json:"inter_op_threads,omitempty"`

	// Cluster is where the workers and parameter-server shards run:
	// InProcess (default, goroutines and in-memory connections) or
	// Processes (`gotflow worker` and `gotflow ps` processes on loopback,
	// supervised: a dead worker's rows go to the others, a dead shard is
	// restarted from its snapshot). Binary is the gotflow executable that
	// Processes runs (default: this program if it is gotflow, else gotflow
	// from PATH).
	Cluster string `json:"cluster,omitempty"`
	Binary  string `json:"binary,omitempty"`

	// WAL decides whether the shards Fit starts in Processes mode log every
	// change and answer a push only once it is on disk, so that a shard
	// killed at any moment restarts with every update a worker saw
	// acknowledged: "on", "off", or "" (default) for on in every mode but
	// "hogwild", whose lock-free updates promise no exactness anyway ("sync"
	// needs it: a shard back at an older step would strand its workers). The
	// log costs one fsync per push (shared by concurrent pushes); see
	// bench/results/ps.json. In-process shards never log: a crash takes
	// their workers with them.
	WAL string `json:"wal,omitempty"`

	// PSAuth secures the connections to the parameter-server shards: a
	// bearer token and TLS (mTLS when it names a CA), for the shards Fit
	// starts in Processes mode and for every client — workers and the
	// coordinator. In Processes mode without a token of its own, Fit makes
	// a random one for each job, so other users of the machine cannot reach
	// its shards. The files are read where each process starts.
	PSAuth ps.Credentials `json:"ps_auth,omitzero"`

	// TensorBoardDir, when set, receives TensorBoard event files with the
	// loss, metrics and examples/s of every epoch.
	TensorBoardDir string `json:"tensorboard_dir,omitempty"`
	// Hooks observe progress; Logger receives debug logs (nil discards).
	Hooks  TrainHooks   `json:"-"`
	Logger *slog.Logger `json:"-"`
}

// EarlyStopping stops training when the monitored validation value has not
// improved by at least MinDelta for Patience epochs.
type EarlyStopping struct {
	// Monitor is "loss" (default) or the name of a bundle metric; lower is
	// better for the loss, higher for metrics.
	Monitor  string  `json:"monitor,omitempty"`
	Patience int     `json:"patience,omitempty"`
	MinDelta float64 `json:"min_delta,omitempty"`
}

// TrainHooks are callbacks that follow a Fit. They are called from Fit's
// goroutine (OnStep from the worker's), must return quickly, and may be nil.
type TrainHooks struct {
	// OnStep is called after every training step of every worker, from
	// that worker's goroutine: calls from different workers run
	// concurrently.
	OnStep func(StepInfo)
	// OnEpoch is called after every epoch, with validation results.
	OnEpoch func(EpochInfo)
	// OnWorkerLost is called when a worker process is declared dead
	// (Processes mode); its rows go to the other workers.
	OnWorkerLost func(task, reason string)
	// OnPlan is called once before training with the data plan: rows,
	// units, steps per epoch and the memory bound.
	OnPlan func(PlanInfo)
}

// StepInfo describes one training step.
type StepInfo struct {
	Worker   int
	Epoch    int // 0-based
	Batch    int // the batch's index in the worker's share of the epoch
	Step     int // steps this worker ran so far in this Fit
	Rows     int
	Loss     float64
	Examples int64 // rows trained on so far by every worker
}

// EpochInfo describes one finished epoch.
type EpochInfo struct {
	Epoch       int                // 0-based
	Epochs      int                // planned epochs
	Steps       int                // training steps in this epoch, all workers
	Loss        float64            // mean training loss over the epoch's steps
	Metrics     map[string]float64 // mean training metrics
	ValLoss     float64            // NaN without a validation split
	ValMetrics  map[string]float64
	ExamplesSec float64 // training rows per second in this epoch
	Elapsed     time.Duration
	ETA         time.Duration // estimated time to the last epoch
}

func (e *TFEstimator) batchSize() int {
	switch {
	case e.BatchSize > 0:
		return e.BatchSize
	case e.MiniBatchSize > 0:
		return e.MiniBatchSize
	}
	return DefaultTrainBatchSize
}

func orDefault(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

func (e *TFEstimator) mode() (ps.Mode, error) {
	if e.Mode == "" {
		return ps.Hogwild, nil
	}
	return ps.ParseMode(e.Mode)
}

// straggler returns the Sync straggler policy (default drop).
func (e *TFEstimator) straggler() (ps.StragglerPolicy, error) {
	switch e.Straggler {
	case "", "drop":
		return ps.StragglerDrop, nil
	case "fail":
		return ps.StragglerFail, nil
	}
	return 0, fmt.Errorf("Straggler is %q; want \"drop\" or \"fail\"", e.Straggler)
}

// wal reports whether shards in other processes keep a write-ahead log.
func (e *TFEstimator) wal(m ps.Mode) bool {
	switch e.WAL {
	case "on":
		return true
	case "off":
		return false
	}
	return m != ps.Hogwild
}

// syncTimeout returns SyncTimeout or its default for the cluster mode.
func (e *TFEstimator) syncTimeout() time.Duration {
	switch {
	case e.SyncTimeout > 0:
		return e.SyncTimeout
	case e.Cluster == Processes:
		return 10 * time.Second
	}
	return time.Minute
}

// optimizer builds the parameter server's optimizer configuration.
func (e *TFEstimator) optimizer() (optim.Config, error) {
	c := optim.Config{Optimizer: e.Optimizer, LearningRate: e.LearningRate}
	if c.Optimizer == "" {
		c.Optimizer = "adam"
	}
	if len(e.OptimizerOptions) > 0 {
		// Start from Optimizer/LearningRate; the JSON's fields override them.
		base, err := json.Marshal(c)
		if err != nil {
			return c, err
		}
		merged := map[string]json.RawMessage{}
		if err := json.Unmarshal(base, &merged); err != nil {
			return c, err
		}
		var extra map[string]json.RawMessage
		if err := json.Unmarshal(e.OptimizerOptions, &extra); err != nil {
			return c, fmt.Errorf("estimator: OptimizerOptions is not a JSON object: %w", err)
		}
		for k, v := range extra {
			merged[k] = v
		}
		all, err := json.Marshal(merged)
		if err != nil {
			return c, err
		}
		c, err = optim.ParseConfig(all)
		if err != nil {
			return c, fmt.Errorf("estimator: OptimizerOptions: %w", err)
		}
		return c, nil
	}
	return c, c.Validate()
}

// Validate checks the parameters without reading the bundle or the data,
// and explains every bad value or combination.
func (e *TFEstimator) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if strings.TrimSpace(e.Bundle) == "" {
		bad("Bundle is required: the directory `gotflow convert` wrote")
	}
	for name, v := range map[string]int{"BatchSize": e.BatchSize, "MiniBatchSize": e.MiniBatchSize,
		"MiniStochasticIters": e.MiniStochasticIters, "Epochs": e.Epochs, "Steps": e.Steps,
		"PartitionShuffles": e.PartitionShuffles, "Workers": e.Workers, "NumPS": e.NumPS,
		"Readers": e.Readers, "Prefetch": e.Prefetch, "MaxStaleness": e.MaxStaleness, "IntraOpThreads": e.IntraOpThreads,
		"InterOpThreads": e.InterOpThreads} {
		if v < 0 {
			bad("%s is %d; it must be >= 0 (0 takes the default)", name, v)
		}
	}
	if e.ShuffleBuffer < 0 {
		bad("ShuffleBuffer is %d; it must be >= 0 bytes (0 takes the default, 256 MiB)", e.ShuffleBuffer)
	}
	if e.BatchSize > 0 && e.MiniBatchSize > 0 && e.BatchSize != e.MiniBatchSize {
		bad("BatchSize (%d) and MiniBatchSize (%d) are two names for the rows per step; set one", e.BatchSize, e.MiniBatchSize)
	}
	if e.ExportDir == "" && e.ModelDir == "" {
		bad("set ExportDir (or ModelDir) to keep the trained model")
	}
	if e.Workers == 0 {
		bad("Workers is 0; set the number of data-parallel workers (1 or more)")
	}
	if e.Workers > 1024 {
		bad("Workers is %d; at most 1024 are supported", e.Workers)
	}
	if math.IsNaN(e.ValidationSplit) || e.ValidationSplit < 0 || e.ValidationSplit >= 1 {
		bad("ValidationSplit is %g; it must be in [0, 1)", e.ValidationSplit)
	}
	if e.EarlyStopping != nil {
		if e.ValidationSplit == 0 {
			bad("EarlyStopping needs a ValidationSplit > 0 to monitor")
		}
		if e.EarlyStopping.Patience < 0 || e.EarlyStopping.MinDelta < 0 {
			bad("EarlyStopping.Patience and MinDelta must be >= 0")
		}
	}
	if e.Cluster != InProcess && e.Cluster != Processes && e.Cluster != "in-process" {
		bad("Cluster is %q; want \"in-process\" (or empty) or %q", e.Cluster, Processes)
	}
	mode, err := e.mode()
	if err != nil {
		bad("Mode: %v", err)
	}
	if e.MaxStaleness > 0 && err == nil && mode != ps.BoundedStaleness {
		bad("MaxStaleness applies to Mode \"bounded-staleness\" only, not %q", e.Mode)
	}
	if err == nil && mode == ps.Sync && e.PullEvery != 0 && e.PullEvery != 1 {
		bad("Mode \"sync\" pulls after every step; PullEvery must be 0 or 1, got %d", e.PullEvery)
	}
	if err == nil && mode == ps.Sync && e.OverlapPush {
		bad("Mode \"sync\" applies every step before the next; OverlapPush needs an asynchronous mode")
	}
	if e.SyncTimeout < 0 {
		bad("SyncTimeout is %v; it must be >= 0 (0 takes the default)", e.SyncTimeout)
	}
	if _, err := e.straggler(); err != nil {
		bad("%v", err)
	}
	if e.WAL != "" && e.WAL != "on" && e.WAL != "off" {
		bad("WAL is %q; want \"on\", \"off\" or empty (on except in hogwild mode)", e.WAL)
	}
	if e.WAL == "off" && e.Cluster == Processes && e.Mode == "sync" {
		bad("WAL \"off\" with Mode \"sync\": a shard restarted without its log comes back at an older step than its workers, and sync training cannot go on; leave WAL on")
	}
	if e.LearningRate < 0 || math.IsNaN(e.LearningRate) || math.IsInf(e.LearningRate, 0) {
		bad("LearningRate is %g; it must be a finite number >= 0 (0 takes the optimizer's default)", e.LearningRate)
	}
	if _, err := e.optimizer(); err != nil {
		bad("%v", err)
	}
	seen := map[string]string{}
	for col, in := range e.InputMapping {
		if col == "" || in == "" {
			bad("InputMapping has an empty column or input name (%q → %q)", col, in)
		}
		seen[col] = "input " + in
	}
	for col, l := range e.LabelMapping {
		if col == "" || l == "" {
			bad("LabelMapping has an empty column or label name (%q → %q)", col, l)
		}
		if other, dup := seen[col]; dup {
			bad("column %q is mapped to both %s and label %s", col, other, l)
		}
	}
	for _, in := range e.Inputs {
		if in.Column == "" || in.Tensor == "" {
			bad("Inputs has an empty column or tensor name (%q → %q)", in.Column, in.Tensor)
		}
	}
	if _, err := byTensor(e.Inputs, e.InputMapping, e.LabelMapping); err != nil {
		bad("%v (InputMapping, LabelMapping and Inputs may each name a tensor once)", err)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("estimator: invalid TFEstimator: %w", errors.Join(errs...))
}
