package leakcheck_test

import (
	"os"
	"os/exec"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// childEnv makes TestLeakingChild and TestFailingChild run; the parent
// tests set it in the child processes they start.
const childEnv = "GOTFLOW_LEAKCHECK_CHILD"

var block = make(chan struct{})

// leakGoroutine waits forever: nothing closes block.
func leakGoroutine() { <-block }

// TestLeakingChild passes but leaks an Arrow array and a goroutine, for
// TestCheckFails. It is skipped unless run as that test's child.
func TestLeakingChild(t *testing.T) {
	if os.Getenv(childEnv) != "leak" {
		t.Skip("run by TestCheckFails in a child process")
	}
	b := array.NewInt64Builder(leakcheck.Allocator())
	b.AppendValues([]int64{1, 2, 3}, nil)
	arr := b.NewInt64Array() // never released
	b.Release()
	require.Equal(t, 3, arr.Len())
	require.Positive(t, leakcheck.Allocator().CurrentAlloc())
	go leakGoroutine()
}

// TestFailingChild fails and leaks, for TestCheckFails: a failed run is
// reported as it is, without leak checks.
func TestFailingChild(t *testing.T) {
	if os.Getenv(childEnv) != "fail" {
		t.Skip("run by TestCheckFails in a child process")
	}
	go leakGoroutine()
	t.Error("this child test fails on purpose")
}

// runChild runs the test binary on one test with childEnv=mode and
// returns its exit code and output.
func runChild(t *testing.T, test, mode string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil {
		require.ErrorAs(t, err, &exit, "the child ran: %s", out)
		return exit.ExitCode(), string(out)
	}
	return 0, string(out)
}

func TestCheckFails(t *testing.T) {
	t.Run("leaks", func(t *testing.T) {
		code, out := runChild(t, "TestLeakingChild", "leak")
		require.Equal(t, 1, code, out)
		require.Contains(t, out, "PASS", "the test itself passed")
		require.Contains(t, out, "leakcheck: the tests passed but left leaks behind")
		require.Regexp(t, `arrow: [1-9][0-9]* bytes outstanding on leakcheck.Allocator\(\)`, out)
		require.Contains(t, out, "LEAK of", "the allocation site is named")
		require.Contains(t, out, "goroutines: found unexpected goroutines")
		require.Contains(t, out, "leakcheck_test.leakGoroutine", "the goroutine's stack is shown")
	})
	t.Run("failed tests are not checked", func(t *testing.T) {
		code, out := runChild(t, "TestFailingChild", "fail")
		require.Equal(t, 1, code, out)
		require.Contains(t, out, "this child test fails on purpose")
		require.NotContains(t, out, "leakcheck:")
	})
	t.Run("clean", func(t *testing.T) {
		code, out := runChild(t, "TestLeakingChild", "")
		require.Equal(t, 0, code, out)
		require.NotContains(t, out, "leakcheck:")
	})
}

// TestVerify: a buffer outstanding on Allocator is reported, and released
// it is not.
func TestVerify(t *testing.T) {
	require.NoError(t, leakcheck.Verify())
	b := array.NewInt64Builder(leakcheck.Allocator())
	b.Append(7)
	arr := b.NewInt64Array()
	b.Release()
	err := leakcheck.Verify()
	require.ErrorContains(t, err, "arrow: ")
	require.ErrorContains(t, err, "bytes outstanding")
	arr.Release()
	require.NoError(t, leakcheck.Verify())
}

func waitOn(c chan struct{}) { <-c }

// TestIgnoreGoroutine: a goroutine Verify reports is let through by an
// ignore naming its function, and an ignore needs a reason.
func TestIgnoreGoroutine(t *testing.T) {
	c := make(chan struct{})
	defer close(c)
	go waitOn(c)
	require.ErrorContains(t, leakcheck.Verify(), "leakcheck_test.waitOn")
	require.NoError(t, leakcheck.Verify(leakcheck.IgnoreGoroutine(
		"github.com/gotflow/gotflow/internal/leakcheck_test.waitOn", "this test closes c on return")))
	require.Panics(t, func() { leakcheck.IgnoreGoroutine("x.y", "") })
}
