package feeder_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/memory/mallocator"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
)

var updateSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite testdata/fuzz seed corpora")

// capped refuses allocations larger than 64 MiB so that a fuzzed length
// field cannot exhaust memory; the readers turn the panic into an error.
type capped struct{ memory.Allocator }

func (c capped) Allocate(n int) []byte {
	if n > 64<<20 {
		panic(fmt.Sprintf("allocation of %d bytes refused", n))
	}
	return c.Allocator.Allocate(n)
}

func (c capped) Reallocate(n int, b []byte) []byte {
	if n > 64<<20 {
		panic(fmt.Sprintf("allocation of %d bytes refused", n))
	}
	return c.Allocator.Reallocate(n, b)
}

// seedStreams are IPC streams of the column types the feeder handles.
func seedStreams() [][]byte {
	mem := memory.NewGoAllocator()
	var out [][]byte
	add := func(cols ...arrow.Array) {
		fields := make([]arrow.Field, len(cols))
		for i, c := range cols {
			fields[i] = arrow.Field{Name: fmt.Sprintf("c%d", i), Type: c.DataType(), Nullable: true}
		}
		schema := arrow.NewSchema(fields, nil)
		rec := array.NewRecordBatch(schema, cols, int64(cols[0].Len()))
		var buf bytes.Buffer
		w := ipc.NewWriter(&buf, ipc.WithSchema(schema), ipc.WithAllocator(mem))
		if err := w.Write(rec); err != nil {
			panic(err)
		}
		w.Close()
		rec.Release()
		for _, c := range cols {
			c.Release()
		}
		out = append(out, buf.Bytes())
	}
	add(prim(mem, arrow.PrimitiveTypes.Float32, []float32{1, 2, 3}, []bool{true, false, true}), prim(mem, arrow.PrimitiveTypes.Int64, []int64{1, 2, 3}, nil))
	add(prim(mem, arrow.BinaryTypes.String, []string{"a\x00", "日本", ""}, nil), prim(mem, arrow.FixedWidthTypes.Boolean, []bool{true, false, true}, nil))
	add(fsl(mem, 2, prim(mem, arrow.PrimitiveTypes.Int32, seqI32(6), nil), []bool{true, false, true}))
	add(listOf(mem, arrow.PrimitiveTypes.Int64, [][]any{{int64(1)}, {int64(2), int64(3)}, {}}))
	add(fsl(mem, 3, fsl(mem, 2, prim(mem, arrow.PrimitiveTypes.Uint8, make([]uint8, 18), nil), nil), nil))
	typ, _ := feeder.NewFixedShapeTensorType(arrow.PrimitiveTypes.Float64, []int64{2, 2})
	st := fsl(mem, 4, prim(mem, arrow.PrimitiveTypes.Float64, seqF64(8), nil), nil)
	add(array.NewExtensionArrayWithStorage(typ, st))
	st.Release()
	return out
}

var seedMappings = []string{
	"c0=x",
	"c0=x dtype=float64 fill=0; c1=y cast",
	"c0=x:0 shape=[2] fill=-1",
	"c0=x len=2 pad=-1",
	"c0=x shape=3x2 dtype=int32",
	`"c0"=x dtype=float32 cast fill=1.5`,
	"c0=x shape=[4]; c1=y dtype=string fill=?",
}

// feedAll plans mapping over the stream's schema and converts every record.
// It reports whether a reader failed with ErrMalformed (after which
// arrow-go may have leaked the message it was decoding).
func feedAll(t *testing.T, data []byte, mapping string, mem memory.Allocator) (malformed bool) {
	src, err := arrowio.NewIPCStream(bytes.NewReader(data), arrowio.WithAllocator(mem))
	if err != nil {
		return errors.Is(err, feeder.ErrMalformed)
	}
	defer src.Close()
	var plans []*feeder.Plan
	if mapping != "" {
		m, err := feeder.ParseMapping(mapping)
		if err != nil {
			return false
		}
		p, err := feeder.NewPlan(src.Schema(), m, nil)
		if err != nil {
			require.Contains(t, err.Error(), "feeder: ")
			return false
		}
		plans = append(plans, p)
	} else {
		for _, f := range src.Schema().Fields() {
			if p, err := feeder.NewPlan(src.Schema(), feeder.Mapping{{Column: f.Name, Tensor: "x", Fill: 0}}, nil); err == nil {
				plans = append(plans, p)
			} else if p, err := feeder.NewPlan(src.Schema(), feeder.Mapping{{Column: f.Name, Tensor: "x", Fill: "?"}}, nil); err == nil {
				plans = append(plans, p)
			}
		}
	}
	for range 16 {
		rec, err := src.Next(context.Background())
		if err != nil {
			return errors.Is(err, feeder.ErrMalformed)
		}
		for _, p := range plans {
			if b, err := p.Convert(rec); err == nil {
				b.Close()
			}
		}
		rec.Release()
	}
	return false
}

func FuzzPlan(f *testing.F) {
	for _, s := range seedStreams() {
		for _, m := range seedMappings {
			f.Add(s, m)
		}
	}
	f.Fuzz(func(t *testing.T, stream []byte, mapping string) {
		if m, err := feeder.ParseMapping(mapping); err == nil {
			again, err := feeder.ParseMapping(m.String())
			require.NoError(t, err, "re-parse %q", m.String())
			require.True(t, reflect.DeepEqual(normalize(m), normalize(again)), "%q → %#v → %q → %#v", mapping, m, m.String(), again)
		}
		ca := memory.NewCheckedAllocator(mallocator.NewMallocator())
		if !feedAll(t, stream, mapping, feeder.TrackCMemory(capped{ca})) {
			require.Zero(t, ca.CurrentAlloc(), "Arrow memory leaked")
		}
	})
}

// normalize makes Fill comparable: ParseMapping stores it as text.
func normalize(m feeder.Mapping) feeder.Mapping {
	out := append(feeder.Mapping(nil), m...)
	for i := range out {
		if out[i].Fill != nil {
			out[i].Fill = fmt.Sprint(out[i].Fill)
		}
	}
	return out
}

func FuzzIPC(f *testing.F) {
	for _, s := range seedStreams() {
		f.Add(s)
		f.Add(s[:len(s)/2])
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		ca := memory.NewCheckedAllocator(mallocator.NewMallocator())
		if !feedAll(t, stream, "", feeder.TrackCMemory(capped{ca})) {
			require.Zero(t, ca.CurrentAlloc(), "Arrow memory leaked")
		}
	})
}

// TestWriteFuzzSeeds writes the seed corpora under testdata/fuzz when run
// with -update-fuzz-seeds.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*updateSeeds {
		t.Skip("run with -update-fuzz-seeds to rewrite testdata/fuzz")
	}
	write := func(target string, i int, vals ...any) {
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, v := range vals {
			switch x := v.(type) {
			case []byte:
				b.WriteString("[]byte(" + strconv.Quote(string(x)) + ")\n")
			case string:
				b.WriteString("string(" + strconv.Quote(x) + ")\n")
			}
		}
		dir := filepath.Join("testdata", "fuzz", target)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), b.Bytes(), 0o644))
	}
	n := 0
	for _, s := range seedStreams() {
		for _, m := range seedMappings {
			write("FuzzPlan", n, s, m)
			n++
		}
	}
	for i, s := range seedStreams() {
		write("FuzzIPC", 2*i, s)
		write("FuzzIPC", 2*i+1, s[:len(s)/2])
	}
}
