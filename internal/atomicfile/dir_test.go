package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// eachPlacement runs a test with renameat2 (where the platform has it)
// and with the portable move-aside placement.
func eachPlacement(t *testing.T, test func(t *testing.T)) {
	t.Helper()
	t.Run("renameat2", test)
	t.Run("portable", func(t *testing.T) {
		portableOnly = true
		t.Cleanup(func() { portableOnly = false })
		test(t)
	})
}

// tree reads a directory into path → content ("dir/" for directories).
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if e.IsDir() {
			got[rel+"/"] = ""
			return nil
		}
		b, err := os.ReadFile(p)
		got[rel] = string(b)
		return err
	}))
	return got
}

// names lists a directory's entries.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// fill writes a small tree into dir, every file holding content, with
// modes a umask or a careless writer could give.
func fill(t *testing.T, dir, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a"), []byte(content), 0o600))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sub", "b"), []byte(content), 0o640))
}

func oldDir(t *testing.T, path string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Join(path, "olddir"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(path, "old"), []byte("old"), 0o644))
}

var oldTree = map[string]string{"old": "old", "olddir/": ""}

// TestDirCommitReplaces: a committed directory replaces the old one whole,
// with modes 0755 and 0644, and leaves nothing else beside it.
func TestDirCommitReplaces(t *testing.T) {
	eachPlacement(t, func(t *testing.T) {
		parent := t.TempDir()
		path := filepath.Join(parent, "model")
		oldDir(t, path)

		d, err := CreateDir(path)
		require.NoError(t, err)
		require.Equal(t, parent, filepath.Dir(d.Path()), "staged beside the target")
		fill(t, d.Path(), "new")
		require.Equal(t, oldTree, tree(t, path), "nothing visible before Commit")
		require.NoError(t, d.Commit())

		require.Equal(t, map[string]string{"a": "new", "sub/": "", "sub/b": "new"}, tree(t, path))
		require.Equal(t, []string{"model"}, names(t, parent), "no stage and no old directory left")
		for p, mode := range map[string]os.FileMode{"": 0o755, "sub": 0o755, "a": 0o644, "sub/b": 0o644} {
			st, err := os.Stat(filepath.Join(path, p))
			require.NoError(t, err)
			require.Equal(t, mode, st.Mode().Perm(), p)
		}

		require.ErrorContains(t, d.Commit(), "publish "+path+": already committed or aborted")
		require.NoError(t, d.Abort(), "a no-op after Commit")
		require.Equal(t, "new", tree(t, path)["a"])
	})
}

// TestDirCreatesParents: the target's missing parents are made.
func TestDirCreatesParents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x", "y", "model")
	d, err := CreateDir(path + string(filepath.Separator))
	require.NoError(t, err)
	fill(t, d.Path(), "v")
	require.NoError(t, d.Commit())
	require.Equal(t, "v", tree(t, path)["sub/b"])
	st, err := os.Stat(filepath.Dir(path))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o755), st.Mode().Perm())

	_, err = CreateDir(string(filepath.Separator))
	require.ErrorContains(t, err, "not a directory name")
}

// TestDirAbort: an aborted directory leaves the target as it was (absent
// or old) and nothing beside it.
func TestDirAbort(t *testing.T) {
	parent := t.TempDir()
	path := filepath.Join(parent, "model")
	d, err := CreateDir(path)
	require.NoError(t, err)
	fill(t, d.Path(), "new")
	require.NoError(t, d.Abort())
	require.NoError(t, d.Abort(), "twice is harmless")
	require.Empty(t, names(t, parent))
	require.ErrorContains(t, d.Commit(), "already committed or aborted")

	oldDir(t, path)
	d, err = CreateDir(path)
	require.NoError(t, err)
	fill(t, d.Path(), "new")
	require.NoError(t, d.Abort())
	require.Equal(t, oldTree, tree(t, path))
	require.Equal(t, []string{"model"}, names(t, parent))
}

// TestDirFailedCommitKeepsOld: a commit that fails before the rename
// leaves the old directory intact, reports the path, and cleans up.
func TestDirFailedCommitKeepsOld(t *testing.T) {
	eachPlacement(t, func(t *testing.T) {
		parent := t.TempDir()
		path := filepath.Join(parent, "model")
		oldDir(t, path)
		d, err := CreateDir(path)
		require.NoError(t, err)
		fill(t, d.Path(), "new")
		require.NoError(t, os.RemoveAll(d.Path())) // the stage vanishes
		err = d.Commit()
		require.ErrorIs(t, err, fs.ErrNotExist)
		require.ErrorContains(t, err, "publish "+path+": ")
		require.Equal(t, oldTree, tree(t, path))
		require.Equal(t, []string{"model"}, names(t, parent))
	})
}

// TestDirCommitNoReplace: an existing non-empty directory (or a file) is
// kept and the commit fails with fs.ErrExist; an absent target or an
// empty directory is replaced.
func TestDirCommitNoReplace(t *testing.T) {
	eachPlacement(t, func(t *testing.T) {
		parent := t.TempDir()
		path := filepath.Join(parent, "model")
		commit := func(content string) error {
			d, err := CreateDir(path)
			require.NoError(t, err)
			defer d.Abort()
			fill(t, d.Path(), content)
			return d.CommitNoReplace()
		}
		require.NoError(t, commit("first"))
		require.Equal(t, "first", tree(t, path)["a"])

		err := commit("second")
		require.ErrorIs(t, err, fs.ErrExist)
		require.EqualError(t, err, "publish "+path+": file already exists")
		require.Equal(t, "first", tree(t, path)["a"])
		require.Equal(t, []string{"model"}, names(t, parent))

		require.NoError(t, os.RemoveAll(path))
		require.NoError(t, os.Mkdir(path, 0o700))
		require.NoError(t, commit("third"), "an empty directory counts as absent")
		require.Equal(t, "third", tree(t, path)["a"])

		require.NoError(t, os.RemoveAll(path))
		require.NoError(t, os.WriteFile(path, []byte("file"), 0o644))
		require.ErrorIs(t, commit("fourth"), fs.ErrExist)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Equal(t, "file", string(b))
		require.Equal(t, []string{"model"}, names(t, parent))
	})
}

// TestDirLastCommitWins: of two directories staged for one path, the one
// committed last is there, whichever was created first.
func TestDirLastCommitWins(t *testing.T) {
	eachPlacement(t, func(t *testing.T) {
		parent := t.TempDir()
		path := filepath.Join(parent, "model")
		a, err := CreateDir(path)
		require.NoError(t, err)
		b, err := CreateDir(path)
		require.NoError(t, err)
		require.NotEqual(t, a.Path(), b.Path())
		fill(t, a.Path(), "a")
		fill(t, b.Path(), "b")
		require.NoError(t, b.Commit())
		require.NoError(t, a.Commit())
		require.Equal(t, map[string]string{"a": "a", "sub/": "", "sub/b": "a"}, tree(t, path))
		require.Equal(t, []string{"model"}, names(t, parent))
	})
}

// TestDirConcurrentPublishers: publishers racing to one path never leave
// a mixed directory, neither at the end nor to a reader holding the
// directory open meanwhile; with CommitNoReplace exactly one wins.
func TestDirConcurrentPublishers(t *testing.T) {
	const publishers, rounds = 4, 10
	eachPlacement(t, func(t *testing.T) {
		parent := t.TempDir()
		path := filepath.Join(parent, "model")
		write := func(id string) *Dir {
			d, err := CreateDir(path)
			if err != nil {
				t.Error(err)
				return nil
			}
			for _, name := range []string{"a", "b", "c", "d"} {
				if err := os.WriteFile(filepath.Join(d.Path(), name), []byte(id), 0o644); err != nil {
					t.Error(err)
				}
			}
			return d
		}

		// A reader opens whatever directory is at path and reads all of it
		// through that handle: one directory, so one publisher's files.
		stop := make(chan struct{})
		var mixed []string
		var seen int
		readerDone := make(chan struct{})
		go func() {
			defer close(readerDone)
			for {
				select {
				case <-stop:
					return
				default:
				}
				root, err := os.OpenRoot(path)
				if err != nil {
					continue // briefly absent (portable placement) or not yet there
				}
				var ids []string
				for _, name := range []string{"a", "b", "c", "d"} {
					if b, err := root.ReadFile(name); err == nil {
						ids = append(ids, string(b))
					}
				}
				root.Close()
				if len(ids) == 4 { // a replaced directory may be removed while read
					seen++
					sort.Strings(ids)
					if ids[0] != ids[3] {
						mixed = append(mixed, strings.Join(ids, ","))
					}
				}
			}
		}()

		for r := range rounds {
			var wg sync.WaitGroup
			for p := range publishers {
				wg.Go(func() {
					if d := write(fmt.Sprintf("r%dp%d", r, p)); d != nil {
						if err := d.Commit(); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			got := tree(t, path)
			require.Len(t, got, 4)
			require.Regexp(t, fmt.Sprintf("^r%dp[0-9]$", r), got["a"])
			for _, name := range []string{"b", "c", "d"} {
				require.Equal(t, got["a"], got[name], "one publisher's directory, round %d", r)
			}
			require.Equal(t, []string{"model"}, names(t, parent), "nothing left beside it")
		}
		close(stop)
		<-readerDone
		require.Empty(t, mixed, "a reader saw a mixed directory")
		require.Positive(t, seen, "the reader saw whole directories")

		require.NoError(t, os.RemoveAll(path))
		var wg sync.WaitGroup
		var mu sync.Mutex
		var won []string
		for p := range publishers {
			wg.Go(func() {
				id := fmt.Sprintf("p%d", p)
				if d := write(id); d != nil {
					err := d.CommitNoReplace()
					if err == nil {
						mu.Lock()
						won = append(won, id)
						mu.Unlock()
					} else if !errors.Is(err, fs.ErrExist) {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		require.Len(t, won, 1, "exactly one CommitNoReplace wins")
		got := tree(t, path)
		for _, name := range []string{"a", "b", "c", "d"} {
			require.Equal(t, won[0], got[name])
		}
		require.Equal(t, []string{"model"}, names(t, parent))
	})
}
