//go:build unix

package control

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
)

// LoopbackListener is a TCP listener on 127.0.0.1 at a port the kernel
// chose, with the file a child process inherits it through.
type LoopbackListener struct {
	*net.TCPListener
	file *os.File
}

// ListenLoopback binds 127.0.0.1:0 for a task that PassListener will hand
// it to.
func ListenLoopback() (*LoopbackListener, error) {
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("distributed: listen on 127.0.0.1: %w", err)
	}
	f, err := l.File()
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("distributed: listener file: %w", err)
	}
	return &LoopbackListener{TCPListener: l, file: f}, nil
}

// Close closes the listener and its file.
func (l *LoopbackListener) Close() error {
	ferr := l.file.Close()
	if err := l.TCPListener.Close(); err != nil {
		return err
	}
	return ferr
}

// PassListener makes cmd's process inherit l: the socket becomes one of
// cmd.ExtraFiles and EnvListenFD tells the child which, so that Listen in
// the child serves on it. The parent keeps its copy open: a restarted task
// inherits the same socket, and connections made while no task serves wait
// in its backlog instead of being refused.
func PassListener(cmd *exec.Cmd, l *LoopbackListener) {
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	fd := 3 + len(cmd.ExtraFiles)
	cmd.ExtraFiles = append(cmd.ExtraFiles, l.file)
	cmd.Env = append(cmd.Env, EnvListenFD+"="+strconv.Itoa(fd))
}
