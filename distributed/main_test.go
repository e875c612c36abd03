//go:build unix

package distributed

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/gotflow/gotflow/internal/control/controltest"
)

// The test binary doubles as the fake task processes: a ProcessLauncher
// started by a test re-executes it as one of these roles
// (controltest.Command), and TestMain runs the role instead of the tests.
func TestMain(m *testing.M) {
	controltest.Main(m, map[string]controltest.Role{
		"trainer":   fakeTrainer,
		"realps":    realPS,
		"cli":       fakeCLI,
		"pstrainer": psTrainer,
		"listener":  fakeListener,
	})
}

// fakeListener is a PS stand-in that serves on the listener the launcher
// handed it, at the address it told the others, until SIGTERM.
func fakeListener(p *controltest.Process) int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	env, err := TaskEnvFromEnviron(nil)
	if err != nil {
		return 2
	}
	lis, err := Listen(env.PSAddrs[env.Task.Index])
	if err != nil || lis.Addr().String() != env.PSAddrs[env.Task.Index] {
		return 2
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	select {
	case <-term:
		return 0
	case <-p.Expired:
		return 4
	}
}

// fakeTrainer is a trainer process as `gotflow worker` would run one: its
// job comes from the environment a ProcessLauncher set. It logs every
// chunk of rows it trains on to its row log.
func fakeTrainer(p *controltest.Process) int {
	env, err := TaskEnvFromEnviron(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log, err := controltest.OpenRowLog(p.Dir, env.Task.String())
	if err != nil {
		return 2
	}
	defer log.Close()
	ctx, cancel := context.WithTimeout(context.Background(), controltest.Lifetime)
	defer cancel()
	err = RunTrainer(ctx, env, TrainerJob{}, func(ctx context.Context, a *Agent) error {
		return controltest.Consume(ctx, a, func(c controltest.Chunk) (float64, error) {
			time.Sleep(2 * time.Millisecond)
			controltest.LogChunk(log, c)
			return 0, nil
		})
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
