package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/scripts/converter"
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
	require.Equal(t, "x", b.Inputs[0].Alias)
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

// TestConvertFromAnyDirectory runs convert as an installed binary would:
// from a directory outside any checkout, without GOTFLOW_ROOT. The
// converter comes from the binary (written to the cache directory once);
// a Python without TensorFlow is refused with what to install.
func TestConvertFromAnyDirectory(t *testing.T) {
	root := testmodels.Root()
	venv := filepath.Join(root, ".venv", "bin", "python")
	if os.Getenv("GOTFLOW_PYTHON") != "" {
		venv = os.Getenv("GOTFLOW_PYTHON")
	}
	if _, err := os.Stat(venv); err != nil {
		t.Skipf("no Python environment: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	elsewhere, cache := t.TempDir(), t.TempDir()
	model := filepath.Join(elsewhere, "models.py")
	b, err := os.ReadFile(filepath.Join(root, "scripts", "converter", "tests", "models.py"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(model, b, 0o644))
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOTFLOW_ROOT=") && !strings.HasPrefix(kv, "GOTFLOW_PYTHON=") {
			env = append(env, kv)
		}
	}
	env = append(env, "GOTFLOW_TEST_MAIN=1", "XDG_CACHE_HOME="+cache, "GOTFLOW_PYTHON="+venv)
	cmd := exec.CommandContext(ctx, os.Args[0], "convert", "tf1", "models.py:tf1_graph", "--input", "x:0", "--label", "y:0", "-o", "bundle")
	cmd.Dir, cmd.Env = elsewhere, env
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	_, err = loader.LoadBundle(filepath.Join(elsewhere, "bundle"))
	require.NoError(t, err)
	found, _ := filepath.Glob(filepath.Join(cache, "gotflow", "converter-*", "converter", "__main__.py"))
	require.Len(t, found, 1, "the converter is written to the cache once")

	// A Python that has no TensorFlow.
	sys, err := exec.LookPath("python3")
	if err != nil {
		t.Skipf("no python3 on PATH for the bare-Python case: %v", err)
	}
	bare := filepath.Join(t.TempDir(), "python")
	require.NoError(t, os.WriteFile(bare, []byte("#!/bin/sh\nexec /usr/bin/env -i "+sys+" -S -I \"$@\"\n"), 0o755))
	env[len(env)-1] = "GOTFLOW_PYTHON=" + bare
	cmd = exec.CommandContext(ctx, os.Args[0], "convert", "tf1", "models.py:tf1_graph", "--input", "x:0", "-o", "bundle2")
	cmd.Dir, cmd.Env = elsewhere, env
	out, err = cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "lacks tensorflow")
	require.Contains(t, string(out), "pip install tensorflow-cpu")
}

// TestExtractConverterConcurrently: runs extracting the converter at once
// all get the one copy the first of them published, whole, and leave no
// staging directory in the cache.
func TestExtractConverterConcurrently(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	const runs = 4
	dirs := make([]string, runs)
	errs := make([]error, runs)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Go(func() { dirs[i], errs[i] = extractConverter() })
	}
	wg.Wait()
	for i := range runs {
		require.NoError(t, errs[i])
		require.Equal(t, dirs[0], dirs[i])
	}
	require.Equal(t, filepath.Join(cache, "gotflow"), filepath.Dir(dirs[0]))
	ents, err := os.ReadDir(filepath.Join(cache, "gotflow"))
	require.NoError(t, err)
	require.Len(t, ents, 1, "one converter directory, no stage left")
	files, err := fs.Glob(converter.Sources, "*.py")
	require.NoError(t, err)
	require.Contains(t, files, "__main__.py")
	for _, f := range files {
		want, err := converter.Sources.ReadFile(f)
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(dirs[0], "converter", f))
		require.NoError(t, err)
		require.Equal(t, want, got, f)
		st, err := os.Stat(filepath.Join(dirs[0], "converter", f))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o644), st.Mode().Perm())
	}
	st, err := os.Stat(dirs[0])
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o755), st.Mode().Perm())

	again, err := extractConverter()
	require.NoError(t, err)
	require.Equal(t, dirs[0], again, "an existing copy is used")
}
