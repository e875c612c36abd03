package tf_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOneLifetimeMechanism: the module's only finalizer or cleanup is the
// one tf's lifetime record arms (its cleanup only counts a leak; see
// objects.go). A new one elsewhere would be a second mechanism, and one
// that calls TensorFlow from the collector.
func TestOneLifetimeMechanism(t *testing.T) {
	root := ".." // the module root: tests run in the package directory
	var found []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "third_party" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == "runtime" && (sel.Sel.Name == "SetFinalizer" || sel.Sel.Name == "AddCleanup") {
				rel, _ := filepath.Rel(root, path)
				found = append(found, rel+": runtime."+sel.Sel.Name)
			}
			return true
		})
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []string{"tf/objects.go: runtime.AddCleanup"}, found)
}
