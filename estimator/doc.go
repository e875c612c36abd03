// Package estimator holds the Spark-ML shaped entry points of gotflow:
// TFEstimator, which trains a model bundle data-parallel against a
// parameter server and returns a TFModel, and TFModel, which runs a trained
// model over Arrow records the way TensorFlowOnSpark's TFModel does:
// InputMapping names which column feeds which model input, OutputMapping
// which output becomes which appended column, and Transform streams the
// input records back with those columns added.
//
// # Training
//
// TFEstimator.Fit streams its data: it never holds the training set in
// memory unless asked to (InMemory). Data opened with arrowio.OpenDataset —
// a file, a directory, a glob, or a Hive-partitioned tree such as Spark
// writes (`split=train/part-0.parquet`; the key becomes a column) — is
// listed into units from the file footers alone: Parquet row groups, Arrow
// IPC record batches, whole CSV files. A filter (arrowio.Where, `train
// --where`) skips the row groups whose statistics exclude its value and
// filters the rest while streaming. The last ValidationSplit of the rows,
// in file order, is held out and streamed for evaluation after every
// epoch. Any other arrowio.Source is read into memory once.
//
// Every epoch has one plan, a pure function of (Seed, epoch, Workers): with
// ShufflePerIter the units are permuted (differently every epoch) and the
// resulting row sequence is dealt to the workers in contiguous shares that
// differ by at most one row, so the assignment changes every epoch; all
// workers run the same number of steps (the last batches of a share are
// made smaller rather than a row being dropped or repeated; only with
// BatchSize 1 and unequal shares are rows dropped, and PlanInfo reports
// it). Each worker reads its share with Readers units decoded at once,
// delivered in order, permutes the rows inside each unit and, within
// windows of ShuffleBuffer bytes (256 MiB by default) of converted rows,
// permutes them again: the window is an index permutation, and each batch
// is gathered from it by index, never concatenated. Prefetch batches wait
// ready. An epoch's batches never hold rows of another epoch. The same
// seed, epoch, worker count and data give byte-identical batches, whatever
// Readers is; without ShufflePerIter the data is read in file and
// row-group order.
//
// Memory is bounded before training starts, from the footers: each worker
// holds at most Readers × (the largest unit decoded and converted, plus
// the decoder's buffers) + ShuffleBuffer (+ the units a window cuts at its
// ends) + (Prefetch+1) batches. Fit logs that bound and reports it through
// TrainHooks.OnPlan (`gotflow train` prints it); the stream's allocator
// enforces it, and a unit too large for the shuffle buffer is refused
// before training with the size to raise it to. For a 4 GiB dataset of
// 64 MiB row groups, one reader and a 256 MiB buffer, the bound is about
// 0.6 GiB per worker (see bench/results/streaming.json for a measured
// peak RSS).
//
// Each worker runs the bundle's training graph on its batches (feeding the
// weights it last pulled), pushes the gradients to the parameter server
// (package ps), and pulls new weights every PullEvery steps. Float32
// variables live on the parameter server, whose optimizer applies the
// gradients (Hogwild, AsyncLock, Sync or BoundedStaleness); other state,
// such as a dropout layer's RNG seed, stays with each worker. After every
// epoch the chief evaluates the validation rows with the bundle's eval
// graph (training behaviour off, as Keras' model.evaluate; a bundle without
// one is evaluated with its training graph), reports through Hooks and
// TensorBoardDir, snapshots the shards and records its progress in
// ModelDir, so a later Fit resumes. In process, the workers also stop
// together every CheckpointEvery steps (500 by default) while the shards
// are snapshotted and the position in the epoch's plan is recorded: a Fit
// killed mid-epoch resumes at that step and trains on exactly the batches
// an uninterrupted run would have (the shards write no snapshot of their
// own on stop, so the snapshot and the position always match). In
// Processes and TF_CONFIG jobs no worker stops: each push carries the
// worker's position in its share of the epoch (ps.AtPosition), which the
// shards keep with the update, so a killed job restarted on the same
// ModelDir resumes every share exactly at the batch the restored weights
// end with (with several shards, a push that only some had applied when
// the job died is trained on again: at most one batch per worker). At the end
// the inference graph is frozen with the trained weights and exported
// (frozen.pb, saved_model/, weights.safetensors and tfmodel.json in
// ExportDir).
//
// In-process workers, `gotflow worker` processes and TF_CONFIG replicas
// run one training loop over the same plan; in Processes mode the
// coordinator deals ranges of the epoch's row sequence and hands a dead
// worker's unconsumed range to the others.
//
// Cluster selects where it runs: InProcess (goroutine workers and
// in-memory shards) or Processes (`gotflow worker` and `gotflow ps`
// processes on loopback under a distributed.ProcessLauncher). RunWorker is
// the worker process's entry point, also used by Kubeflow TFJob replicas
// (TF_CONFIG), where the chief coordinates and exports.
//
// # Faults in Processes mode
//
//   - A killed worker is declared dead within the heartbeat timeout (3s);
//     its unconsumed rows go to the others and, in "sync" mode, the shards
//     are told at once that a step is one push fewer (ps.Client.SetWorkers),
//     so no step waits for it. SyncTimeout and Straggler bound any other
//     wait for a push.
//   - A killed shard is restarted on the same socket (the launcher binds it
//     and hands it to every attempt, so no other process can take the port)
//     from its snapshot and its write-ahead log (WAL): every update a worker
//     saw acknowledged survives, and retried pushes apply once, so "sync"
//     training with SGD ends at exactly the weights of a run without the
//     fault. A shard that cannot start fails Fit at once, quoting its log.
//   - A killed Fit takes its tasks with it: they get the kernel's
//     parent-death signal, watch their parent id, and a shard without
//     requests for two minutes exits by itself. A snapshot directory is
//     locked by one shard at a time, and no snapshot is replaced by an
//     older one. Fit again with the same ModelDir resumes; ModelDir/job.json
//     is replaced only once a job has started.
//   - PSAuth's token and TLS files reach every shard, worker and the
//     coordinator; without a token of the user's each job gets a random one.
//
// A TFModel refers to a model by Path and Kind: a SavedModel (by signature,
// or with RawTensorNames), a frozen GraphDef, a TF1 checkpoint (MetaGraph
// plus checkpoint files), or — through RegisterKind — other formats such as
// the converter's bundles. Save and Load store the reference and the
// parameters as a small JSON file (tfmodel.json).
//
// Transform is a pipeline: a feeder.Feeder reads the source, re-chunks it
// into batches of BatchSize rows and converts them to tensors (without a
// copy where Arrow's buffers allow); InFlight workers run batches on the
// model's single session at once (TensorFlow runs concurrent Runs in
// parallel) and append the fetched tensors as columns
// (feeder.AppendOutputs); the stream hands batches back in input order. At
// most 2*InFlight batches are held at once, so memory stays flat however
// many rows flow through.
//
// arrowio.OpenOrdered is the source to give Transform for files: it
// decodes Parquet row groups on several goroutines but delivers records in
// order, and reads columns of fixed-width numbers (or fixed-size lists of
// them) without nulls straight into C-allocated Arrow buffers that reach
// TensorFlow without a copy. arrowio.RowsPerRecord sizes its records to
// whole batches of about 8 MiB. Decoding and the session share the cores:
// for files it decodes directly, one reader per four cores by default
// (arrowio.DefaultReaders; decoding is several times cheaper per row than
// running the model) decodes at most two records per reader ahead of the
// model (arrowio.DecodeAhead),
// and InFlight (default 2) runs overlap with it; gotflow predict's
// --readers, --decode-ahead and --in-flight set the same knobs.
//
// # Ownership
//
// Fit owns everything it starts (sessions, shards, processes) and stops it
// before returning, also on error; it closes its data source. The TFModel
// it returns is the caller's. A TFModel owns the model it loads; Close
// frees it. Transform takes ownership of its arrowio.Source and closes it
// when the stream is closed or released. Records returned by
// Stream.RecordBatch are valid until the next call to Next; Retain them to
// keep them.
//
// # Concurrency
//
// A TFEstimator is configuration: Fit may be called again, but not
// concurrently with itself on the same ModelDir: a second Fit there is
// refused (ModelDir/fit.lock) before it writes anything. Its hooks run on Fit's
// goroutines (OnStep on each worker's) and must return quickly.
// Exported fields of a TFModel must not change once the model is used. Open, Transform
// and Close are safe for concurrent use; several Transforms may share one
// TFModel and its session. A Stream is read from one goroutine. Hooks run on
// the goroutine calling Stream.Next.
//
// # Errors
//
// TFEstimator.Validate explains every bad parameter or combination before
// Fit reads anything; Fit then rejects a bundle that does not load, a
// mapping to a missing column or input, a column that cannot feed its
// input or label without loss, empty data, files of one dataset that
// disagree on their schema, a filter that matches no row, a unit larger
// than the shuffle buffer (naming the size to raise it to), and more
// workers than rows, before any worker or process starts. A worker's error stops the run and
// is returned; in Processes mode, task logs are kept in ModelDir/logs.
//
// Mapping problems — an unmapped signature input, a missing column, a
// column whose type cannot feed the input without loss, a width that does
// not fit, an unknown output — are returned by Transform before any row is
// read, naming the column, the input and what was expected. Errors while
// streaming (nulls in a column, TensorFlow failures, a failing source) stop
// the stream: Next returns false and Err (or Close) returns the error; the
// batches before it were delivered in order. Use after Close returns
// tf.ErrClosed.
package estimator
