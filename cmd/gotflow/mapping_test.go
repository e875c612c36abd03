package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder"
)

// TestMappingFlag: every verb's --map reads the same syntax: plain pairs
// (repeated, or a,b lists as train always took them) and full entries with
// options; a column or a tensor mapped twice is refused.
func TestMappingFlag(t *testing.T) {
	var f mappingFlag
	require.NoError(t, f.Set("a=x,b=y"))
	require.NoError(t, f.Set("pixels=image shape=28,28,1 fill=0 len=784 cast"))
	require.NoError(t, f.Set("c=z; d=w dtype=int32"))
	require.Equal(t, map[string]string{"a": "x", "b": "y", "c": "z"}, f.short())
	require.Equal(t, feeder.Mapping{
		{Column: "pixels", Tensor: "image", Shape: []int64{28, 28, 1}, Fill: "0", Length: 784, Cast: true},
		{Column: "d", Tensor: "w", DType: 3},
	}, f.full())
	require.ErrorContains(t, f.Set("a=q"), `column "a" is mapped twice`)
	require.ErrorContains(t, f.Set("e=x"), `"x" is fed from two columns`)
	require.ErrorContains(t, f.Set("f=v len=-1"), "len wants a positive integer")
	require.ErrorContains(t, f.Set("g"), "want COLUMN=TENSOR")
}
