package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestServeAndDrain starts `gotflow serve` on half_plus_two with free
// ports, predicts over REST, then sends SIGTERM: the command drains and
// exits 0, and the port is closed. A non-loopback bind without TLS and a
// token is refused.
func TestServeAndDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/wamuir/graft").Output()
	require.NoError(t, err)
	base := t.TempDir()
	require.NoError(t, os.CopyFS(filepath.Join(base, "123"),
		os.DirFS(filepath.Join(strings.TrimSpace(string(out)), "tensorflow/testdata/saved_model/half_plus_two/00000123"))))

	cmd := exec.CommandContext(ctx, os.Args[0], "serve", "--model_base_path", base, "--model_name", "half_plus_two",
		"--port", "0", "--rest_api_port", "0", "--enable_batching")
	cmd.Env = append(os.Environ(), "GOTFLOW_TEST_MAIN=1", "TF_CPP_MIN_LOG_LEVEL=3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	line := make(chan string, 1)
	go func() {
		b := make([]byte, 4096)
		n, _ := io.ReadAtLeast(stdout, b, 1)
		line <- string(b[:n])
		io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	var first string
	select {
	case first = <-line:
	case <-ctx.Done():
		t.Fatalf("no address line from gotflow serve\n%s", stderr.String())
	}
	m := regexp.MustCompile(`REST on (\S+)`).FindStringSubmatch(first)
	require.NotNil(t, m, "%q\n%s", first, stderr.String())
	url := "http://" + m[1] + "/v1/models/half_plus_two:predict"
	resp, err := http.Post(url, "application/json", strings.NewReader(`{"instances": [1.0, 2.0, 5.0]}`))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode, "%s", body)
	require.Equal(t, `{"predictions":[2.5,3.0,4.5]}`, strings.Join(strings.Fields(string(body)), ""))

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "%s", stderr.String())
	case <-ctx.Done():
		t.Fatal("gotflow serve did not exit after SIGTERM")
	}
	require.Contains(t, stderr.String(), "draining requests in flight")
	_, err = http.Post(url, "application/json", strings.NewReader(`{"instances": [1.0]}`))
	require.Error(t, err, "the port is closed")

	var errOut strings.Builder
	refused := exec.CommandContext(ctx, os.Args[0], "serve", "--model_base_path", base, "--host", "0.0.0.0", "--port", "0", "--rest_api_port", "0")
	refused.Env, refused.Stderr = cmd.Env, &errOut
	require.Error(t, refused.Run())
	require.Contains(t, errOut.String(), "without both TLS")
}
