package distributed

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gotflow/gotflow/internal/control"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TaskEnvFromEnviron reads the task's environment: the GOTFLOW_* variables
// a ProcessLauncher sets, or else TF_CONFIG (TaskEnvFromTFConfig). lookup is
// os.LookupEnv when nil.
func TaskEnvFromEnviron(lookup func(string) (string, bool)) (TaskEnv, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	get := func(k string) string {
		if v, ok := lookup(k); ok {
			return strings.TrimSpace(v)
		}
		return ""
	}
	if get(control.EnvTask) == "" {
		v := get(TFConfigEnv)
		if v == "" {
			return TaskEnv{}, ErrNoTaskEnv
		}
		cfg, err := ParseTFConfig([]byte(v))
		if err != nil {
			return TaskEnv{}, err
		}
		env, err := TaskEnvFromTFConfig(cfg)
		env.Token = get(control.EnvToken)
		return env, err
	}
	t, err := control.ParseTask(get(control.EnvTask))
	if err != nil {
		return TaskEnv{}, fmt.Errorf("%w (from %s)", err, control.EnvTask)
	}
	e := TaskEnv{Task: t, Rank: -1, CoordinatorAddr: get(control.EnvCoordinator), Token: get(control.EnvToken)}
	if e.Attempt, err = atoiEnv(control.EnvAttempt, get(control.EnvAttempt), 0); err != nil {
		return TaskEnv{}, err
	}
	if e.Workers, err = atoiEnv(control.EnvWorkers, get(control.EnvWorkers), 1); err != nil {
		return TaskEnv{}, err
	}
	if ps := get(control.EnvPS); ps != "" {
		e.PSAddrs = strings.Split(ps, ",")
		for _, a := range e.PSAddrs {
			if err := checkAddress(a); err != nil {
				return TaskEnv{}, fmt.Errorf("distributed: %s: %w", control.EnvPS, err)
			}
		}
	}
	e.NumPS = len(e.PSAddrs)
	switch t.Role {
	case RoleChief:
		e.Rank = 0
	case RoleWorker:
		e.Rank = t.Index + 1
	}
	if e.Rank >= e.Workers {
		return TaskEnv{}, fmt.Errorf("distributed: task %s has rank %d but %s=%d", t, e.Rank, control.EnvWorkers, e.Workers)
	}
	if t.Trains() && e.CoordinatorAddr == "" {
		return TaskEnv{}, fmt.Errorf("distributed: trainer %s has no %s", t, control.EnvCoordinator)
	}
	if hb := get(control.EnvHeartbeat); hb != "" {
		parts := strings.Split(hb, ",")
		if len(parts) != 3 {
			return TaskEnv{}, fmt.Errorf("distributed: %s=%q, expected interval,timeout,start-timeout", control.EnvHeartbeat, hb)
		}
		var ds [3]time.Duration
		for i, p := range parts {
			if ds[i], err = time.ParseDuration(p); err != nil || ds[i] < 0 {
				return TaskEnv{}, fmt.Errorf("distributed: %s=%q: %q is not a duration >= 0", control.EnvHeartbeat, hb, p)
			}
		}
		e.Heartbeat = HeartbeatConfig{Interval: ds[0], Timeout: ds[1], StartTimeout: ds[2]}
	}
	return e, nil
}

func atoiEnv(name, v string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("distributed: %s=%q, expected an integer >= 0", name, v)
	}
	return n, nil
}

// TaskEnvFromTFConfig derives a task's environment from TF_CONFIG: the PS
// addresses are the "ps" job, the trainers are chief then workers, and the
// coordinator is the chief (or worker 0), which serves heartbeats on its
// own cluster address (see TaskEnv.HostsCoordinator).
func TaskEnvFromTFConfig(cfg TFConfig) (TaskEnv, error) {
	if err := cfg.Validate(); err != nil {
		return TaskEnv{}, err
	}
	coord, err := cfg.Cluster.Coordinator()
	if err != nil {
		return TaskEnv{}, err
	}
	caddr, err := cfg.Cluster.Address(coord)
	if err != nil {
		return TaskEnv{}, err
	}
	e := TaskEnv{
		Task: cfg.Task, Rank: -1, Workers: cfg.Cluster.NumTrainers(), NumPS: len(cfg.Cluster.PS),
		PSAddrs: cfg.Cluster.PS, CoordinatorAddr: caddr, TFConfig: true,
	}
	if cfg.Task.Trains() {
		if e.Rank, err = cfg.Cluster.Rank(cfg.Task); err != nil {
			return TaskEnv{}, err
		}
	}
	if cfg.Task == coord {
		if e.ListenAddr, err = cfg.ListenAddress(); err != nil {
			return TaskEnv{}, err
		}
	}
	return e, nil
}

// TrainerJob is what the coordinating trainer needs to build the
// coordinator when it hosts one (TF_CONFIG clusters): the rows and epochs
// of the job.
type TrainerJob struct {
	Rows int64
	// RankRows, if set, are the rows each trainer holds itself: rank i is
	// dealt rows [sum(RankRows[:i]), sum(RankRows[:i+1])) every epoch, Rows
	// must be their sum, and a trainer declared dead fails the job.
	RankRows []int64
	Epochs   int
	Hooks    MonitorHooks
	// Linger is how long the coordinator keeps answering heartbeats after
	// the job ended so every trainer hears "stop" (default 3 × interval).
	Linger time.Duration
	// TLS, if set, secures the heartbeats: ServerTLS for the coordinator's
	// server, ClientTLS for the trainers that dial it.
	ServerTLS, ClientTLS *tls.Config
	// Insecure lets the coordinator serve heartbeats on a non-loopback
	// address without a token; without it RunTrainer refuses, since a
	// heartbeat can declare any task failed.
	Insecure bool
	// Listener, if set, is where the coordinator serves heartbeats instead
	// of listening on TaskEnv.ListenAddr (or on the listener this process
	// inherited, see Listen); RunTrainer closes it.
	Listener net.Listener
}

// RunTrainer runs one trainer of a job started by a ProcessLauncher or by
// TF_CONFIG: when env.HostsCoordinator it builds the coordinator from
// job, serves it on env.ListenAddr and beats into it directly; otherwise
// it dials env.CoordinatorAddr. body gets an Agent that is already
// beating; an error body returns is reported to the coordinator (so the
// task's rows are reassigned at once), and RunTrainer returns once the
// agent stopped.
func RunTrainer(ctx context.Context, env TaskEnv, job TrainerJob, body func(ctx context.Context, a *Agent) error) error {
	if !env.Task.Trains() {
		return fmt.Errorf("distributed: RunTrainer for task %s, expected a chief or worker", env.Task)
	}
	acfg := control.AgentConfigFor(env)
	if !env.HostsCoordinator() {
		var opts []grpc.DialOption
		if env.Token != "" {
			opts = append(opts, control.SendToken(env.Token))
		}
		if job.ClientTLS != nil {
			opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(job.ClientTLS)))
		}
		c, err := control.DialCoordinator(env.CoordinatorAddr, opts...)
		if err != nil {
			return err
		}
		defer c.Close()
		return control.RunAgent(ctx, c, acfg, body)
	}
	trainers := make([]Task, env.Workers)
	for r := range trainers {
		trainers[r] = control.TrainerTask(r)
	}
	// Under TF_CONFIG the chief is rank 0 and workers follow; a cluster
	// without a chief has worker 0 coordinating as rank 0.
	if env.Task.Role == RoleWorker {
		for r := range trainers {
			trainers[r] = Task{Role: RoleWorker, Index: r}
		}
	}
	m, err := control.NewMonitor(control.MonitorConfig{
		Trainers: trainers, Rows: job.Rows, RankRows: job.RankRows, Epochs: job.Epochs,
		Interval: env.Heartbeat.Interval, Timeout: env.Heartbeat.Timeout, StartTimeout: env.Heartbeat.StartTimeout,
		Hooks: job.Hooks,
	})
	if err != nil {
		return err
	}
	lis := job.Listener
	if lis == nil {
		if lis, err = Listen(env.ListenAddr); err != nil {
			return fmt.Errorf("distributed: coordinator %s: %w", env.Task, err)
		}
	}
	if ta, ok := lis.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() && env.Token == "" && !job.Insecure {
		lis.Close()
		return fmt.Errorf("distributed: coordinator %s would serve heartbeats on %s without a token: set %s on every replica (from a Secret), or pass --insecure", env.Task, lis.Addr(), control.EnvToken)
	}
	var sopts []grpc.ServerOption
	if env.Token != "" {
		sopts = append(sopts, control.RequireToken(env.Token))
	}
	if job.ServerTLS != nil {
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(job.ServerTLS)))
	}
	srv := control.NewHeartbeatServer(m, sopts...)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	monErr := make(chan error, 1)
	go func() { monErr <- m.Run(mctx) }()

	berr := control.RunAgent(ctx, m, acfg, body)
	if berr != nil {
		m.Stop(fmt.Sprintf("coordinator %s failed: %v", env.Task, berr), true)
	}
	// Keep answering until the job is over and the others heard it.
	linger := job.Linger
	if linger <= 0 {
		linger = 3 * m.Interval()
	}
	merr := <-monErr
	t := time.NewTimer(linger)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	srv.Close(time.Second)
	if err := <-serveErr; err != nil && berr == nil {
		berr = fmt.Errorf("distributed: heartbeat server: %w", err)
	}
	if berr != nil {
		return berr
	}
	return merr
}
