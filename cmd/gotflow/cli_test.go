package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder"
)

// TestHelpGolden: every verb's -h is one shape (usage lines, summary,
// description, flags), goes to stdout with nothing on stderr, and exits 0;
// so does `gotflow help`.
func TestHelpGolden(t *testing.T) {
	var out, errb bytes.Buffer
	require.Equal(t, 0, run([]string{"help"}, &out, &errb))
	require.Empty(t, errb.String())
	golden(t, "help/gotflow.golden", out.String())
	for _, c := range commandTable {
		for _, h := range []string{"-h", "--help"} {
			t.Run(c.name+h, func(t *testing.T) {
				var out, errb bytes.Buffer
				require.Equal(t, 0, run([]string{c.name, h}, &out, &errb), errb.String())
				require.Empty(t, errb.String())
				require.True(t, strings.HasPrefix(out.String(), "usage: gotflow "+c.name), out.String())
				golden(t, "help/"+c.name+".golden", out.String())
			})
		}
	}
	// A usage error still prints the help, on stderr, with exit status 2.
	out.Reset()
	errb.Reset()
	require.Equal(t, 2, run([]string{"predict", "--no-such-flag"}, &out, &errb))
	require.Empty(t, out.String())
	require.Contains(t, errb.String(), "flag provided but not defined: -no-such-flag")
	require.Contains(t, errb.String(), "usage: gotflow predict")
}

// TestMapMeansTheSameInEveryVerb: `--map a=x,b=y` and a full entry parse to
// the same mapping in every verb that feeds a model from columns, and the
// mapping prints back to text that feeder.ParseMapping reads to the same
// value.
func TestMapMeansTheSameInEveryVerb(t *testing.T) {
	want := feeder.Mapping{
		{Column: "a", Tensor: "x"},
		{Column: "b", Tensor: "y"},
		{Column: "pixels", Tensor: "image", Shape: []int64{28, 28, 1}, Fill: "0", Length: 784, Cast: true},
	}
	verbs := map[string][]string{
		"train":    nil,
		"worker":   nil,
		"evaluate": nil,
		"predict":  nil,
		"tune":     {"--space", "nosuch.yaml"},
		"ensemble": {"--members", "2"},
	}
	for verb, extra := range verbs {
		t.Run(verb, func(t *testing.T) {
			var got *mappingFlag
			flagsParsed = func(fs *flag.FlagSet) {
				if f := fs.Lookup("map"); f != nil {
					got = f.Value.(*mappingFlag)
				}
			}
			defer func() { flagsParsed = nil }()
			args := append([]string{verb, "--map", "a=x,b=y", "--map", "pixels=image shape=28,28,1 fill=0 len=784 cast"}, extra...)
			// The verbs fail later (no model, no data): only the parse matters.
			run(args, new(bytes.Buffer), new(bytes.Buffer))
			require.NotNil(t, got, "%s has no --map flag", verb)
			require.Equal(t, want, got.m)
			require.Equal(t, map[string]string{"a": "x", "b": "y"}, got.short())
			back, err := feeder.ParseMapping(got.String())
			require.NoError(t, err)
			require.Equal(t, want, back)
		})
	}
}

func TestOptimizerFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "opt.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"learning_rate": 0.5, "beta_1": 0.8}`), 0o644))
	for name, tc := range map[string]struct {
		name, options string
		want          map[string]any
	}{
		"name":              {"adam", "", map[string]any{"optimizer": "adam"}},
		"name and options":  {"adam", `{"learning_rate":0.5}`, map[string]any{"optimizer": "adam", "learning_rate": 0.5}},
		"options from file": {"adam", "@" + file, map[string]any{"optimizer": "adam", "learning_rate": 0.5, "beta_1": 0.8}},
		"whole JSON":        {`{"optimizer":"sgd","learning_rate":0.1}`, `{"momentum":0.9}`, map[string]any{"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.9}},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := optimizerJSON(tc.name, tc.options)
			require.NoError(t, err)
			var got map[string]any
			require.NoError(t, json.Unmarshal(b, &got))
			require.Equal(t, tc.want, got)
		})
	}
	_, err := optimizerJSON("adam", `{"optimizer":"sgd"}`)
	require.ErrorContains(t, err, "name the optimizer with --optimizer")
	_, err = optimizerJSON("adam", `[1]`)
	require.ErrorContains(t, err, "--optimizer-options: want a JSON object")
	_, err = optimizerJSON("adam", "@"+filepath.Join(dir, "missing.json"))
	require.ErrorContains(t, err, "missing.json")
	_, err = optimizerJSON("adam", "null")
	require.ErrorContains(t, err, "want a JSON object")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "null.json"), []byte("null"), 0o644))
	_, err = optimizerJSON("@"+filepath.Join(dir, "null.json"), `{"learning_rate":0.1}`)
	require.ErrorContains(t, err, "--optimizer: want a JSON object")
	_, err = optimizerJSON("{", "")
	require.ErrorContains(t, err, "--optimizer: want a JSON object")
}

// TestQuietStart runs this test binary as gotflow: by default version, help
// and inspect write nothing on stderr, although libtensorflow logs from its
// static initializers before any Go code runs; -v or TF_CPP_MIN_LOG_LEVEL=0
// shows TensorFlow's lines again (which proves they are there to hide).
func TestQuietStart(t *testing.T) {
	env := []string{"GOTFLOW_TEST_MAIN=1"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TF_CPP_MIN_LOG_LEVEL=") {
			env = append(env, kv)
		}
	}
	gotflow := func(extraEnv []string, args ...string) (string, string) {
		t.Helper()
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(append([]string{}, env...), extraEnv...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		require.NoError(t, cmd.Run(), "gotflow %v: %s", args, errb.String())
		return out.String(), errb.String()
	}
	out := filepath.Join(t.TempDir(), "out.parquet")
	for _, args := range [][]string{
		{"version"}, {"help"}, {"inspect", "../../scripts/fixtures/mlp_savedmodel"}, {"predict", "-h"},
		// Loads a SavedModel and runs a session, where TensorFlow logs at INFO.
		{"predict", "--model", "../../examples/predict/model", "--data", "../../examples/predict/iris.parquet", "--output", out, "--quiet"},
	} {
		stdout, errs := gotflow(nil, args...)
		require.Empty(t, errs, "gotflow %v wrote on stderr", args)
		require.True(t, stdout != "" || args[0] == "predict", "gotflow %v printed nothing", args)
	}
	require.FileExists(t, out)
	// An error is still printed (stderr is back before Go starts).
	cmd := exec.Command(os.Args[0], "predict", "--model", "/nonexistent/model", "--data", "x.parquet", "--output", out)
	cmd.Env = env
	b, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(b), "gotflow predict:")

	// In a process started without TF_CPP_MIN_LOG_LEVEL, absl's level was
	// lowered (not just the environment set).
	cmd = exec.Command(os.Args[0], "-test.run=^TestQuietLogPath$", "-test.count=1")
	cmd.Env = append(append([]string{}, env[1:]...), "GOTFLOW_QUIET_CHILD=1") // env[0] is GOTFLOW_TEST_MAIN
	b, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", b)
	require.Contains(t, string(b), "PASS")

	for _, v := range []string{"-v", "--v", "-v=true", "-v=1"} {
		_, errs := gotflow(nil, "inspect", v, "../../scripts/fixtures/mlp_savedmodel")
		require.Contains(t, errs, "oneDNN", "inspect %s", v)
	}
	_, errs := gotflow(nil, "-v", "version")
	require.Contains(t, errs, "oneDNN")
	_, errs = gotflow([]string{"TF_CPP_MIN_LOG_LEVEL=0"}, "version")
	require.Contains(t, errs, "oneDNN")
}

// TestQuietLogPath runs in the child TestQuietStart starts.
func TestQuietLogPath(t *testing.T) {
	if os.Getenv("GOTFLOW_QUIET_CHILD") != "1" {
		t.Skip("run by TestQuietStart")
	}
	require.Equal(t, 1, tfLogPath(), "absl::SetMinLogLevel not found in this libtensorflow: add its namespace to quiet.go")
	quietTFLogs() // as main does
	require.Equal(t, "2", os.Getenv("TF_CPP_MIN_LOG_LEVEL"), "the level is in Go's environment, for child processes")
}
