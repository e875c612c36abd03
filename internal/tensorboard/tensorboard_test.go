package tensorboard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/wamuir/graft/tensorflow/core/util/event_go_proto"
)

// written is the sequence of scalars the tests write and read back.
var written = []struct {
	step    int64
	scalars []Scalar
}{
	{0, []Scalar{{"loss", 2.302585}, {"accuracy", 0.0625}}},
	{1, []Scalar{{"loss", 1.75}}},
	{10, []Scalar{{"loss", 0.5}, {"accuracy", 0.875}, {"examples_per_second", 12345.5}}},
	{1 << 40, []Scalar{{"train/loss", -3.25e-7}}},
}

func writeFixture(t *testing.T, dir string) string {
	t.Helper()
	clock := time.Unix(1_700_000_000, 250_000_000)
	w, err := NewWriter(dir, WithFilenameSuffix(".test"), WithClock(func() time.Time { return clock }))
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	for _, e := range written {
		require.NoError(t, w.AddScalars(e.step, e.scalars...))
	}
	require.NoError(t, w.Close())
	require.NoError(t, w.Close(), "Close is idempotent")
	require.ErrorIs(t, w.AddScalar(1, "x", 1), ErrClosed)
	require.ErrorIs(t, w.Flush(), ErrClosed)
	return w.Path()
}

func TestMaskedCRC(t *testing.T) {
	// CRC32C check value from RFC 3720, then TFRecord's mask applied by hand.
	c := crc32.Checksum([]byte("123456789"), castagnoli)
	require.Equal(t, uint32(0xE3069283), c)
	require.Equal(t, ((c>>15)|(c<<17))+0xa282ead8, maskedCRC([]byte("123456789")))
}

func TestWriteReadBack(t *testing.T) {
	path := writeFixture(t, t.TempDir())
	require.Contains(t, filepath.Base(path), "tfevents")
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	evs, err := ReadEvents(f)
	require.NoError(t, err)
	require.Len(t, evs, 1+len(written))
	require.Equal(t, FileVersion, evs[0].GetFileVersion())
	require.InDelta(t, 1_700_000_000.25, evs[0].WallTime, 1e-6)
	for i, e := range written {
		ev := evs[i+1]
		require.Equal(t, e.step, ev.Step)
		vals := ev.GetSummary().GetValue()
		require.Len(t, vals, len(e.scalars))
		for j, s := range e.scalars {
			require.Equal(t, s.Tag, vals[j].Tag)
			require.Equal(t, float32(s.Value), vals[j].GetSimpleValue())
		}
	}
}

func TestReadEventsDetectsCorruption(t *testing.T) {
	path := writeFixture(t, t.TempDir())
	good, err := os.ReadFile(path)
	require.NoError(t, err)

	flipped := bytes.Clone(good)
	flipped[len(flipped)-6] ^= 0x01 // inside the last record's payload
	_, err = ReadEvents(bytes.NewReader(flipped))
	require.ErrorContains(t, err, "payload CRC mismatch")

	hdr := bytes.Clone(good)
	hdr[0] ^= 0x01 // first record's length
	_, err = ReadEvents(bytes.NewReader(hdr))
	require.ErrorContains(t, err, "offset 0: length CRC mismatch")

	evs, err := ReadEvents(bytes.NewReader(good[:len(good)-3]))
	require.ErrorContains(t, err, "truncated payload")
	require.Len(t, evs, len(written), "records before the truncated one are returned")
}

func TestBadInput(t *testing.T) {
	_, err := NewWriter("")
	require.ErrorContains(t, err, "log directory is empty")

	w, err := NewWriter(t.TempDir())
	require.NoError(t, err)
	defer w.Close()
	require.ErrorContains(t, w.AddScalars(3, Scalar{Tag: "loss", Value: 1}, Scalar{Value: 2}), "scalar 1 at step 3 has an empty tag")
	require.ErrorContains(t, w.WriteEvent(nil), "event is nil")
	require.NoError(t, w.AddScalars(4), "no scalars is a no-op")
}

func TestFlushMakesEventsVisible(t *testing.T) {
	w, err := NewWriter(t.TempDir())
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.AddScalar(7, "loss", 0.25))
	require.NoError(t, w.Flush())
	b, err := os.ReadFile(w.Path())
	require.NoError(t, err)
	evs, err := ReadEvents(bytes.NewReader(b))
	require.NoError(t, err)
	require.Len(t, evs, 2)
	require.Equal(t, int64(7), evs[1].Step)
	require.IsType(t, &event_go_proto.Event_Summary{}, evs[1].What)
}

// readWithPython reads an event file with TensorFlow's own reader.
const readWithPython = `
import json, sys
import tensorflow as tf
out = []
for e in tf.compat.v1.train.summary_iterator(sys.argv[1]):
    if e.HasField("file_version"):
        out.append({"file_version": e.file_version, "wall_time": e.wall_time})
        continue
    for v in e.summary.value:
        out.append({"step": e.step, "tag": v.tag, "value": v.simple_value})
print(json.dumps(out))
`

func TestPythonSummaryIteratorReadsFile(t *testing.T) {
	python := filepath.Join("..", "..", ".venv", "bin", "python")
	if _, err := os.Stat(python); err != nil {
		t.Skipf("no project Python at %s: %v", python, err)
	}
	path := writeFixture(t, t.TempDir())

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-c", readWithPython, path)
	cmd.Env = append(os.Environ(), "TF_CPP_MIN_LOG_LEVEL=2", "CUDA_VISIBLE_DEVICES=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "python: %s", stderr.String())

	var got []struct {
		FileVersion string   `json:"file_version"`
		WallTime    float64  `json:"wall_time"`
		Step        int64    `json:"step"`
		Tag         string   `json:"tag"`
		Value       *float64 `json:"value"`
	}
	require.NoError(t, json.Unmarshal(out, &got), "python output: %s", out)
	require.NotEmpty(t, got)
	require.Equal(t, FileVersion, got[0].FileVersion)
	require.InDelta(t, 1_700_000_000.25, got[0].WallTime, 1e-6)
	got = got[1:]
	i := 0
	for _, e := range written {
		for _, s := range e.scalars {
			require.Less(t, i, len(got), "python read fewer values than written")
			require.Equal(t, e.step, got[i].Step, "value %d", i)
			require.Equal(t, s.Tag, got[i].Tag, "value %d", i)
			require.NotNil(t, got[i].Value)
			// Python widens the stored float32 to a double exactly.
			require.Equal(t, float64(float32(s.Value)), *got[i].Value, "value %d", i)
			require.False(t, math.IsNaN(*got[i].Value))
			i++
		}
	}
	require.Len(t, got, i)
}

func TestConcurrentWriters(t *testing.T) {
	w, err := NewWriter(t.TempDir())
	require.NoError(t, err)
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := w.AddScalar(int64(g*each+i), fmt.Sprintf("worker%d/loss", g), float64(i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	require.NoError(t, w.Close())
	f, err := os.Open(w.Path())
	require.NoError(t, err)
	defer f.Close()
	evs, err := ReadEvents(f)
	require.NoError(t, err, "records from concurrent calls are never interleaved")
	require.Len(t, evs, 1+goroutines*each)
	seen := map[int64]bool{}
	for _, ev := range evs[1:] {
		v := ev.GetSummary().GetValue()[0]
		g := ev.Step / each
		require.Equal(t, fmt.Sprintf("worker%d/loss", g), v.Tag)
		require.Equal(t, float32(ev.Step%each), v.GetSimpleValue())
		seen[ev.Step] = true
	}
	require.Len(t, seen, goroutines*each)
}
