package loader_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gotflow/gotflow/loader"
)

// FuzzParseManifest checks that no manifest makes ParseManifest panic, and
// that what it accepts is consistent: validation is idempotent and
// trainable variables always carry a gradient. Seeds live in
// testdata/fuzz/FuzzParseManifest.
func FuzzParseManifest(f *testing.F) {
	for _, name := range []string{"mlp", "cnn", "tf1"} {
		b, err := os.ReadFile(filepath.Join("testdata", "bundles", name, "manifest.json"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := loader.ParseManifest(data)
		if err != nil {
			if m != nil {
				t.Fatal("manifest returned with an error")
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted manifest fails Validate: %v", err)
		}
		for _, v := range m.Variables {
			if v.Trainable && v.Gradient == "" {
				t.Fatalf("trainable variable %q without gradient accepted", v.Name)
			}
		}
	})
}

// FuzzParseWeights checks that no weights file makes ParseWeights panic and
// that every accepted weight holds exactly its dtype's bytes.
func FuzzParseWeights(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "bundles", "cnn", "weights.safetensors"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		ws, err := loader.ParseWeights(data)
		if err != nil {
			return
		}
		if _, err := loader.EncodeWeights(ws, nil); err != nil {
			t.Fatalf("accepted weights do not encode: %v", err)
		}
	})
}
