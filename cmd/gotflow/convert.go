package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func init() {
	register(command{
		name:    "convert",
		summary: "convert a Keras model, TF1 graph function or SavedModel into a trainable bundle",
		run:     runConvert,
	})
}

const convertUsage = `usage: gotflow convert keras MODEL --loss LOSS [--metric M]... [--input name:dtype:shape]... [--label name:dtype:shape]... -o BUNDLE
       gotflow convert tf1 MODULE.py:FUNCTION [--input x:0]... [--label y:0]... [--output name=tensor]... -o BUNDLE
       gotflow convert savedmodel DIR --loss LOSS [--signature KEY] [--label name:dtype:shape] -o BUNDLE

MODEL is a .keras file or path/to/module.py:function returning a keras.Model.
The bundle directory gets manifest.json, train.pb, infer.pb, eval.pb and
weights.safetensors (see loader/schema/bundle-v1.schema.json).

The conversion runs in the project's Python: $GOTFLOW_PYTHON, or
<repo>/.venv/bin/python (created by make). Run 'gotflow convert keras -h'
for all flags of a source.
`

// runConvert runs scripts/converter in the project's Python environment.
func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, convertUsage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	root, err := converterRoot()
	if err != nil {
		return err
	}
	py, err := converterPython(root)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, py, append([]string{"-m", "converter"}, args...)...)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.Env = append(os.Environ(), "PYTHONPATH="+pythonPath(filepath.Join(root, "scripts")))
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			if exit.ExitCode() == 2 {
				return fmt.Errorf("%w: see 'gotflow convert %s -h'", errUsage, args[0])
			}
			return fmt.Errorf("conversion failed (the converter exited with status %d)", exit.ExitCode())
		}
		return fmt.Errorf("run %s: %w", py, err)
	}
	return nil
}

func pythonPath(dir string) string {
	if old := os.Getenv("PYTHONPATH"); old != "" {
		return dir + string(os.PathListSeparator) + old
	}
	return dir
}

// converterRoot finds the repository holding scripts/converter: $GOTFLOW_ROOT,
// else the first parent of the working directory or of the executable
// that has it.
func converterRoot() (string, error) {
	has := func(dir string) bool {
		_, err := os.Stat(filepath.Join(dir, "scripts", "converter", "__main__.py"))
		return err == nil
	}
	if r := os.Getenv("GOTFLOW_ROOT"); r != "" {
		if !has(r) {
			return "", fmt.Errorf("GOTFLOW_ROOT=%s has no scripts/converter", r)
		}
		return r, nil
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			starts = append(starts, filepath.Dir(exe))
		}
	}
	for _, dir := range starts {
		for {
			if has(dir) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("cannot find the gotflow repository (scripts/converter) above %s: run gotflow from the repository or set GOTFLOW_ROOT", strings.Join(starts, " or "))
}

// converterPython returns $GOTFLOW_PYTHON or <root>/.venv/bin/python.
func converterPython(root string) (string, error) {
	py := os.Getenv("GOTFLOW_PYTHON")
	from := "GOTFLOW_PYTHON"
	if py == "" {
		py = filepath.Join(root, ".venv", "bin", "python")
		from = "the project's .venv"
	}
	st, err := os.Stat(py)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("python from %s not found at %s: run 'make' (scripts/install-libtensorflow.sh creates .venv with TensorFlow) or set GOTFLOW_PYTHON", from, py)
		}
		return "", err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("python from %s at %s is not an executable file", from, py)
	}
	return py, nil
}
