package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/loader"
)

func TestConvertWritesALoadableBundle(t *testing.T) {
	root := testmodels.Root()
	if _, err := os.Stat(filepath.Join(root, ".venv", "bin", "python")); err != nil && os.Getenv("GOTFLOW_PYTHON") == "" {
		t.Skipf("no Python environment: %v", err)
	}
	t.Setenv("GOTFLOW_ROOT", root)
	out := filepath.Join(t.TempDir(), "bundle")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := commands["convert"].run(ctx, []string{
		"tf1", filepath.Join(root, "scripts", "converter", "tests", "models.py") + ":tf1_graph",
		"--input", "x:0", "--label", "y:0", "-o", out,
	}, &stdout, &stderr)
	require.NoError(t, err, stderr.String())
	require.Contains(t, stderr.String(), "wrote "+out)
	b, err := loader.LoadBundle(out)
	require.NoError(t, err)
	require.Equal(t, "x", b.Inputs[0].Name)
	require.Len(t, b.Trainable(), 4)

	// A failing conversion: the converter's message reaches stderr.
	stderr.Reset()
	err = commands["convert"].run(ctx, []string{
		"keras", filepath.Join(root, "scripts", "converter", "tests", "models.py") + ":with_py_function",
		"--loss", "mse", "-o", filepath.Join(t.TempDir(), "bad"),
	}, &stdout, &stderr)
	require.ErrorContains(t, err, "conversion failed")
	require.Contains(t, stderr.String(), "doubler")
}

func TestConvertWithoutPython(t *testing.T) {
	t.Setenv("GOTFLOW_ROOT", testmodels.Root())
	t.Setenv("GOTFLOW_PYTHON", filepath.Join(t.TempDir(), "nope", "python"))
	var stdout, stderr bytes.Buffer
	err := commands["convert"].run(context.Background(), []string{"keras", "m.keras", "-o", "b"}, &stdout, &stderr)
	require.ErrorContains(t, err, "python from GOTFLOW_PYTHON not found at")
	require.ErrorContains(t, err, "run 'make'")
}

func TestConvertUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := commands["convert"].run(context.Background(), nil, &stdout, &stderr)
	require.ErrorIs(t, err, errUsage)
	require.Contains(t, stderr.String(), "gotflow convert keras MODEL")
}
