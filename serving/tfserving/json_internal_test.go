package tfserving

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/tf"
)

// TestParseJSON: TF Serving's JSON (with NaN and Infinity), numbers kept
// as written, arrays of numbers as numArray, and errors with a position.
func TestParseJSON(t *testing.T) {
	v, err := parseJSON(` {"a": [1, -2.5e3, NaN], "b": [[1, 2], [3, 4]], "c": "\u00e9\n", "d": [], "e": [true, null]} `)
	require.NoError(t, err)
	o := v.(*jsonObject)
	require.Equal(t, []string{"a", "b", "c", "d", "e"}, o.keys)
	require.Equal(t, []jsonValue{jsonNum("1"), jsonNum("-2.5e3"), jsonNum("NaN")}, o.vals["a"])
	require.Equal(t, []jsonValue{numArray{"1", "2"}, numArray{"3", "4"}}, o.vals["b"])
	require.Equal(t, "é\n", o.vals["c"])
	require.Equal(t, []jsonValue{}, o.vals["d"])
	require.Equal(t, []jsonValue{true, nil}, o.vals["e"])
	for _, bad := range []string{`{"a": [1,]}`, `{"a" 1}`, `[1 2]`, `"\x"`, `01x`, `{"a": 1, "a": 2}`, `[-]`, `[1.]`} {
		_, err := parseJSON(bad)
		require.Error(t, err, bad)
		require.Contains(t, err.Error(), "JSON Parse error", bad)
	}
}

// FuzzDecode: no input makes the parser or the tensor decoder panic, and
// a decoded tensor's buffer always matches its shape.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`[1, 2, 3]`, `[[1.5], [NaN]]`, `[[1, 2], [3]]`, `[[[1]], [2]]`, `{"b64": "AA=="}`, `[["a"], ["b"]]`, `[[], []]`, `[1e400]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseJSON(s)
		if err != nil {
			return
		}
		for _, dt := range []tf.DataType{tf.Float, tf.Int64, tf.Uint8, tf.String, tf.Bool} {
			x, err := decodeTensor("x", v, dt)
			if err != nil {
				continue
			}
			require.NoError(t, x.Check("x"), "%s as %s", s, dt)
		}
	})
}
