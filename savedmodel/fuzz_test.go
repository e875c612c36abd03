package savedmodel_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/savedmodel"
)

// FuzzRead feeds arbitrary bytes as saved_model.pb: Read (which Load runs
// before TensorFlow sees the file) must return an error or a consistent
// listing, never panic.
func FuzzRead(f *testing.F) {
	for _, name := range []string{"tf1_savedmodel", "tf2_savedmodel"} {
		b, err := os.ReadFile(filepath.Join(testmodels.Dir(name), "saved_model.pb"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte("\x12\x02\x0a\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, savedmodel.SavedModelFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		info, err := savedmodel.Read(dir)
		if err != nil {
			return
		}
		if len(info.MetaGraphs) == 0 {
			t.Fatal("Read succeeded with no meta graph")
		}
		for _, mg := range info.MetaGraphs {
			for _, s := range mg.Signatures {
				if _, err := mg.Signature(s.Key); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}
