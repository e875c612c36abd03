//go:build unix

package control_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	. "github.com/gotflow/gotflow/internal/control"
	"github.com/gotflow/gotflow/internal/control/controltest"
)

// TestChildrenDieWithTheirParent SIGKILLs a process that started tasks
// through a ProcessRunner: the task that obeys SIGTERM ends through the
// kernel's parent-death signal, the one that ignores it through
// WithParent. Nothing is left running.
func TestChildrenDieWithTheirParent(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	parent := controltest.Command("launcher", dir, "launcher", 0)
	require.NoError(t, parent.Start())
	var kids []int
	for _, name := range []string{"ps:0.child", "worker:0.child"} {
		controltest.WaitFor(t, ctx, name, func() bool { return controltest.ReadInt(filepath.Join(dir, name)) > 0 })
		kids = append(kids, controltest.ReadInt(filepath.Join(dir, name)))
	}
	// The watcher ignores SIGTERM only from here on.
	controltest.WaitFor(t, ctx, "the watcher's watch", func() bool { return controltest.ReadInt(filepath.Join(dir, "worker:0.watching")) > 0 })
	require.NoError(t, parent.Process.Signal(syscall.SIGKILL))
	require.Error(t, parent.Wait())
	for _, pid := range kids {
		controltest.WaitFor(t, ctx, "child "+strconv.Itoa(pid)+" to exit", func() bool { return !controltest.Alive(pid) })
	}
	b, err := os.ReadFile(filepath.Join(dir, "worker:0.noticed"))
	require.NoError(t, err)
	require.Contains(t, string(b), "the launching process exited (pid "+strconv.Itoa(parent.Process.Pid))
}

// TestSupervisorChildExitsDuringStart: a PS that exits before it is ready
// fails the job at once with its own reason, not after the ready timeout.
func TestSupervisorChildExitsDuringStart(t *testing.T) {
	dir := t.TempDir()
	log, err := os.Create(filepath.Join(dir, "ps-0.log"))
	require.NoError(t, err)
	defer log.Close()
	runner := fakeRunner(dir, "", map[Task]string{{RolePS, 0}: "noisy-crash", {RoleChief, 0}: "sleeper"})
	inner := runner.Command
	runner.Command = func(t Task, attempt int) (*exec.Cmd, error) {
		cmd, err := inner(t, attempt)
		if err == nil {
			cmd.Stderr = log
		}
		return cmd, err
	}
	sup, err := NewSupervisor(SupervisorConfig{Runner: runner, Tasks: []Task{{RolePS, 0}, {RoleChief, 0}},
		ReadyTimeout: time.Minute, StopGrace: time.Second, KillWait: time.Second,
		Ready: func(ctx context.Context, _ Task) error { <-ctx.Done(); return ctx.Err() }})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err = sup.Run(ctx)
	require.ErrorContains(t, err, "task ps:0 exited during start-up: distributed: task ps:0 (pid ")
	require.ErrorContains(t, err, "exit status 3; its last log lines ("+log.Name()+"):\n\tstarting\n\tboom: snapshot taken with another optimizer")
	require.Less(t, time.Since(start), 20*time.Second, "not the ready timeout")
}
