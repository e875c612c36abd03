package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestInspectJSON(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want jsonModel
	}{
		"savedmodel": {[]string{"../../scripts/fixtures/mlp_savedmodel"}, jsonModel{
			Model: "../../scripts/fixtures/mlp_savedmodel", Kind: "saved_model", Signature: "serving_default",
			Inputs:  []jsonSpec{{Name: "features", Tensor: "serving_default_features:0", DType: "float32", Shape: []int64{-1, 32}}},
			Outputs: []jsonSpec{{Name: "output_0", Tensor: "StatefulPartitionedCall_1:0", DType: "float32", Shape: []int64{-1, 10}}},
		}},
		"bundle": {[]string{"../../loader/testdata/bundles/mlp"}, jsonModel{
			Model: "../../loader/testdata/bundles/mlp", Kind: "bundle", Signature: "bundle",
			Inputs:  []jsonSpec{{Name: "x", Tensor: "input/x:0", DType: "float32", Shape: []int64{-1, 6}}},
			Outputs: []jsonSpec{{Name: "output", Tensor: "output/output:0", DType: "float32", Shape: []int64{-1, 3}}},
		}},
		"frozen": {[]string{"../../scripts/fixtures/mlp_frozen/model.pb"}, jsonModel{
			Model: "../../scripts/fixtures/mlp_frozen/model.pb", Kind: "frozen_graph",
			Inputs:  []jsonSpec{{Name: "x:0", Tensor: "x:0", DType: "float32", Shape: []int64{-1, 8}}},
			Outputs: []jsonSpec{{Name: "probs:0", Tensor: "probs:0", DType: "float32", Shape: []int64{-1, 3}}},
		}},
	} {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"inspect", "--json"}, tc.args...), &out, &errb)
			require.Equal(t, 0, code, errb.String())
			var got jsonModel
			require.NoError(t, json.Unmarshal(out.Bytes(), &got))
			require.Equal(t, tc.want, got)
		})
	}
	t.Run("unknown signature", func(t *testing.T) {
		var out, errb bytes.Buffer
		code := run([]string{"inspect", "--json", "--signature", "nope", "../../scripts/fixtures/mlp_savedmodel"}, &out, &errb)
		require.Equal(t, 1, code)
		require.Contains(t, errb.String(), `"nope"`)
	})
	t.Run("flags without json", func(t *testing.T) {
		var out, errb bytes.Buffer
		code := run([]string{"inspect", "--tags", "serve", "../../scripts/fixtures/mlp_savedmodel"}, &out, &errb)
		require.Equal(t, 2, code)
		require.Contains(t, errb.String(), "go with --json")
	})
}
