package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// FileMode and DirMode are the permissions of every file and directory
// this package publishes, whatever the umask or the writer asked for.
const (
	FileMode os.FileMode = 0o644
	DirMode  os.FileMode = 0o755
)

// WriteFile writes data to path atomically with mode 0644.
func WriteFile(path string, data []byte) error {
	return Write(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// Write calls fill with a temporary file beside path, then commits it
// (see File.Commit). On any error path is left as it was and the
// temporary file is removed.
func Write(path string, fill func(io.Writer) error) error {
	f, err := Create(path)
	if err != nil {
		return err
	}
	if err := fill(writerOnly{f}); err != nil {
		f.Abort()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Commit()
}

// File is a file being written in place of path: nothing is visible at
// path until Commit.
type File struct {
	path string
	f    *os.File
	done bool
}

// Create starts writing a file that will replace path.
func Create(path string) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return &File{path: path, f: f}, nil
}

// Write writes to the temporary file.
func (f *File) Write(p []byte) (int, error) { return f.f.Write(p) }

// Name is the temporary file's path.
func (f *File) Name() string { return f.f.Name() }

// Commit gives the file mode 0644, syncs it, renames it over path and
// syncs the directory. After an error before the rename, path is as it
// was; a failure to sync the directory comes after it: path then holds
// the new file, but the rename may not survive a crash.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("write %s: already committed or aborted", f.path)
	}
	f.done = true
	tmp := f.f.Name()
	err := f.f.Chmod(FileMode)
	if err == nil {
		err = f.f.Sync()
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, f.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	if err := SyncDir(filepath.Dir(f.path)); err != nil {
		return fmt.Errorf("write %s: sync its directory: %w", f.path, err)
	}
	return nil
}

// Abort drops the temporary file; path is left as it was. It is a no-op
// after Commit.
func (f *File) Abort() error {
	if f.done {
		return nil
	}
	f.done = true
	f.f.Close()
	return os.Remove(f.f.Name())
}

// SyncDir fsyncs a directory, so that a rename in it survives a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writerOnly hides the file's Close from fill: writers that close what
// they are given (pqarrow's) must not close the file before its sync.
type writerOnly struct{ w io.Writer }

func (w writerOnly) Write(p []byte) (int, error) { return w.w.Write(p) }
