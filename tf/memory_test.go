package tf_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/internal/leakcheck"
	"github.com/gotflow/gotflow/internal/leakcheck/tfleak"
	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/tf"
)

// rssBytes reads this process's resident set size.
func rssBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skipf("no /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(b))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	require.NoError(t, err)
	return pages * int64(os.Getpagesize())
}

// TestRunKeepsRSSFlat runs the MLP 10,000 times, creating and closing the
// feed and the fetched tensors each time, and checks that resident memory
// after the run stays within 10 % of what it was after warm-up.
func TestRunKeepsRSSFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("long memory test")
	}
	g, exp := loadGraph(t, "mlp_frozen")
	s := newSession(t, g)
	x, err := g.Output(exp.Info.Inputs[0].Name)
	require.NoError(t, err)
	probs, err := g.Output("probs:0")
	require.NoError(t, err)
	in := make([]float32, 64*8)
	for i := range in {
		in[i] = float32(i%17) / 17
	}
	ctx := context.Background()
	step := func() {
		ft, err := tf.NewTensor([]int64{64, 8}, in)
		require.NoError(t, err)
		outs, err := s.Run(ctx, []tf.Feed{{Output: x, Tensor: ft}}, []tf.Output{probs}, nil)
		require.NoError(t, err)
		require.NoError(t, ft.Close())
		for _, o := range outs {
			require.NoError(t, o.Close())
		}
	}
	live := tf.LiveTensors()
	for i := 0; i < 1000; i++ {
		step()
	}
	runtime.GC()
	warm := rssBytes(t)
	for i := 0; i < 10000; i++ {
		step()
	}
	runtime.GC()
	end := rssBytes(t)
	t.Logf("RSS after warm-up %d KiB, after 10,000 runs %d KiB (%+.1f%%)", warm>>10, end>>10, 100*float64(end-warm)/float64(warm))
	require.LessOrEqual(t, float64(end), 1.10*float64(warm), "RSS grew by more than 10%%")
	require.Equal(t, live, tf.LiveTensors(), "every tensor must be closed")
	require.Zero(t, tf.LeakedTensors(), "no tensor may be left to the garbage collector")
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serverChildEnv makes the test binary run a TensorFlow server instead of
// the tests (see TestMain).
const serverChildEnv = "GOTFLOW_TEST_TF_SERVER_ADDR"

func TestMain(m *testing.M) {
	if addr := os.Getenv(serverChildEnv); addr != "" {
		srv, err := tf.NewLocalServer("local", addr)
		if err == nil {
			err = srv.Start()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "server:", err)
			os.Exit(1)
		}
		target, _ := srv.Target()
		fmt.Println(target)
		select {} // serve until killed
	}
	leakcheck.Main(m, tfleak.Objects())
}

// TestServerRunsGraphOverGRPC starts a TensorFlow server on loopback in a
// child process, runs the MLP through its grpc:// target, and stops it.
func TestServerRunsGraphOverGRPC(t *testing.T) {
	addr := "localhost:" + strconv.Itoa(freePort(t))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serverChildEnv+"="+addr)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	target := strings.TrimSpace(line)
	require.Equal(t, "grpc://"+addr, target)

	g, exp := loadGraph(t, "mlp_frozen")
	s, err := tf.NewSession(g, tf.WithTarget(target))
	require.NoError(t, err)
	for i := range exp.Cases {
		runCase(t, s, g, &exp.Cases[i])
	}
	require.NoError(t, s.Close())
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	err = cmd.Wait()
	require.Error(t, err, "the server process ends by signal")
	require.False(t, cmd.ProcessState.Success())
}

func TestServerCloseInProcess(t *testing.T) {
	idle, err := tf.NewLocalServer("local", "localhost:"+strconv.Itoa(freePort(t)))
	require.NoError(t, err)
	require.NoError(t, idle.Close(), "a server that never started is freed")
	require.NoError(t, idle.Close())
	_, err = idle.Target()
	require.ErrorIs(t, err, tf.ErrClosed)

	_, err = tf.NewServer(nil)
	require.ErrorContains(t, err, "ServerDef with a cluster is required")

	started, err := tf.NewLocalServer("local", "localhost:"+strconv.Itoa(freePort(t)))
	require.NoError(t, err)
	require.NoError(t, started.Start())
	require.ErrorIs(t, started.Close(), tf.ErrServerRunning, "a started server cannot be stopped in-process")
	target, err := started.Target()
	require.NoError(t, err, "it keeps serving")
	require.True(t, strings.HasPrefix(target, "grpc://"))
}

// TestObjectsCounted: graphs and sessions are counted like tensors: Close
// frees them (Live back to where it was, twice is harmless). One the
// program forgets is only counted (internal/leakcheck/tfleak's
// TestCheckFails shows it in a child process, since this package's own
// leak check would fail on it).
func TestObjectsCounted(t *testing.T) {
	before := tf.Live()
	exp := testmodels.MustLoadExpected(t, "mlp_frozen")
	def, err := os.ReadFile(filepath.Join(testmodels.Dir("mlp_frozen"), exp.Info.Graph))
	require.NoError(t, err)
	g, err := tf.ImportGraphDef(def)
	require.NoError(t, err)
	s, err := tf.NewSession(g)
	require.NoError(t, err)
	now := tf.Live()
	require.Equal(t, before.Graphs+1, now.Graphs)
	require.Equal(t, before.Sessions+1, now.Sessions)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
	require.NoError(t, g.Close())
	require.NoError(t, g.Close())
	require.Equal(t, before, tf.Live())
	require.Equal(t, tf.Objects{}, tf.Leaked())
}
