package tune

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCopyDirReplaces: best/ is replaced by a whole copy of the new best
// export (modes 0755 and 0644), and nothing is left beside it.
func TestCopyDirReplaces(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "export")
	require.NoError(t, os.MkdirAll(filepath.Join(src, "saved_model", "variables"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(src, "saved_model", "saved_model.pb"), []byte("graph"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(src, "tfmodel.json"), []byte("{}"), 0o600))
	study := filepath.Join(root, "study")
	dst := filepath.Join(study, "best")
	require.NoError(t, os.MkdirAll(dst, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dst, "stale"), []byte("old"), 0o644))

	require.NoError(t, copyDir(src, dst))

	got := map[string]os.FileMode{}
	require.NoError(t, filepath.Walk(dst, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		got[rel] = fi.Mode().Perm()
		return nil
	}))
	require.Equal(t, map[string]os.FileMode{".": 0o755, "saved_model": 0o755, "saved_model/variables": 0o755,
		"saved_model/saved_model.pb": 0o644, "tfmodel.json": 0o644}, got)
	b, err := os.ReadFile(filepath.Join(dst, "saved_model", "saved_model.pb"))
	require.NoError(t, err)
	require.Equal(t, "graph", string(b))
	ents, err := os.ReadDir(study)
	require.NoError(t, err)
	require.Len(t, ents, 1, "only best/ in the study directory")

	require.Error(t, copyDir(filepath.Join(root, "missing"), dst))
	b, err = os.ReadFile(filepath.Join(dst, "tfmodel.json"))
	require.NoError(t, err, "a failed copy leaves best/ as it was")
	require.Equal(t, "{}", string(b))
}
