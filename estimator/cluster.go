package estimator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotflow/gotflow/distributed"
	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/control"
	"github.com/gotflow/gotflow/internal/tensorboard"
	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/ps"
)

// JobFormat is the format tag of the job file `gotflow worker` reads.
const JobFormat = "gotflow.job/v1"

// WorkerJob is what a worker process needs to train: the estimator's
// parameters and the data files. Fit writes it to ModelDir/job.json in
// Processes mode; under Kubernetes every replica reads the same file.
type WorkerJob struct {
	Format    string      `json:"format"`
	Estimator TFEstimator `json:"estimator"`
	Data      []string    `json:"data"`
	// Where, if set, keeps only the rows whose column equals a value
	// (arrowio.Where).
	Where *RowFilter `json:"where,omitempty"`
	// Root, if set, is the directory the data was opened on: Hive
	// partition keys (key=value directories) below it become columns.
	Root string `json:"root,omitempty"`
	// Rows, if set, is how many rows the data holds; a worker that reads
	// another number stops with an error.
	Rows int `json:"rows,omitempty"`
	// FirstEpoch is the epoch a resumed job starts at (the job runs
	// Estimator.Epochs - FirstEpoch epochs).
	FirstEpoch int `json:"first_epoch,omitempty"`
	// LocalRows, if set, makes every trainer train on its own Data (a
	// Spark task's partition, say) rather than on its share of one dataset
	// all trainers read: LocalRows[r] is how many rows rank r's data holds.
	// The steps per epoch are equalised over these counts (rows beyond
	// the smallest share's steps are dropped), and a trainer that dies
	// fails the job, since no other trainer has its rows. It needs
	// Estimator.ValidationSplit 0.
	LocalRows []int64 `json:"local_rows,omitempty"`
	// Insecure lets the chief of a TF_CONFIG job serve heartbeats on its
	// cluster address without a coordinator token (`gotflow worker
	// --insecure`).
	Insecure bool `json:"insecure,omitempty"`
}

// RowFilter selects the rows whose Column equals Value.
type RowFilter struct {
	Column string `json:"column"`
	Value  string `json:"value"`
}

// jobData finds the files (and row filter) behind a source opened with
// arrowio.OpenDataset, optionally wrapped by arrowio.Where.
func jobData(data arrowio.Source) ([]string, *RowFilter, string, error) {
	var where *RowFilter
	if f, ok := data.(*arrowio.Filtered); ok {
		where = &RowFilter{Column: f.Column, Value: f.Value}
		data = f.Unfiltered()
	}
	ds, ok := data.(*arrowio.Dataset)
	if !ok {
		return nil, nil, "", errors.New("data must be opened with arrowio.OpenDataset (optionally filtered by arrowio.Where): the files are read again")
	}
	for _, f := range ds.Files() {
		switch strings.ToLower(filepath.Ext(f)) {
		case ".parquet", ".pq", ".arrow", ".arrows", ".ipc", ".feather":
		default:
			return nil, nil, "", fmt.Errorf("%s: the files are read again, without the dataset's options, so they must be Parquet or Arrow IPC", f)
		}
	}
	return ds.Files(), where, ds.Root(), nil
}

// ReadWorkerJob reads and checks a job file.
func ReadWorkerJob(path string) (*WorkerJob, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("estimator: job file: %w", err)
	}
	var j WorkerJob
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("estimator: job file %s is not valid JSON: %w", path, err)
	}
	if j.Format != JobFormat {
		return nil, fmt.Errorf("estimator: job file %s has format %q, want %q", path, j.Format, JobFormat)
	}
	if len(j.Data) == 0 {
		return nil, fmt.Errorf("estimator: job file %s names no data files", path)
	}
	if err := j.Estimator.Validate(); err != nil {
		return nil, fmt.Errorf("estimator: job file %s: %w", path, err)
	}
	return &j, nil
}

// binary finds the gotflow executable for worker and PS processes.
func (e *TFEstimator) binary() (string, error) {
	if e.Binary != "" {
		return e.Binary, nil
	}
	if self, err := os.Executable(); err == nil && filepath.Base(self) == "gotflow" {
		return self, nil
	}
	if p, err := exec.LookPath("gotflow"); err == nil {
		return p, nil
	}
	return "", errors.New("estimator: Cluster \"processes\" needs the gotflow executable: set Binary or put gotflow on PATH")
}

// fitProcesses runs the job as `gotflow ps` and `gotflow worker` processes
// under distributed.ProcessLauncher. The parent hosts the coordinator: at
// the end of every epoch, while the workers wait, it evaluates the current
// weights and, after the last epoch, keeps them for the export.
func (r *run) fitProcesses(ctx context.Context, files []string, where *RowFilter, root string) ([]loader.Weight, error) {
	e := r.e
	bin, err := e.binary()
	if err != nil {
		return nil, err
	}
	if err := r.resume(); err != nil {
		return nil, err
	}
	if r.done.Epochs >= orDefault(e.Epochs, DefaultEpochs) { // nothing left to train
		return r.snapshotWeights(ctx)
	}
	job := WorkerJob{Format: JobFormat, Estimator: *e, Data: make([]string, len(files)), Where: where, Root: root,
		Rows: int(r.p.data.ds.NumRows()), FirstEpoch: r.done.Epochs}
	job.Estimator.Hooks, job.Estimator.Logger = TrainHooks{}, nil
	if job.Estimator.Bundle, err = filepath.Abs(e.Bundle); err != nil {
		return nil, fmt.Errorf("estimator: %w", err)
	}
	for i, f := range files {
		if job.Data[i], err = filepath.Abs(f); err != nil {
			return nil, fmt.Errorf("estimator: %w", err)
		}
	}
	// The job file takes its usual name only once the job has started: a
	// job that fails to start leaves the last good one in place.
	jobPath := filepath.Join(r.modelDir, "job.json")
	runJob := filepath.Join(r.modelDir, "job.starting.json")
	data, err := json.MarshalIndent(job, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("estimator: %w", err)
	}
	if err := writeFileAtomic(runJob, data); err != nil {
		return nil, err
	}
	defer os.Remove(runJob)
	logDir := filepath.Join(r.modelDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("estimator: %w", err)
	}
	// Every task of the job and the coordinator authenticate with the same
	// credentials; without a token of the user's, a fresh one per job.
	creds := e.PSAuth
	if tok, err := creds.LoadToken(); err != nil {
		return nil, fmt.Errorf("estimator: PSAuth: %w", err)
	} else if tok == "" {
		if creds.Token, err = control.NewToken(); err != nil {
			return nil, fmt.Errorf("estimator: PS token: %w", err)
		}
	} else {
		creds.Token = tok
	}
	r.creds = creds
	clientOpts, err := creds.ClientOptions()
	if err != nil {
		return nil, fmt.Errorf("estimator: PSAuth: %w", err)
	}
	var (
		mu      sync.Mutex
		psAddrs []string
		logs    []*os.File
		started int
		live    = e.Workers
	)
	defer func() {
		for _, f := range logs {
			f.Close()
		}
	}()
	numPS := orDefault(e.NumPS, 1)
	launcher := distributed.ProcessLauncher{
		Command: func(env distributed.TaskEnv) (*exec.Cmd, error) {
			mu.Lock()
			defer mu.Unlock()
			psAddrs = env.PSAddrs
			var args []string
			if env.Task.Role == distributed.RolePS {
				// A restarted shard starts with the workers still alive.
				args = r.psArgs(env.PSAddrs[env.Task.Index], env.Task.Index, numPS, live)
			} else {
				args = []string{"worker", "--job", runJob}
			}
			cmd := exec.Command(bin, args...)
			cmd.Env = append(os.Environ(), env.Environ()...)
			cmd.Env = append(cmd.Env, ps.EnvToken+"="+creds.Token)
			f, err := os.OpenFile(filepath.Join(logDir, string(env.Task.Role)+"-"+strconv.Itoa(env.Task.Index)+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				return nil, fmt.Errorf("estimator: task log: %w", err)
			}
			logs = append(logs, f)
			cmd.Stdout, cmd.Stderr = f, f
			return cmd, nil
		},
		Ready: func(ctx context.Context, env distributed.TaskEnv) error {
			return waitServing(ctx, env.PSAddrs[env.Task.Index], clientOpts)
		},
	}
	epochs := orDefault(e.Epochs, DefaultEpochs)
	var final []loader.Weight
	onEpochEnd, hookErr := r.epochEndHook(ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return psAddrs
	}, func(w []loader.Weight) error { final = w; return nil })
	var jobErr error
	onDead := func(t distributed.Task, reason string, receivers []distributed.Task) {
		mu.Lock()
		live = max(live-1, 1)
		n, addrs := live, psAddrs
		mu.Unlock()
		r.onDead(t, reason, receivers)
		if r.p.mode != ps.Sync {
			return
		}
		// The survivors' sync steps must not wait for the dead worker's
		// pushes: re-form them now.
		if err := r.setSyncWorkers(ctx, addrs, n, fmt.Sprintf("%s died: %s", t, reason)); err != nil {
			r.log.Error("re-forming sync steps failed", "err", err)
		}
	}
	cfg := distributed.JobConfig{
		Workers: e.Workers, NumPS: numPS, Rows: r.p.data.rows, Epochs: epochs - r.done.Epochs,
		MaxPSRestarts: 5, Logger: r.log,
		// Local processes: beat often, so that an epoch's end is seen within
		// ~100ms and a killed worker within a few seconds.
		Heartbeat:    distributed.HeartbeatConfig{Interval: 100 * time.Millisecond, Timeout: 3 * time.Second},
		MonitorHooks: distributed.MonitorHooks{OnDead: onDead, OnEpochEnd: onEpochEnd},
		SupervisorHooks: distributed.SupervisorHooks{OnStart: func(t distributed.Task, attempt int, _ distributed.Handle) {
			if !t.Trains() {
				return
			}
			if started++; started == e.Workers && jobErr == nil {
				// Every shard serves and every trainer runs: the job is
				// under way, and its file becomes the model dir's job.json.
				jobErr = writeFileAtomic(jobPath, data)
			}
		}},
	}
	res, err := launcher.Launch(ctx, cfg)
	if err := hookErr(); err != nil {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("estimator: training job (task logs in %s): %w", logDir, err)
	}
	if jobErr != nil {
		return nil, jobErr
	}
	if final == nil {
		return nil, fmt.Errorf("estimator: the training job ended before its last epoch (%s); task logs in %s", res.Reason, logDir)
	}
	return final, nil
}

// setSyncWorkers tells the shards at addrs that a sync step is now n
// pushes.
func (r *run) setSyncWorkers(ctx context.Context, addrs []string, n int, reason string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	opts, err := r.creds.ClientOptions()
	if err != nil {
		return err
	}
	c, err := ps.Dial(ctx, addrs, append(opts, ps.WithWorkerID("coordinator-control"))...)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.SetWorkers(ctx, n, reason)
}

// snapshotWeights reads the weights the shards of an earlier run saved in
// ModelDir, through shards restored in this process.
func (r *run) snapshotWeights(ctx context.Context) ([]loader.Weight, error) {
	lc, err := ps.NewLocalCluster(orDefault(r.e.NumPS, 1), r.serverOptions()...)
	if err != nil {
		return nil, err
	}
	defer lc.Close()
	c, err := lc.Dial(ctx, ps.WithWorkerID("coordinator"))
	if err != nil {
		return nil, err
	}
	if r.eval, err = r.connect(ctx, -1, c); err != nil {
		return nil, err
	}
	defer func() { // close before the shards stop
		r.eval.Close()
		r.eval = nil
		c.Close()
	}()
	return r.weights(ctx)
}

// onDead reports a worker the coordinator declared dead.
func (r *run) onDead(t distributed.Task, reason string, receivers []distributed.Task) {
	r.log.Warn("worker lost; its rows go to the others", "task", t.String(), "reason", reason, "receivers", len(receivers))
	if r.e.Hooks.OnWorkerLost != nil {
		r.e.Hooks.OnWorkerLost(t.String(), reason)
	}
}

// epochEndHook returns the coordinator's OnEpochEnd: it evaluates the
// weights the shards at addrs() hold, reports the epoch, and hands the
// weights to final after the last epoch (or an early stop). The second
// result reports the first error a hook call met (which stops the job).
func (r *run) epochEndHook(ctx context.Context, addrs func() []string, final func([]loader.Weight) error) (func(int) bool, func() error) {
	epochs, first := orDefault(r.e.Epochs, DefaultEpochs), r.done.Epochs
	var (
		mu  sync.Mutex
		err error
		t0  = time.Now()
	)
	r.started, r.startEpoch, r.best = time.Now(), r.done.Epochs, math.Inf(1)
	hook := func(epoch int) bool {
		mu.Lock()
		defer mu.Unlock()
		epoch += first // the job counts the epochs of this run only
		info := EpochInfo{Epoch: epoch, Epochs: epochs, Elapsed: time.Since(t0)}
		info.ExamplesSec = float64(r.p.data.rows) / info.Elapsed.Seconds()
		stop, w, herr := r.processEpochEnd(ctx, info, addrs())
		if herr == nil && r.modelDir != "" {
			r.done.Epochs = epoch + 1
			herr = r.saveProgress()
		}
		if herr == nil && (stop || epoch+1 >= epochs) {
			herr = final(w)
		}
		if herr != nil {
			err = herr
			return true
		}
		t0 = time.Now()
		return stop
	}
	return hook, func() error {
		mu.Lock()
		defer mu.Unlock()
		return err
	}
}

// psIdleTimeout is how long a shard Fit started waits without any request
// before it concludes its job is gone and exits (a backstop: shards also
// end with their parent).
const psIdleTimeout = 2 * time.Minute

// psArgs are the flags of one `gotflow ps` shard of this run, with workers
// pushes per sync step. The shard serves on the socket the launcher hands
// it, at addr.
func (r *run) psArgs(addr string, shard, n, workers int) []string {
	straggler := r.e.Straggler
	if straggler == "" {
		straggler = "drop"
	}
	args := []string{"ps", "--listen", addr, "--shard", fmt.Sprintf("%d/%d", shard, n),
		"--mode", r.p.mode.String(), "--workers", strconv.Itoa(workers), "--optimizer", r.p.opt.JSON(),
		"--snapshot-dir", filepath.Join(r.modelDir, "ps"), "--snapshot-every", "20", "--snapshot-interval", "1s",
		"--sync-timeout", r.e.syncTimeout().String(), "--straggler", straggler,
		"--idle-timeout", psIdleTimeout.String(), "--wal=" + strconv.FormatBool(r.e.wal(r.p.mode))}
	if r.p.mode == ps.BoundedStaleness {
		args = append(args, "--max-staleness", strconv.Itoa(orDefault(r.e.MaxStaleness, 4)))
	}
	c := r.e.PSAuth
	if c.CertFile != "" {
		args = append(args, "--tls-cert", c.CertFile, "--tls-key", c.KeyFile)
	}
	if c.CAFile != "" {
		args = append(args, "--tls-client-ca", c.CAFile)
	}
	return args
}

// processEpochEnd evaluates the weights the shards hold at the end of an
// epoch. In Processes mode the epoch's Loss is the loss of those weights
// over (up to 4096 of) the training rows.
func (r *run) processEpochEnd(ctx context.Context, info EpochInfo, addrs []string) (bool, []loader.Weight, error) {
	if r.eval == nil {
		opts, err := r.creds.ClientOptions()
		if err != nil {
			return false, nil, err
		}
		c, err := ps.Dial(ctx, addrs, append(opts, ps.WithWorkerID("coordinator"))...)
		if err != nil {
			return false, nil, err
		}
		if r.eval, err = r.connect(ctx, -1, c); err != nil {
			return false, nil, err
		}
	}
	sample := arrowio.RangePieces(r.p.data.train, 0, 4096)
	var err error
	if info.Loss, info.Metrics, err = r.evaluate(ctx, sample); err != nil {
		return false, nil, err
	}
	stop, err := r.endEpoch(ctx, info)
	if err != nil {
		return false, nil, err
	}
	w, err := r.weights(ctx)
	return stop, w, err
}

// waitServing waits until the shard at addr answers a Stats call with
// these client options (the launcher's socket accepts connections before
// the shard serves them, so a TCP connect proves nothing). The client
// retries while the shard is unavailable; ctx bounds the wait, and a
// refusal of the credentials ends it at once.
func waitServing(ctx context.Context, addr string, opts []ps.ClientOption) error {
	opts = append(opts, ps.WithWorkerID("coordinator-ready"), ps.WithRPCTimeout(time.Second),
		ps.WithRetry(math.MaxInt32, 50*time.Millisecond, 500*time.Millisecond))
	c, err := ps.Dial(ctx, []string{addr}, opts...)
	if err == nil {
		defer c.Close()
		_, err = c.Stats(ctx)
	}
	if err != nil {
		return fmt.Errorf("estimator: parameter server %s not serving: %w", addr, err)
	}
	return nil
}

// RunWorker runs one trainer of a job: it reads the job's data, connects to
// the parameter-server shards in env, and trains on the rows the
// coordinator hands out (distributed.RunTrainer) until the job is over.
// `gotflow worker` calls it with the environment ProcessLauncher or
// TF_CONFIG describes.
func RunWorker(ctx context.Context, job *WorkerJob, env distributed.TaskEnv, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := job.Estimator
	if len(env.PSAddrs) == 0 {
		return errors.New("estimator: worker has no parameter-server addresses")
	}
	var scan arrowio.ScanConfig
	if job.Where != nil {
		scan.WhereColumn, scan.WhereValue = job.Where.Column, job.Where.Value
	}
	ds, err := arrowio.ScanFiles(job.Data, job.Root, scan)
	if err != nil {
		return fmt.Errorf("estimator: training data: %w", err)
	}
	p, err := e.prepare(ds)
	if err != nil {
		return err
	}
	defer p.close()
	local, err := job.localPlan(env, p.data)
	if err != nil {
		return err
	}
	if local == nil && job.Rows > 0 && p.data.ds.NumRows() != int64(job.Rows) {
		return fmt.Errorf("estimator: worker read %d rows from %v, the job has %d", p.data.ds.NumRows(), job.Data, job.Rows)
	}
	opts, err := e.PSAuth.ClientOptions()
	if err != nil {
		return fmt.Errorf("estimator: PSAuth: %w", err)
	}
	client, err := ps.Dial(ctx, env.PSAddrs, append(opts, ps.WithWorkerID(env.Task.String()))...)
	if err != nil {
		return err
	}
	defer client.Close()
	if err := client.Register(ctx, p.vars); err != nil {
		return fmt.Errorf("estimator: register variables: %w", err)
	}
	w, err := newTrainWorker(ctx, env.Rank, p.b, client, e.sessionOptions())
	if err != nil {
		return err
	}
	defer w.Close()
	pullEvery := e.PullEvery
	if pullEvery == 0 {
		pullEvery = 1
	}
	tjob := distributed.TrainerJob{Rows: p.data.rows, Epochs: orDefault(e.Epochs, DefaultEpochs) - job.FirstEpoch, Insecure: job.Insecure}
	if local != nil {
		tjob.Rows, tjob.RankRows = local.total, job.LocalRows
	}
	// The heartbeats to the chief use the PS credentials' TLS as well.
	// (A local launcher's coordinator is on loopback, behind its token.)
	if e.PSAuth.TLS() && env.TFConfig {
		if tjob.ClientTLS, err = e.PSAuth.ClientTLS(); err != nil {
			return fmt.Errorf("estimator: PSAuth: %w", err)
		}
		if env.HostsCoordinator() {
			if tjob.ServerTLS, err = e.PSAuth.ServerTLS(); err != nil {
				return fmt.Errorf("estimator: PSAuth: %w", err)
			}
		}
	}
	if tjob.Epochs < 1 {
		return fmt.Errorf("estimator: job starts at epoch %d of %d: nothing to train", job.FirstEpoch, orDefault(e.Epochs, DefaultEpochs))
	}
	chiefErr := func() error { return nil }
	if env.HostsCoordinator() {
		// This task coordinates the job (the chief under TF_CONFIG): it
		// evaluates every epoch and exports the model at the end.
		r := &run{e: &e, p: p, log: log, modelDir: e.ModelDir, done: progress{Epochs: job.FirstEpoch}, creds: e.PSAuth}
		defer r.close()
		if r.modelDir == "" {
			if r.modelDir, err = os.MkdirTemp("", "gotflow-chief-"); err != nil {
				return fmt.Errorf("estimator: %w", err)
			}
			defer os.RemoveAll(r.modelDir)
		}
		if e.TensorBoardDir != "" {
			if r.tb, err = tensorboard.NewWriter(e.TensorBoardDir); err != nil {
				return fmt.Errorf("estimator: tensorboard: %w", err)
			}
			defer r.tb.Close()
		}
		var hook func(int) bool
		hook, chiefErr = r.epochEndHook(ctx, func() []string { return env.PSAddrs }, func(w []loader.Weight) error {
			m, err := r.export(w)
			if err == nil {
				log.Info("model exported", "path", m.Path)
			}
			return err
		})
		tjob.Hooks = distributed.MonitorHooks{OnDead: r.onDead, OnEpochEnd: hook}
	}
	log.Info("worker ready", "task", env.Task.String(), "rows", p.data.rows, "plan", e.planInfo(p.data, max(env.Workers, 1)).String())
	plan := e.planKey(p.data, max(env.Workers, 1))
	err = distributed.RunTrainer(ctx, env, tjob, func(ctx context.Context, a *distributed.Agent) error {
		var examples atomic.Int64
		looked := false
		for {
			work, err := a.Next(ctx)
			if errors.Is(err, distributed.ErrStopped) {
				return nil
			}
			if err != nil {
				return err
			}
			// Every worker orders the epoch's units by the same
			// permutation, and the coordinator deals ranges of that row
			// sequence: the rows a worker consumed are a prefix of its
			// ranges, and a dead worker's unconsumed rows are exactly
			// what is reassigned.
			epoch := job.FirstEpoch + work.Epoch
			var (
				order   []arrowio.Piece
				rows    []int64 // rows of each rank's share
				firsts  []int64
				layouts [][]int
				offset  int64 // the epoch row this worker's order starts at
			)
			if local != nil {
				order, rows, firsts, layouts = e.epochOrder(p.data, epoch), job.LocalRows, local.firsts, local.layouts
				offset = firsts[env.Rank]
			} else {
				var shares [][]arrowio.Piece
				order, shares, firsts, layouts, _ = e.shares(p.data, epoch, max(env.Workers, 1))
				for _, s := range shares {
					rows = append(rows, arrowio.RowsOf(s))
				}
			}
			var pieces []arrowio.Piece
			for _, rg := range work.Ranges {
				if rg.Start < offset || rg.End-offset > arrowio.RowsOf(order) {
					return fmt.Errorf("estimator: worker %s was dealt rows [%d, %d) but holds rows [%d, %d) only", env.Task, rg.Start, rg.End, offset, offset+arrowio.RowsOf(order))
				}
				pieces = append(pieces, arrowio.RangePieces(order, rg.Start-offset, rg.End-offset)...)
			}
			first, batches := work.Ranges[0].Start, []int(nil)
			if rk := env.Rank; len(work.Ranges) == 1 && rk >= 0 && rk < len(rows) &&
				work.Ranges[0] == (control.Range{Start: firsts[rk], End: firsts[rk] + rows[rk]}) {
				// The worker's own share: the step count every worker runs.
				batches = layouts[rk]
			}
			skip, consumed := 0, 0
			var position func(batches, steps int) []byte
			if batches != nil {
				if !looked {
					// The first share of this run: the shards' state may
					// hold part of it already (a restarted job).
					at, found, err := resumePosition(ctx, client, plan)
					if err != nil {
						return err
					}
					switch {
					case !found:
						looked = true
					case at.Epoch < epoch:
						// The share starts afresh; the steps go on.
						looked, w.steps = true, at.Steps
					case at.Epoch == epoch:
						looked, skip, w.steps = true, min(at.Batches, len(batches)), at.Steps
					default:
						// The shards hold a later epoch's pushes: this
						// share was trained on in full. Look again at the
						// next epoch; the step count is at least there.
						skip, w.steps = len(batches), max(w.steps, at.Steps)
					}
					if skip > 0 {
						for _, n := range batches[:skip] {
							consumed += n
						}
						a.Advance(int64(consumed), int64(w.steps), 0)
						log.Info("resuming within the epoch", "epoch", epoch+1, "batches_done", skip, "rows_done", consumed)
					}
				}
				position = func(batches, steps int) []byte {
					b, _ := json.Marshal(workerPosition{Plan: plan, Epoch: epoch, Batches: batches, Steps: steps})
					return b
				}
			}
			s, err := feeder.NewStream(ctx, p.data.ds, pieces, e.streamConfig(p.data, epoch, first, batches, skip))
			if err != nil {
				return fmt.Errorf("estimator: %w", err)
			}
			res, err := w.runEpoch(ctx, s, epochPlan{
				epoch: epoch, iters: orDefault(e.MiniStochasticIters, 1),
				pullEvery: pullEvery, maxSteps: e.Steps, overlap: e.OverlapPush, position: position,
				onBatch: func(_, n int, loss float64) error {
					consumed += n
					a.Advance(int64(n), int64(w.steps), loss)
					return nil
				},
			}, &examples, nil)
			s.Close()
			if err != nil {
				return err
			}
			if rest := int(work.Rows()) - consumed; rest > 0 && (res.done || batches != nil) {
				// The step limit was reached, or rows were dropped to
				// equalise the steps: hand the rest back as done.
				a.Advance(int64(rest), int64(w.steps), 0)
			}
		}
	})
	return errors.Join(err, chiefErr())
}

// workerPosition is where a worker of a processes or TF_CONFIG job stands
// in its share of an epoch. It travels with the worker's gradients
// (ps.AtPosition) and the shards keep it with the update it came with, in
// their snapshots and write-ahead logs: a job restarted from the shards'
// state resumes each share exactly where the restored weights end.
type workerPosition struct {
	Plan    string `json:"plan"`    // TFEstimator.planKey of the job
	Epoch   int    `json:"epoch"`   // the epoch of the job
	Batches int    `json:"batches"` // batches of the share trained on
	Steps   int    `json:"steps"`   // the worker's steps
}

// resumePosition is the position this worker's share had reached in the
// shards' state: the earliest any shard holds (with several shards, a push
// some applied and others did not when the job stopped is then trained on
// again). found is false when a shard holds none for this plan: the job
// starts afresh.
func resumePosition(ctx context.Context, client *ps.Client, plan string) (at workerPosition, found bool, err error) {
	all, err := client.Positions(ctx)
	if err != nil {
		return workerPosition{}, false, fmt.Errorf("estimator: read the workers' positions from the parameter servers: %w", err)
	}
	for i, b := range all {
		var p workerPosition
		if b == nil || json.Unmarshal(b, &p) != nil || p.Plan != plan {
			return workerPosition{}, false, nil
		}
		if i == 0 || p.Epoch < at.Epoch || p.Epoch == at.Epoch && p.Batches < at.Batches {
			at = p
		}
	}
	return at, len(all) > 0, nil
}

// localPlan is how a worker of a job with LocalRows trains on its own data.
type localPlan struct {
	total   int64
	firsts  []int64 // the epoch row each rank's rows start at
	layouts [][]int // each rank's batch sizes, equal step counts
}

// localPlan checks a LocalRows job against the worker's data and plans its
// epochs; nil when the job has no LocalRows.
func (j *WorkerJob) localPlan(env distributed.TaskEnv, t *trainSet) (*localPlan, error) {
	if j.LocalRows == nil {
		return nil, nil
	}
	e := &j.Estimator
	if e.ValidationSplit > 0 {
		return nil, fmt.Errorf("estimator: a job whose trainers hold their own rows (local_rows) needs ValidationSplit 0, got %g: hold out rows before the split", e.ValidationSplit)
	}
	if len(j.LocalRows) != env.Workers {
		return nil, fmt.Errorf("estimator: the job has row counts for %d trainers (local_rows) but %d trainers", len(j.LocalRows), env.Workers)
	}
	if env.Rank < 0 || env.Rank >= len(j.LocalRows) {
		return nil, fmt.Errorf("estimator: task %s has rank %d, outside the job's %d trainers", env.Task, env.Rank, len(j.LocalRows))
	}
	if got, want := t.rows, j.LocalRows[env.Rank]; got != want {
		return nil, fmt.Errorf("estimator: worker %s read %d rows from %v, the job says its rank %d holds %d", env.Task, got, j.Data, env.Rank, want)
	}
	p := &localPlan{firsts: make([]int64, len(j.LocalRows)), layouts: make([][]int, len(j.LocalRows))}
	for i, n := range j.LocalRows {
		if n < 1 {
			return nil, fmt.Errorf("estimator: trainer rank %d holds no rows (local_rows); every trainer needs data", i)
		}
		p.firsts[i] = p.total
		p.total += n
	}
	steps := arrowio.EqualSteps(j.LocalRows, e.batchSize())
	for i, n := range j.LocalRows {
		p.layouts[i] = arrowio.BatchLayout(n, steps.Steps, e.batchSize())
	}
	return p, nil
}
