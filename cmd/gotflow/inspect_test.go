package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Paths are relative to cmd/gotflow so the golden files do not depend on
// where the repository is checked out.
func TestInspectGolden(t *testing.T) {
	for name, path := range map[string]string{
		"tf2_savedmodel":   "../../scripts/fixtures/tf2_savedmodel",
		"tf1_savedmodel":   "../../scripts/fixtures/tf1_savedmodel",
		"mlp_savedmodel":   "../../scripts/fixtures/mlp_savedmodel",
		"mlp_frozen":       "../../scripts/fixtures/mlp_frozen/model.pb",
		"mlp_frozen_dir":   "../../scripts/fixtures/mlp_frozen",
		"strings_identity": "../../scripts/fixtures/strings_identity",
		"tf1_checkpoint":   "../../scripts/fixtures/tf1_checkpoint",
		"bundle_mlp":       "../../loader/testdata/bundles/mlp",
		"example_iris":     "../../examples/predict/model",
	} {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run([]string{"inspect", path}, &out, &errb)
			require.Equal(t, 0, code, errb.String())
			golden(t, "inspect/"+name+".golden", out.String())
		})
	}
}

func TestInspectErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		code int
		msg  string
	}{
		"no argument":  {[]string{"inspect"}, 2, "want exactly one MODEL argument"},
		"missing path": {[]string{"inspect", "no/such/model"}, 1, "no such file or directory"},
		"not a model":  {[]string{"inspect", "testdata"}, 1, "is not a model"},
		"bad kind":     {[]string{"inspect", "--kind", "onnx", "../../scripts/fixtures/mlp_frozen"}, 1, `unknown model kind "onnx"`},
	} {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			require.Equal(t, tc.code, code)
			require.Contains(t, errb.String(), tc.msg)
			require.False(t, strings.Contains(errb.String(), "panic"))
		})
	}
}
