//go:build unix

package distributed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"time"

	"github.com/gotflow/gotflow/internal/control"
)

// ProcessLauncher runs every task as a local process (normally the gotflow
// binary as `gotflow ps` / `gotflow worker`) on loopback. It binds a
// listening socket per PS shard itself, on port 0, and hands it to every
// attempt of that shard (GOTFLOW_LISTEN_FD), so a restarted PS serves on
// the same address and no other process can take the port meanwhile. It
// serves the coordinator's heartbeats over gRPC on 127.0.0.1 behind a
// fresh random token, and hands the addresses and the token to Command
// through TaskEnv (pass env.Environ() to the child).
type ProcessLauncher struct {
	// Command returns the command for one task attempt. Trainers must beat
	// to the coordinator at env.CoordinatorAddr (RunTrainer does); PS
	// shards must serve on the listener they inherit (Listen), whose
	// address is env.PSAddrs[env.Task.Index].
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
	m, err := control.NewMonitor(cfg.monitorConfig())
	if err != nil {
		return JobResult{}, err
	}
	psLis := make([]*control.LoopbackListener, 0, cfg.NumPS)
	defer func() {
		for _, l := range psLis {
			l.Close()
		}
	}()
	psAddrs := make([]string, 0, cfg.NumPS)
	for range cfg.NumPS {
		l, err := control.ListenLoopback()
		if err != nil {
			return JobResult{}, err
		}
		psLis = append(psLis, l)
		psAddrs = append(psAddrs, l.Addr().String())
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return JobResult{}, fmt.Errorf("distributed: listen for heartbeats: %w", err)
	}
	token, err := control.NewToken()
	if err != nil {
		return JobResult{}, fmt.Errorf("distributed: coordinator token: %w", err)
	}
	srv := control.NewHeartbeatServer(m, control.RequireToken(token))
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
	runner := control.ProcessRunner{Command: func(t Task, attempt int) (*exec.Cmd, error) {
		cmd, err := l.Command(withAddrs(t, attempt))
		if err == nil && cmd != nil && t.Role == RolePS && t.Index < len(psLis) {
			control.PassListener(cmd, psLis[t.Index])
		}
		return cmd, err
	}}
	scfg := cfg.supervisorConfig(runner, m)
	if l.Ready != nil {
		scfg.Ready = func(ctx context.Context, t Task) error { return l.Ready(ctx, withAddrs(t, 0)) }
	}
	return launch(ctx, scfg, m)
}
