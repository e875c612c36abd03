package control

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
)

// GotflowCommands builds the commands of a local job run by the gotflow
// binary, for distributed.ProcessLauncher.Command: PS shards run
//
//	gotflow ps --listen=<env.PSAddrs[i]> --shard=i/N <PSArgs…>
//
// and trainers run
//
//	gotflow worker <WorkerArgs…>
//
// with the job's TaskEnv in their environment (TaskEnv.Environ), where
// `gotflow worker` reads it with distributed.TaskEnvFromEnviron.
type GotflowCommands struct {
	// Binary is the gotflow executable (default: this process's own).
	Binary string
	// PSArgs follow "ps": mode, optimizer, snapshot directory, ….
	PSArgs []string
	// WorkerArgs follow "worker": bundle, data, mappings, ….
	WorkerArgs []string
	// Env is added to this process's environment for every task.
	Env []string
	// Output receives every task's stdout and stderr, each line prefixed
	// with "[task] " (e.g. "[worker:0] "). Nil discards them.
	Output io.Writer

	once sync.Once
	out  *lockedWriter
}

// Command implements distributed.ProcessLauncher.Command.
func (g *GotflowCommands) Command(env TaskEnv) (*exec.Cmd, error) {
	bin := g.Binary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("distributed: find the gotflow binary: %w", err)
		}
	}
	var args []string
	switch {
	case env.Task.Role == RolePS:
		if env.Task.Index >= len(env.PSAddrs) {
			return nil, fmt.Errorf("distributed: no address for %s (have %d PS addresses)", env.Task, len(env.PSAddrs))
		}
		args = append([]string{"ps", "--listen=" + env.PSAddrs[env.Task.Index], "--shard=" + strconv.Itoa(env.Task.Index) + "/" + strconv.Itoa(len(env.PSAddrs))}, g.PSArgs...)
	case env.Task.Trains():
		args = append([]string{"worker"}, g.WorkerArgs...)
	default:
		return nil, errors.New("distributed: GotflowCommands runs ps and trainer tasks only, not " + env.Task.String())
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), g.Env...), env.Environ()...)
	g.once.Do(func() {
		if g.Output != nil {
			g.out = &lockedWriter{w: g.Output}
		}
	})
	if g.out != nil {
		pw := &prefixWriter{prefix: []byte("[" + env.Task.String() + "] "), out: g.out}
		cmd.Stdout, cmd.Stderr = pw, pw
	}
	return cmd, nil
}

// lockedWriter serializes writes from several tasks.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter writes whole lines, each with prefix. A partial line waits
// for its newline (or is cut at maxLine bytes); a last line without a
// newline is dropped. exec.Cmd copies a child's output from one goroutine,
// so Write is not called concurrently for one writer.
const maxLine = 16 << 10

type prefixWriter struct {
	prefix []byte
	out    *lockedWriter
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		line := append(append([]byte(nil), p.prefix...), p.buf[:i+1]...)
		if _, err := p.out.Write(line); err != nil {
			return len(b), err
		}
		p.buf = p.buf[i+1:]
	}
	if len(p.buf) >= maxLine {
		line := append(append(append([]byte(nil), p.prefix...), p.buf...), '\n')
		p.buf = p.buf[:0]
		if _, err := p.out.Write(line); err != nil {
			return len(b), err
		}
	}
	return len(b), nil
}
