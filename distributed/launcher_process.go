//go:build unix

package distributed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"time"
)

// ProcessLauncher runs every task as a local process (normally the gotflow
// binary as `gotflow ps` / `gotflow worker`) on loopback. It picks a port
// per PS shard up front (a restarted PS gets the same one), serves the
// Monitor over gRPC on 127.0.0.1 behind a fresh random token, and hands
// all three to Command through TaskEnv (pass env.Environ() to the child).
type ProcessLauncher struct {
	// Command returns the command for one task attempt. Trainers must run
	// an Agent against env.CoordinatorAddr (see DialCoordinator, RunAgent);
	// PS shards must listen on env.PSAddrs[env.Task.Index].
	Command func(env TaskEnv) (*exec.Cmd, error)
	// Ready, if set, returns once PS shard env.Task serves.
	Ready func(ctx context.Context, env TaskEnv) error
}

// Launch implements Launcher.
func (l ProcessLauncher) Launch(ctx context.Context, cfg JobConfig) (JobResult, error) {
	if err := cfg.Validate(); err != nil {
		return JobResult{}, err
	}
	if l.Command == nil {
		return JobResult{}, errors.New("distributed: ProcessLauncher has no Command")
	}
	m, err := NewMonitor(cfg.monitorConfig())
	if err != nil {
		return JobResult{}, err
	}
	psAddrs, err := FreeLoopbackAddrs(cfg.NumPS)
	if err != nil {
		return JobResult{}, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return JobResult{}, fmt.Errorf("distributed: listen for heartbeats: %w", err)
	}
	token, err := NewToken()
	if err != nil {
		return JobResult{}, fmt.Errorf("distributed: coordinator token: %w", err)
	}
	srv := NewHeartbeatServer(m, RequireToken(token))
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	defer func() {
		srv.Close(time.Second)
		<-serveErr
	}()
	coordAddr := lis.Addr().String()
	withAddrs := func(t Task, attempt int) TaskEnv {
		env := cfg.env(t, attempt)
		env.PSAddrs, env.CoordinatorAddr, env.Token = psAddrs, coordAddr, token
		return env
	}
	runner := ProcessRunner{Command: func(t Task, attempt int) (*exec.Cmd, error) {
		return l.Command(withAddrs(t, attempt))
	}}
	scfg := cfg.supervisorConfig(runner, m)
	if l.Ready != nil {
		scfg.Ready = func(ctx context.Context, t Task) error { return l.Ready(ctx, withAddrs(t, 0)) }
	}
	return launch(ctx, scfg, m)
}
