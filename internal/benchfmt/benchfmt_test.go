package benchfmt

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewRatioDirection(t *testing.T) {
	r := New("copy", "throughput", "bytes/s", 8, "memcpy", 10)
	require.InDelta(t, 0.8, r.Ratio, 1e-9)
	r = New("run", "latency_p50", "ns", 200, "raw", 100)
	require.InDelta(t, 0.5, r.Ratio, 1e-9)
	r = New("x", "throughput", "rows/s", 5, "", 0)
	require.Zero(t, r.Ratio)
}

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "area.json")
	in := []Result{New("a", "throughput", "rows/s", 3, "peer", 2)}
	require.NoError(t, Write(path, in))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var out []Result
	require.NoError(t, json.Unmarshal(data, &out))
	require.Equal(t, in, out)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file may be left behind")
}
