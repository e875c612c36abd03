//go:build unix

package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ProcessRunner runs each task as a local process in its own process group,
// so that stopping it also stops anything it spawned.
type ProcessRunner struct {
	// Command returns the (unstarted) command for attempt of t. A restarted
	// PS gets the same snapshot directory so it resumes from its snapshot.
	// The runner sets SysProcAttr.Setpgid and, if zero, WaitDelay.
	Command func(t Task, attempt int) (*exec.Cmd, error)
	// WaitDelay bounds how long an exited process's output pipes are
	// drained when something it spawned still holds them (default 2s).
	WaitDelay time.Duration
}

// Start implements Runner.
func (r ProcessRunner) Start(ctx context.Context, t Task, attempt int) (Handle, error) {
	if r.Command == nil {
		return nil, errors.New("distributed: ProcessRunner has no Command")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cmd, err := r.Command(t, attempt)
	if err != nil {
		return nil, fmt.Errorf("distributed: command for task %s: %w", t, err)
	}
	if cmd == nil || cmd.Path == "" {
		return nil, fmt.Errorf("distributed: command for task %s is empty", t)
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// No task outlives this process: the kernel signals it when this
	// process dies, and the task watches its parent id as well (WithParent).
	dieWithParent(cmd.SysProcAttr)
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, EnvParentPID+"="+strconv.Itoa(os.Getpid()))
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = r.WaitDelay
		if cmd.WaitDelay == 0 {
			cmd.WaitDelay = 2 * time.Second
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("distributed: start task %s: %w", t, err)
	}
	h := &processHandle{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{}), task: t}
	go h.wait()
	return h, nil
}

type processHandle struct {
	cmd    *exec.Cmd
	pid    int
	task   Task
	done   chan struct{}
	mu     sync.Mutex
	reaped bool // the pid may belong to another process: signal nothing
	err    error
}

func (h *processHandle) wait() {
	// When the leader has exited, take down anything left in its group and
	// stop signalling it. Until the leader is reaped its pid cannot be
	// reused, so where waitExited can wait without reaping, that comes first.
	endGroup := func() {
		h.mu.Lock()
		_ = syscall.Kill(-h.pid, syscall.SIGKILL)
		h.reaped = true
		h.mu.Unlock()
	}
	var err error
	if waitExited(h.pid) {
		endGroup() // before reaping, while the pid cannot be reused
		err = h.cmd.Wait()
	} else {
		err = h.cmd.Wait()
		endGroup()
	}
	if err != nil {
		err = fmt.Errorf("distributed: task %s (pid %d): %w%s", h.task, h.pid, err, logTail(h.cmd.Stderr))
	}
	h.mu.Lock()
	h.err = err
	h.mu.Unlock()
	close(h.done)
}

// PID returns the process id (also the process group id).
func (h *processHandle) PID() int { return h.pid }

func (h *processHandle) Done() <-chan struct{} { return h.done }

func (h *processHandle) Err() error {
	select {
	case <-h.done:
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.err
	default:
		return errors.New("distributed: task still running")
	}
}

func (h *processHandle) signal(sig syscall.Signal) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.reaped {
		return // the pid may belong to someone else now
	}
	_ = syscall.Kill(-h.pid, sig)
}

func (h *processHandle) Terminate()     { h.signal(syscall.SIGTERM) }
func (h *processHandle) Kill()          { h.signal(syscall.SIGKILL) }
func (h *processHandle) String() string { return fmt.Sprintf("pid %d", h.pid) }

// logTailLines is how many of a failed task's last log lines its exit
// error quotes.
const logTailLines = 8

// logTail returns the last lines a task wrote to w, when w is a regular
// file (a task log), formatted for an error message; "" otherwise.
func logTail(w io.Writer) string {
	f, ok := w.(*os.File)
	if !ok {
		return ""
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	r, err := os.Open(f.Name())
	if err != nil {
		return ""
	}
	defer r.Close()
	const window = 8 << 10
	off := max(fi.Size()-window, 0)
	buf := make([]byte, fi.Size()-off)
	n, _ := r.ReadAt(buf, off)
	lines := strings.Split(strings.TrimRight(string(buf[:n]), "\n"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // the first one is cut
	}
	lines = lines[max(len(lines)-logTailLines, 0):]
	if len(lines) == 0 || (len(lines) == 1 && lines[0] == "") {
		return ""
	}
	return "; its last log lines (" + f.Name() + "):\n\t" + strings.Join(lines, "\n\t")
}
