package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/ps"
)

// syncBuffer is an io.Writer safe for the command and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPSCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("t0k\n"), 0o600))
	runCtx, stop := context.WithCancel(ctx)
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- runPS(runCtx, []string{"--listen", "127.0.0.1:0", "--shard", "0/1", "--snapshot-dir", dir,
			"--optimizer", `{"optimizer":"sgd","learning_rate":0.5}`, "--token-file", tokenFile}, out, io.Discard)
	}()
	addrRE := regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`)
	var addr string
	for addr == "" {
		if m := addrRE.FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
		}
		select {
		case err := <-done:
			t.Fatalf("ps exited early: %v\n%s", err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	c, err := ps.Dial(ctx, []string{addr}, ps.WithToken("t0k"))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Register(ctx, []ps.Variable{{Name: "w", Shape: []int64{2}, Trainable: true, Init: []float32{1, 1}}}))
	_, err = c.Push(ctx, []ps.Tensor{{Name: "w", Values: []float32{2, 4}}})
	require.NoError(t, err)
	got := []ps.Tensor{{Name: "w", Values: make([]float32, 2)}}
	require.NoError(t, c.Pull(ctx, got))
	require.Equal(t, []float32{0, -1}, got[0].Values)

	stop()
	require.NoError(t, <-done)
	require.Contains(t, out.String(), "stopped at version 1")
	_, err = os.Stat(filepath.Join(dir, "ps-shard-0-of-1.snapshot"))
	require.NoError(t, err)

	for _, args := range [][]string{{"--shard", "2/2"}, {"--mode", "fast"}, {"--straggler", "wait"}, {"--optimizer", "{"}, {"--optimizer", "nosuch"}, {"extra"}} {
		err := runPS(ctx, args, io.Discard, io.Discard)
		require.ErrorIs(t, err, errUsage, "%v", args)
	}
}

// TestPSRefusesInsecureNonLoopback: a shard on a non-loopback address
// needs both TLS and a token, or --insecure.
func TestPSRefusesInsecureNonLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Setenv(ps.EnvToken, "")
	err := runPS(ctx, []string{"--listen", "0.0.0.0:0"}, io.Discard, io.Discard)
	require.ErrorIs(t, err, errUsage)
	require.ErrorContains(t, err, "without both TLS (--tls-cert, --tls-key) and a token (--token-file or GOTFLOW_PS_TOKEN)")
	require.ErrorContains(t, err, "pass --insecure to serve anyway")

	// With --insecure it serves, warning on stderr.
	runCtx, stop := context.WithCancel(ctx)
	out, errOut := &syncBuffer{}, &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- runPS(runCtx, []string{"--listen", "0.0.0.0:0", "--insecure"}, out, errOut) }()
	for !strings.Contains(out.String(), "listening on") {
		select {
		case err := <-done:
			t.Fatalf("ps exited early: %v", err)
		case <-ctx.Done():
			t.Fatal("ps never listened")
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	require.NoError(t, <-done)
	require.Contains(t, errOut.String(), "warning: --insecure: serving on")
}
