//go:build unix

package distributed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The test binary doubles as the fake task processes: a ProcessLauncher
// started by a test re-executes it with fakeRoleEnv set, and TestMain runs
// the role instead of the tests.
const (
	fakeRoleEnv = "GOTFLOW_FAKE_ROLE"
	fakeDirEnv  = "GOTFLOW_FAKE_DIR"
	fakeTaskEnv = "GOTFLOW_FAKE_TASK"
	fakeTryEnv  = "GOTFLOW_FAKE_ATTEMPT"
	// Every fake process exits on its own after this, so a broken test
	// cannot leave processes behind for long.
	fakeLifetime = 90 * time.Second
)

func TestMain(m *testing.M) {
	if role := os.Getenv(fakeRoleEnv); role != "" {
		os.Exit(fakeRole(role))
	}
	os.Exit(m.Run())
}

func fakeRole(role string) int {
	dir := os.Getenv(fakeDirEnv)
	task := os.Getenv(fakeTaskEnv)
	attempt := os.Getenv(fakeTryEnv)
	write := func(name, content string) {
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err == nil {
			os.Rename(tmp, filepath.Join(dir, name))
		}
	}
	write(task+"."+attempt+".pid", strconv.Itoa(os.Getpid()))
	life := time.NewTimer(fakeLifetime)
	term := make(chan os.Signal, 1)
	switch role {
	case "trainer":
		return fakeTrainer(dir)
	case "realps":
		return realPS(dir)
	case "cli":
		return fakeCLI(dir)
	case "pstrainer":
		return psTrainer(dir)
	case "listener":
		// A PS stand-in that serves on the listener the launcher handed it,
		// at the address it told the others.
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
		case <-life.C:
			return 4
		}
	}
	fmt.Fprintf(os.Stderr, "unknown fake role %q\n", role)
	return 2
}

// fakeTrainer is a trainer process as `gotflow worker` would run one: its
// job comes from the environment a ProcessLauncher set.
func fakeTrainer(dir string) int {
	env, err := TaskEnvFromEnviron(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log, err := os.OpenFile(filepath.Join(dir, env.Task.String()+".rows"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 2
	}
	defer log.Close()
	ctx, cancel := context.WithTimeout(context.Background(), fakeLifetime)
	defer cancel()
	err = RunTrainer(ctx, env, TrainerJob{}, func(ctx context.Context, a *Agent) error {
		return logRows(ctx, a, log)
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// logRows consumes work from a, logging "epoch start end" per chunk of 4.
func logRows(ctx context.Context, a *Agent, log *os.File) error {
	var step int64
	for {
		w, err := a.Next(ctx)
		if errors.Is(err, ErrStopped) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, r := range w.Ranges {
			for i := r.Start; i < r.End; i += 4 {
				end := min(i+4, r.End)
				time.Sleep(2 * time.Millisecond)
				fmt.Fprintf(log, "%d %d %d\n", w.Epoch, i, end)
				step++
				a.Advance(end-i, step, 0)
			}
		}
	}
}

// trainLoop is the loop a worker runs against an Agent: it records each row
// it consumes per epoch, reporting progress after every chunk of rows.
// stopAfter >= 0 makes it return (silently, like a killed process) after
// that many rows.
func trainLoop(ctx context.Context, a *Agent, rec *rowLog, rank int, stopAfter int64) error {
	var step, total int64
	for {
		w, err := a.Next(ctx)
		if errors.Is(err, ErrStopped) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, r := range w.Ranges {
			for i := r.Start; i < r.End; i += 4 {
				end := min(i+4, r.End)
				if stopAfter >= 0 && total+(end-i) > stopAfter {
					return errKilled
				}
				rec.add(w.Epoch, rank, i, end)
				step++
				total += end - i
				a.Advance(end-i, step, 1/float64(step))
			}
		}
	}
}

var errKilled = errors.New("killed")

type rowLog struct {
	mu   sync.Mutex
	seen map[int]map[int64][]int // epoch -> row -> ranks
}

func (l *rowLog) add(epoch, rank int, start, end int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[int]map[int64][]int{}
	}
	if l.seen[epoch] == nil {
		l.seen[epoch] = map[int64][]int{}
	}
	for i := start; i < end; i++ {
		l.seen[epoch][i] = append(l.seen[epoch][i], rank)
	}
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// pidLog collects the pids of started processes.
type pidLog struct {
	mu   sync.Mutex
	pids map[string]int // "task#attempt" -> pid
}

func (p *pidLog) hook(t Task, attempt int, h Handle) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pids == nil {
		p.pids = map[string]int{}
	}
	if ph, ok := h.(interface{ PID() int }); ok {
		p.pids[fmt.Sprintf("%s#%d", t, attempt)] = ph.PID()
	}
}

func (p *pidLog) get(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pids[key]
}

func (p *pidLog) requireAllGone(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	require.NotEmpty(t, p.pids)
	for k, pid := range p.pids {
		require.False(t, alive(pid), "%s (pid %d) still running", k, pid)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
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

func readInt(path string) int {
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

func countRows(path string) int64 {
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

// coveredRows reads every worker's row log and returns epoch -> row -> count.
func coveredRows(t *testing.T, dir string) map[int64]map[int64]int {
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
