package testmodels

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAllFixturesDecode(t *testing.T) {
	for _, name := range Names {
		t.Run(name, func(t *testing.T) {
			e, err := LoadExpected(name)
			require.NoError(t, err)
			require.Equal(t, name, e.Model)
			require.NotEmpty(t, e.Cases)
			for _, c := range e.Cases {
				require.Contains(t, []string{"signature", "raw"}, c.Style, c.Name)
				require.NotEmpty(t, c.Feeds, c.Name)
				require.NotEmpty(t, c.Fetches, c.Name)
				for k, a := range c.Fetches {
					require.Equal(t, a.Len(), elemCount(a), "%s %s", c.Name, k)
				}
			}
			switch e.Kind {
			case "saved_model":
				require.FileExists(t, filepath.Join(Dir(name), "saved_model.pb"))
				require.NotEmpty(t, e.Info.MetaGraphs)
			case "frozen_graph", "checkpoint":
				require.FileExists(t, filepath.Join(Dir(name), e.Info.Graph))
			default:
				t.Fatalf("unknown kind %q", e.Kind)
			}
		})
	}
}

func elemCount(a *Array) int {
	return len(a.Float32) + len(a.Float64) + len(a.Int32) + len(a.Int64) + len(a.Uint8) + len(a.Bool) + len(a.Bytes)
}

func TestStringsSurvive(t *testing.T) {
	e, err := LoadExpected("strings_identity")
	require.NoError(t, err)
	c, err := e.Case("matrix")
	require.NoError(t, err)
	in := c.Feeds["s:0"]
	require.Equal(t, []int64{3, 2}, in.Shape)
	require.Equal(t, [][]byte{{}, {0}, []byte("ü"), []byte("ab\x00cd"), []byte("end"), {}}, in.Bytes)
	// identity output equals the input; byte lengths agree with Go's len.
	require.Equal(t, in.Bytes, c.Fetches["s_out:0"].Bytes)
	lens := c.Fetches["byte_len:0"]
	require.Equal(t, "int32", lens.DType)
	for i, b := range in.Bytes {
		require.Equal(t, int32(len(b)), lens.Int32[i])
	}
	sc, err := e.Case("scalar")
	require.NoError(t, err)
	require.Equal(t, []int64{}, sc.Feeds["s:0"].Shape)
	require.Equal(t, [][]byte{[]byte("just\x00one")}, sc.Feeds["s:0"].Bytes)
}

func TestSoftmaxRowsSumToOne(t *testing.T) {
	e, err := LoadExpected("mlp_frozen")
	require.NoError(t, err)
	for _, c := range e.Cases {
		p := c.Fetches["probs:0"]
		require.Equal(t, "float32", p.DType)
		rows, cols := int(p.Shape[0]), int(p.Shape[1])
		require.Equal(t, c.Feeds["x:0"].Shape[0], p.Shape[0])
		for r := range rows {
			var s float64
			for k := range cols {
				s += float64(p.Float32[r*cols+k])
			}
			require.InDelta(t, 1, s, 1e-5, "case %s row %d", c.Name, r)
		}
	}
}

func TestSignatureLookup(t *testing.T) {
	e, err := LoadExpected("tf1_savedmodel")
	require.NoError(t, err)
	s, err := e.Info.Signature([]string{"train", "custom"}, "predict_custom")
	require.NoError(t, err)
	require.Equal(t, "in_x:0", s.Inputs[0].Name)
	require.Equal(t, []int64{-1, 3}, s.Inputs[0].Shape)
	_, err = e.Info.Signature([]string{"serve"}, "predict_custom")
	require.Error(t, err)
}

func TestDecodeErrors(t *testing.T) {
	for name, doc := range map[string]string{
		"short data":    `{"dtype":"float32","shape":[2],"data":[1]}`,
		"bad base64":    `{"dtype":"string","shape":[1],"data":["***"]}`,
		"bad dtype":     `{"dtype":"complex64","shape":[1],"data":[1]}`,
		"bad nonfinite": `{"dtype":"float64","shape":[1],"data":["inf"]}`,
	} {
		t.Run(name, func(t *testing.T) {
			var a Array
			require.Error(t, json.Unmarshal([]byte(doc), &a))
		})
	}
	var a Array
	require.NoError(t, json.Unmarshal([]byte(`{"dtype":"float64","shape":[3],"data":["NaN","Infinity",0.5]}`), &a))
	require.True(t, a.Float64[0] != a.Float64[0])
	require.Equal(t, 0.5, a.Float64[2])
}

func TestMissingFixture(t *testing.T) {
	_, err := LoadExpected("no_such_model")
	require.ErrorIs(t, err, os.ErrNotExist)
}
