package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReplaceWhole: a committed file replaces the old one with mode 0644;
// an aborted or failed write leaves the old one and no temporary file.
func TestReplaceWhole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.bin")
	require.NoError(t, WriteFile(path, []byte("old")))

	f, err := Create(path)
	require.NoError(t, err)
	_, err = f.Write([]byte("half"))
	require.NoError(t, err)
	b, _ := os.ReadFile(path)
	require.Equal(t, "old", string(b), "nothing visible before Commit")
	require.NoError(t, f.Abort())
	require.NoError(t, f.Abort(), "twice is harmless")
	require.ErrorContains(t, f.Commit(), "already committed or aborted")

	boom := errors.New("boom")
	err = Write(path, func(w io.Writer) error {
		w.Write([]byte("partial"))
		return boom
	})
	require.ErrorIs(t, err, boom)
	b, _ = os.ReadFile(path)
	require.Equal(t, "old", string(b))

	require.NoError(t, WriteFile(path, []byte("new")))
	b, _ = os.ReadFile(path)
	require.Equal(t, "new", string(b))
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), st.Mode().Perm())
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "no temporary file is left")
}
