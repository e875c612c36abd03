package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Dir is a directory being written in place of path: nothing is visible
// at path until Commit.
type Dir struct {
	path  string
	stage string
	done  bool
}

// CreateDir starts writing a directory that will replace path: an empty
// staging directory beside it, on the same filesystem, to fill through
// Path with plain writes (files need no sync of their own: Commit syncs
// them). Missing parents of path are made with mode 0755.
func CreateDir(path string) (*Dir, error) {
	path = filepath.Clean(path)
	base := filepath.Base(path)
	if base == "." || base == ".." || base == string(filepath.Separator) {
		return nil, fmt.Errorf("publish %s: not a directory name", path)
	}
	parent := filepath.Dir(path)
	if err := os.MkdirAll(parent, DirMode); err != nil {
		return nil, fmt.Errorf("publish %s: %w", path, err)
	}
	stage, err := os.MkdirTemp(parent, "."+base+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", path, err)
	}
	return &Dir{path: path, stage: stage}, nil
}

// Path is the staging directory to fill. Commit moves it to the target;
// Abort removes it.
func (d *Dir) Path() string { return d.stage }

// Commit publishes the staging directory at path, replacing whatever is
// there. It first gives every directory in the stage mode 0755 and every
// regular file 0644 and fsyncs them all, then renames the stage over
// path and fsyncs path's parent; the directory it replaced is removed
// last. On Linux the replacement is one atomic exchange, so path always
// holds the old directory or the new one; elsewhere the old one is moved
// aside just before, and put back if the rename fails. Of several Dirs
// committed to one path, the last to commit wins.
//
// After an error before the rename, path is as it was and the stage is
// removed; errors after it (syncing the parent, removing the replaced
// directory) leave the new directory at path.
func (d *Dir) Commit() error { return d.commit(true) }

// CommitNoReplace is Commit that keeps an existing directory at path:
// the stage is then removed and the error wraps fs.ErrExist. An empty
// directory at path counts as absent and is replaced. Of several Dirs
// committed to one path this way, the first to commit wins.
func (d *Dir) CommitNoReplace() error { return d.commit(false) }

func (d *Dir) commit(replace bool) error {
	if d.done {
		return fmt.Errorf("publish %s: already committed or aborted", d.path)
	}
	d.done = true
	if err := syncTree(d.stage); err != nil {
		os.RemoveAll(d.stage)
		return fmt.Errorf("publish %s: %w", d.path, err)
	}
	old, err := place(d.stage, d.path, replace)
	if err != nil {
		os.RemoveAll(d.stage)
		removeAll(old)
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Op == "publish" {
			return err
		}
		return fmt.Errorf("publish %s: %w", d.path, err)
	}
	if err := SyncDir(filepath.Dir(d.path)); err != nil {
		removeAll(old)
		return fmt.Errorf("publish %s: sync its directory: %w", d.path, err)
	}
	if err := removeAll(old); err != nil {
		return fmt.Errorf("publish %s: remove the directory it replaced: %w", d.path, err)
	}
	return nil
}

// Abort removes the staging directory; path is left as it was. It is a
// no-op after Commit, and after Abort.
func (d *Dir) Abort() error {
	if d.done {
		return nil
	}
	d.done = true
	if err := os.RemoveAll(d.stage); err != nil {
		return fmt.Errorf("publish %s: abort: %w", d.path, err)
	}
	return nil
}

// syncTree gives every directory under root (root included) DirMode and
// every regular file FileMode, and fsyncs them. Symbolic links and other
// entries stay as they are.
func syncTree(root string) error {
	var dirs []string
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case e.IsDir():
			dirs = append(dirs, p)
			return os.Chmod(p, DirMode)
		case e.Type().IsRegular():
			return syncFile(p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := SyncDir(dirs[i]); err != nil {
			return err
		}
	}
	return nil
}

func syncFile(path string) error {
	if err := os.Chmod(path, FileMode); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// maxAttempts bounds the retries of a commit racing other publishers
// that keep creating or removing the target.
const maxAttempts = 100

var errBusy = errors.New("the path kept changing under concurrent publishers")

// place renames stage to path and returns the directories to remove
// afterwards: those it replaced.
func place(stage, path string, replace bool) ([]string, error) {
	old, err := placeAtomic(stage, path, replace)
	if !errors.Is(err, errUnsupported) {
		if old != "" {
			return []string{old}, err
		}
		return nil, err
	}
	return placePortable(stage, path, replace)
}

// placeAtomic places stage with renameat2: RENAME_NOREPLACE when path is
// absent, RENAME_EXCHANGE to replace it, after which stage holds the old
// directory. It returns errUnsupported, having changed nothing, where
// those flags are not available.
func placeAtomic(stage, path string, replace bool) (string, error) {
	for range maxAttempts {
		err := renameNoReplace(stage, path)
		if err == nil {
			return "", nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
		if !replace {
			if err := removeEmptyDir(path); err != nil {
				return "", err
			}
			continue
		}
		err = renameExchange(stage, path)
		if err == nil {
			return stage, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		// Removed in between by another publisher: start again.
	}
	return "", errBusy
}

// placePortable places stage with rename(2) alone: what is at path is
// moved aside first, and put back if the rename fails. On error, the
// directories it returns are those superseded by another publisher.
func placePortable(stage, path string, replace bool) ([]string, error) {
	var old []string
	for i := range maxAttempts {
		if replace {
			aside := fmt.Sprintf("%s.old%d", stage, i)
			err := os.Rename(path, aside)
			if err == nil {
				old = append(old, aside)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return old, err
			}
		} else if err := removeEmptyDir(path); err != nil {
			return old, err
		}
		err := os.Rename(stage, path)
		if err == nil {
			return old, nil
		}
		if _, serr := os.Lstat(path); serr == nil {
			continue // another publisher got there in between
		}
		if n := len(old); n > 0 {
			// Put back the last directory moved aside; if that fails too,
			// leave it where it is (and not among those to remove).
			if rerr := os.Rename(old[n-1], path); rerr != nil {
				err = fmt.Errorf("%w (the previous directory is left at %s)", err, old[n-1])
			}
			old = old[:n-1]
		}
		return old, err
	}
	return old, errBusy
}

// removeEmptyDir removes path if it is an empty directory, which counts
// as absent for CommitNoReplace. Anything else there is an error wrapping
// fs.ErrExist.
func removeEmptyDir(path string) error {
	err := syscall.Rmdir(path)
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist):
		return nil
	case errors.Is(err, fs.ErrExist), errors.Is(err, syscall.ENOTDIR):
		return &fs.PathError{Op: "publish", Path: path, Err: fs.ErrExist}
	}
	return &fs.PathError{Op: "rmdir", Path: path, Err: err}
}

// removeAll removes the directories a commit replaced.
func removeAll(dirs []string) error {
	var errs []error
	for _, d := range dirs {
		errs = append(errs, os.RemoveAll(d))
	}
	return errors.Join(errs...)
}

// errUnsupported says that renameat2's flags are not available here.
var errUnsupported = errors.New("renameat2 flags not supported")

// portableOnly makes commits use placePortable (set by tests).
var portableOnly bool
