package loader_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/loader"
)

// FuzzParseGraphDef checks that no input makes ParseGraphDef panic, and that
// whatever it accepts has nodes and resolvable placeholders. Seeds live in
// testdata/fuzz/FuzzParseGraphDef; the real fixtures are added here.
func FuzzParseGraphDef(f *testing.F) {
	for _, name := range []string{"mlp_frozen", "strings_identity"} {
		b, err := os.ReadFile(filepath.Join(testmodels.Dir(name), "model.pb"))
		if err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := loader.ParseGraphDef(b)
		if err != nil {
			return
		}
		if g.NumNodes() == 0 {
			t.Fatal("accepted a graph without nodes")
		}
		for _, p := range g.Placeholders() {
			if _, err := g.Resolve(p.Name); err != nil {
				t.Fatalf("placeholder %s does not resolve: %v", p.Name, err)
			}
		}
	})
}
