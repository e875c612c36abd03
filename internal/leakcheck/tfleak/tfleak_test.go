package tfleak_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/internal/leakcheck"
	"github.com/gotflow/gotflow/internal/leakcheck/tfleak"
	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/tf"
)

func TestMain(m *testing.M) { leakcheck.Main(m, tfleak.Objects()) }

// childEnv makes TestLeakingChild run; TestCheckFails sets it in the
// child process it starts.
const childEnv = "GOTFLOW_TFLEAK_CHILD"

var block = make(chan struct{})

// leakGoroutine waits forever: nothing closes block.
func leakGoroutine() { <-block }

// forget makes a tensor, a graph and a session of it and drops them
// without Close.
func forget(t *testing.T) {
	exp := testmodels.MustLoadExpected(t, "mlp_frozen")
	def, err := os.ReadFile(filepath.Join(testmodels.Dir("mlp_frozen"), exp.Info.Graph))
	require.NoError(t, err)
	g, err := tf.ImportGraphDef(def)
	require.NoError(t, err)
	_, err = tf.NewSession(g)
	require.NoError(t, err)
	_, err = tf.NewTensor([]int64{2}, []float32{1, 2})
	require.NoError(t, err)
}

// TestLeakingChild passes but leaks one tensor, graph and session, an
// Arrow array and a goroutine, for TestCheckFails. It is skipped unless
// run as that test's child.
func TestLeakingChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("run by TestCheckFails in a child process")
	}
	one := tf.Objects{Tensors: 1, Graphs: 1, Sessions: 1}
	before := tf.Live()
	forget(t)
	require.Equal(t, add(before, one), tf.Live())

	// The collector finds the forgotten objects and only counts them:
	// they stay live, their C memory is not freed behind the program.
	for range 10 {
		runtime.GC()
		if tf.Leaked() == one {
			break
		}
	}
	require.Equal(t, one, tf.Leaked(), "each forgotten object is counted once collected")
	require.Equal(t, add(before, one), tf.Live(), "a collected object is not freed")

	b := array.NewInt64Builder(leakcheck.Allocator())
	b.AppendValues([]int64{1, 2, 3}, nil)
	arr := b.NewInt64Array() // never released
	b.Release()
	require.Equal(t, 3, arr.Len())
	go leakGoroutine()
}

func add(a, b tf.Objects) tf.Objects {
	return tf.Objects{Tensors: a.Tensors + b.Tensors, Graphs: a.Graphs + b.Graphs, Sessions: a.Sessions + b.Sessions}
}

// TestCheckFails runs TestLeakingChild in a child process: its tests pass,
// and the leak check that follows fails and names every leak.
func TestCheckFails(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestLeakingChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "the child fails: %s", out)
	require.Equal(t, 1, exit.ExitCode(), "%s", out)
	require.Contains(t, string(out), "PASS", "the test itself passed")
	require.Contains(t, string(out), "tf: 1 tensors, 1 graphs, 1 sessions not closed (1 tensors, 1 graphs, 1 sessions of them unreachable")
	require.Regexp(t, `arrow: [1-9][0-9]* bytes outstanding on leakcheck.Allocator\(\)`, string(out))
	require.Contains(t, string(out), "goroutines: found unexpected goroutines")
	require.Contains(t, string(out), "tfleak_test.leakGoroutine")
}

// TestClosedObjectsPass: objects closed by the tests leave nothing for the
// check.
func TestClosedObjectsPass(t *testing.T) {
	x, err := tf.NewTensor([]int64{3}, []int64{1, 2, 3})
	require.NoError(t, err)
	require.Error(t, leakcheck.Verify(tfleak.Objects()), "an open tensor is reported")
	require.NoError(t, x.Close())
	require.NoError(t, leakcheck.Verify(tfleak.Objects()))
}
