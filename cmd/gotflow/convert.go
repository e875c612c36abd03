package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/gotflow/gotflow/internal/atomicfile"
	"github.com/gotflow/gotflow/scripts/converter"
)

// runConvert runs the Python converter (carried in the binary, see
// scripts/converter) with the user's Python.
func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) == 0 {
			commandUsage(stderr, "convert", nil)
			return errUsage
		}
		commandUsage(stdout, "convert", nil)
		return nil
	}
	src, err := converterSources()
	if err != nil {
		return err
	}
	py, err := converterPython()
	if err != nil {
		return err
	}
	if err := checkPythonHas(ctx, py, "tensorflow", "numpy"); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, py, append([]string{"-m", "converter"}, args...)...)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.Env = append(os.Environ(), "PYTHONPATH="+pythonPath(src))
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

// converterSources returns the directory to put on PYTHONPATH: with
// $GOTFLOW_ROOT, that repository's scripts/ (for working on the
// converter); otherwise the sources carried in this binary, written once
// to the user's cache directory.
func converterSources() (string, error) {
	if r := os.Getenv("GOTFLOW_ROOT"); r != "" {
		if _, err := os.Stat(filepath.Join(r, "scripts", "converter", "__main__.py")); err != nil {
			return "", fmt.Errorf("GOTFLOW_ROOT=%s has no scripts/converter", r)
		}
		return filepath.Join(r, "scripts"), nil
	}
	return extractConverter()
}

// extractConverter writes the embedded sources to
// <cache>/gotflow/converter-<hash>/converter/ unless they are there, and
// returns the directory above converter/. The directory appears whole
// (atomicfile.CreateDir: written beside, synced, renamed), so concurrent
// runs never see half of it; the first to finish wins and the others use
// its copy.
func extractConverter() (string, error) {
	files, err := fs.Glob(converter.Sources, "*.py")
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("this gotflow binary carries no converter sources (%v)", err)
	}
	h := sha256.New()
	for _, f := range files {
		b, err := converter.Sources.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	base := filepath.Join(cache, "gotflow")
	dir := filepath.Join(base, "converter-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(filepath.Join(dir, "converter", "__main__.py")); err == nil {
		return dir, nil
	}
	d, err := atomicfile.CreateDir(dir)
	if err != nil {
		return "", fmt.Errorf("convert: cache directory for the converter: %w", err)
	}
	defer d.Abort()
	if err := os.Mkdir(filepath.Join(d.Path(), "converter"), atomicfile.DirMode); err != nil {
		return "", err
	}
	for _, f := range files {
		b, _ := converter.Sources.ReadFile(f)
		if err := os.WriteFile(filepath.Join(d.Path(), "converter", f), b, atomicfile.FileMode); err != nil {
			return "", fmt.Errorf("convert: write the converter to %s: %w", d.Path(), err)
		}
	}
	if err := d.CommitNoReplace(); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "converter", "__main__.py")); serr == nil {
			return dir, nil // another run put it there first
		}
		return "", fmt.Errorf("convert: install the converter in %s: %w", dir, err)
	}
	return dir, nil
}

// converterPython returns $GOTFLOW_PYTHON, else the .venv of a gotflow
// checkout above the working directory or the executable, else python3
// on PATH.
func converterPython() (string, error) {
	if py := os.Getenv("GOTFLOW_PYTHON"); py != "" {
		return checkExecutable(py, "GOTFLOW_PYTHON")
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
			py := filepath.Join(dir, ".venv", "bin", "python")
			if _, err := os.Stat(filepath.Join(dir, "scripts", "converter", "__main__.py")); err == nil {
				if _, err := os.Stat(py); err == nil {
					return checkExecutable(py, "the project's .venv")
				}
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		return "", errors.New("no Python found: set GOTFLOW_PYTHON to a Python with tensorflow and numpy (pip install tensorflow-cpu), or put python3 on PATH")
	}
	return py, nil
}

func checkExecutable(py, from string) (string, error) {
	st, err := os.Stat(py)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("python from %s not found at %s: run 'make' in a gotflow checkout (it creates .venv with TensorFlow) or set GOTFLOW_PYTHON", from, py)
		}
		return "", err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("python from %s at %s is not an executable file", from, py)
	}
	return py, nil
}

// checkPythonHas fails with what to install when py lacks a module (it
// looks them up without importing them: fast).
func checkPythonHas(ctx context.Context, py string, modules ...string) error {
	code := "import importlib.util, sys\nmissing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]\nprint(' '.join(missing))\n"
	out, err := exec.CommandContext(ctx, py, append([]string{"-c", code}, modules...)...).Output()
	if err != nil {
		return fmt.Errorf("run %s: %w", py, err)
	}
	if missing := strings.Fields(string(out)); len(missing) > 0 {
		return fmt.Errorf("%s lacks %s, which gotflow convert needs: pip install tensorflow-cpu numpy (into that Python), or set GOTFLOW_PYTHON to one that has them", py, strings.Join(missing, " and "))
	}
	return nil
}
