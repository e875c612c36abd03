package controltest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/internal/control"
)

// The environment variables that tell a re-executed test binary which
// fake process to be.
const (
	EnvRole    = "GOTFLOW_FAKE_ROLE"    // the Role to run; unset: run the tests
	EnvDir     = "GOTFLOW_FAKE_DIR"     // Process.Dir
	EnvTask    = "GOTFLOW_FAKE_TASK"    // Process.Task
	EnvAttempt = "GOTFLOW_FAKE_ATTEMPT" // Process.Attempt
)

// Lifetime is how long a fake process lives at most: Process.Expired
// fires after it, so that a broken test cannot leave processes behind for
// long.
const Lifetime = 90 * time.Second

// Process is what a fake process is told about itself.
type Process struct {
	Dir     string // where it writes the files the test reads
	Task    string // the task it plays, as control.Task.String formats it
	Attempt int
	// Expired fires Lifetime after the process started.
	Expired <-chan time.Time
}

// Write writes content to the file name in p.Dir, atomically (through a
// rename), so that a reader never sees it half written.
func (p *Process) Write(name, content string) {
	tmp := filepath.Join(p.Dir, name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err == nil {
		os.Rename(tmp, filepath.Join(p.Dir, name))
	}
}

// Role is the body of a fake process; it returns the exit status.
type Role func(p *Process) int

// Main is the TestMain of a package whose test binary doubles as the fake
// processes its tests start: with EnvRole set it writes the process id to
// "<task>.<attempt>.pid" in the process's directory and exits with the
// status of roles[role]; otherwise it runs the tests.
func Main(m *testing.M, roles map[string]Role) {
	if role := os.Getenv(EnvRole); role != "" {
		os.Exit(runRole(role, roles))
	}
	os.Exit(m.Run())
}

func runRole(name string, roles map[string]Role) int {
	p := &Process{Dir: os.Getenv(EnvDir), Task: os.Getenv(EnvTask), Expired: time.NewTimer(Lifetime).C}
	p.Attempt, _ = strconv.Atoi(os.Getenv(EnvAttempt))
	p.Write(fmt.Sprintf("%s.%d.pid", p.Task, p.Attempt), strconv.Itoa(os.Getpid()))
	role, ok := roles[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown fake role %q\n", name)
		return 2
	}
	return role(p)
}

// Command returns a command that re-executes the test binary as role,
// playing attempt of task with dir as its directory, its stderr the test's;
// env is added to the environment after the fake's own variables.
func Command(role, dir, task string, attempt int, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		EnvRole+"="+role, EnvDir+"="+dir, EnvTask+"="+task, EnvAttempt+"="+strconv.Itoa(attempt))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	return cmd
}

// OpenRowLog opens (creating it) task's row log "<task>.rows" in dir for
// appending.
func OpenRowLog(dir, task string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, task+".rows"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
}

// LogChunk appends c to a row log as the line "epoch start end".
func LogChunk(w io.Writer, c Chunk) {
	fmt.Fprintf(w, "%d %d %d\n", c.Epoch, c.Start, c.End)
}

// CountRows returns how many rows the row log at path lists (0 if it does
// not exist yet).
func CountRows(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	var n int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e, s, end int64
		if _, err := fmt.Sscan(sc.Text(), &e, &s, &end); err == nil {
			n += end - s
		}
	}
	return n
}

// CoveredRows reads every row log in dir and returns epoch -> row -> how
// many times the row was logged.
func CoveredRows(t *testing.T, dir string) map[int64]map[int64]int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.rows"))
	require.NoError(t, err)
	out := map[int64]map[int64]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if line == "" {
				continue
			}
			var e, s, end int64
			_, err := fmt.Sscan(line, &e, &s, &end)
			require.NoError(t, err, "%s: %q", f, line)
			if out[e] == nil {
				out[e] = map[int64]int{}
			}
			for i := s; i < end; i++ {
				out[e][i]++
			}
		}
	}
	return out
}

// ReadInt returns the number in the file at path, or -1 if it does not
// hold one (yet).
func ReadInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// Alive reports whether pid is a running (not zombie) process.
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// PIDLog collects the process ids of the tasks a Supervisor started.
type PIDLog struct {
	mu   sync.Mutex
	pids map[string]int // "task#attempt" -> pid
}

// Hook records h's process id; it is a control.SupervisorHooks.OnStart.
// Handles without a process id (goroutines) are not recorded.
func (p *PIDLog) Hook(t control.Task, attempt int, h control.Handle) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pids == nil {
		p.pids = map[string]int{}
	}
	if ph, ok := h.(interface{ PID() int }); ok {
		p.pids[fmt.Sprintf("%s#%d", t, attempt)] = ph.PID()
	}
}

// PID returns the process id of "task#attempt" (e.g. "ps:0#1"), 0 if it
// was not started.
func (p *PIDLog) PID(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pids[key]
}

// RequireAllGone fails the test unless processes were started and none of
// them is still running.
func (p *PIDLog) RequireAllGone(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	require.NotEmpty(t, p.pids)
	for k, pid := range p.pids {
		require.False(t, Alive(pid), "%s (pid %d) still running", k, pid)
	}
}

// WaitFor polls cond until it holds or ctx ends; then it reports with
// t.Errorf that it timed out waiting for what.
func WaitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Errorf("timed out waiting for %s", what)
			return
		case <-tick.C:
		}
	}
}
