package arrowio

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/stretchr/testify/require"
)

// fastFields are the layouts the direct decoder takes: fixed-size lists of
// every element type (widths below, at and above a byte of levels, and 1),
// flat columns, nullable or not (nullable fields have definition levels).
var fastFields = []arrow.Field{
	{Name: "f32x5", Type: arrow.FixedSizeListOf(5, arrow.PrimitiveTypes.Float32), Nullable: true},
	{Name: "f64x3", Type: arrow.FixedSizeListOfNonNullable(3, arrow.PrimitiveTypes.Float64)},
	{Name: "i32x8", Type: arrow.FixedSizeListOf(8, arrow.PrimitiveTypes.Int32), Nullable: true},
	{Name: "i64x1", Type: arrow.FixedSizeListOf(1, arrow.PrimitiveTypes.Int64)},
	{Name: "f32x33", Type: arrow.FixedSizeListOf(33, arrow.PrimitiveTypes.Float32), Nullable: true},
	{Name: "f32", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
	{Name: "i64", Type: arrow.PrimitiveTypes.Int64},
}

// fastValue is element k of row r of column c; card > 0 limits the distinct
// values (so that dictionaries stay in use).
func fastValue(c, r, k, card int) int64 {
	v := int64(r*97+k*13+c*1009) ^ int64(k)<<9
	if card > 0 {
		v %= int64(card)
	}
	return v - 50
}

// fastRecord builds rows [start, start+n) from scratch (arrow-go v18.8.0's
// Parquet writer ignores the offset of a sliced fixed-size list).
func fastRecord(schema *arrow.Schema, start, n, card int) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for c, f := range schema.Fields() {
		width, fb := 1, b.Field(c)
		if l, ok := f.Type.(*arrow.FixedSizeListType); ok {
			width = int(l.Len())
			lb := fb.(*array.FixedSizeListBuilder)
			for range n {
				lb.Append(true)
			}
			fb = lb.ValueBuilder()
		}
		for r := start; r < start+n; r++ {
			for k := range width {
				v := fastValue(c, r, k, card)
				switch vb := fb.(type) {
				case *array.Float32Builder:
					vb.Append(float32(v) / 4)
				case *array.Float64Builder:
					vb.Append(float64(v) / 8)
				case *array.Int32Builder:
					vb.Append(int32(v))
				case *array.Int64Builder:
					vb.Append(v)
				}
			}
		}
	}
	return b.NewRecordBatch()
}

func writeFast(t *testing.T, path string, schema *arrow.Schema, rows, rowGroup, card int, props ...parquet.WriterProperty) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	props = append([]parquet.WriterProperty{parquet.WithMaxRowGroupLength(int64(rowGroup))}, props...)
	w, err := pqarrow.NewFileWriter(schema, f, parquet.NewWriterProperties(props...), pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	require.NoError(t, err)
	for off := 0; off < rows; off += rowGroup {
		rec := fastRecord(schema, off, min(rowGroup, rows-off), card)
		require.NoError(t, w.Write(rec))
		rec.Release()
	}
	require.NoError(t, w.Close())
}

// readAll reads src to the end and returns each column's values as int64
// (floats scaled back), in row order.
func readAll(t *testing.T, src Source) [][]int64 {
	t.Helper()
	defer src.Close()
	var out [][]int64
	for {
		rec, err := src.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		if out == nil {
			out = make([][]int64, rec.NumCols())
		}
		for c, col := range rec.Columns() {
			if l, ok := col.(*array.FixedSizeList); ok {
				w := int(l.DataType().(*arrow.FixedSizeListType).Len())
				col = array.NewSlice(l.ListValues(), int64(l.Offset()*w), int64((l.Offset()+l.Len())*w))
				defer col.Release()
			}
			require.Zero(t, col.NullN())
			for i := range col.Len() {
				switch a := col.(type) {
				case *array.Float32:
					out[c] = append(out[c], int64(a.Value(i)*4))
				case *array.Float64:
					out[c] = append(out[c], int64(a.Value(i)*8))
				case *array.Int32:
					out[c] = append(out[c], int64(a.Value(i)))
				case *array.Int64:
					out[c] = append(out[c], a.Value(i))
				}
			}
		}
		rec.Release()
	}
}

// TestDirectDecoderMatchesValues writes the decoder's layouts with every
// page layout a writer makes — PLAIN and dictionary pages (and a fallback
// from one to the other inside a chunk), data pages V1 and V2, pages that
// split lists, several codecs — and checks that the direct decoder takes
// each row group and returns every value in order.
func TestDirectDecoderMatchesValues(t *testing.T) {
	const rows, rowGroup = 2100, 700
	cases := []struct {
		name  string
		card  int
		dict  bool // the chunks have a dictionary page
		props []parquet.WriterProperty
	}{
		{"plain-snappy", 0, false, []parquet.WriterProperty{parquet.WithDictionaryDefault(false), parquet.WithCompression(compress.Codecs.Snappy)}},
		{"dictionary", 11, true, []parquet.WriterProperty{parquet.WithCompression(compress.Codecs.Snappy)}},
		{"dictionary-wide-indices", 3000, true, []parquet.WriterProperty{parquet.WithCompression(compress.Codecs.Snappy)}},
		{"dictionary-fallback", 0, true, []parquet.WriterProperty{parquet.WithDictionaryPageSizeLimit(512), parquet.WithDataPageSize(1 << 10)}},
		{"v2-zstd", 0, false, []parquet.WriterProperty{parquet.WithDictionaryDefault(false), parquet.WithDataPageVersion(parquet.DataPageV2), parquet.WithCompression(compress.Codecs.Zstd)}},
		{"v2-dictionary", 5, true, []parquet.WriterProperty{parquet.WithDataPageVersion(parquet.DataPageV2)}},
		{"small-pages-uncompressed", 0, false, []parquet.WriterProperty{parquet.WithDictionaryDefault(false), parquet.WithDataPageSize(300), parquet.WithBatchSize(7)}},
		{"gzip", 0, true, []parquet.WriterProperty{parquet.WithCompression(compress.Codecs.Gzip)}},
	}
	schema := arrow.NewSchema(fastFields, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "data.parquet")
			writeFast(t, path, schema, rows, rowGroup, tc.card, tc.props...)
			r, err := file.OpenParquetFile(path, false)
			require.NoError(t, err)
			for c := range fastFields {
				cc, err := r.MetaData().RowGroup(0).ColumnChunk(c)
				require.NoError(t, err)
				require.Equal(t, tc.dict, cc.HasDictionaryPage(), "column %d", c)
			}
			r.Close()
			for g := range rows / rowGroup {
				src, err := openFastRowGroup(path, g, fastLayout{schema: schema}, 100, 0)
				require.NoError(t, err)
				require.NotNil(t, src, "row group %d takes the general reader", g)
				src.Close()
			}
			want := make([][]int64, len(fastFields))
			for c, f := range fastFields {
				width := 1
				if l, ok := f.Type.(*arrow.FixedSizeListType); ok {
					width = int(l.Len())
				}
				for r := range rows {
					for k := range width {
						want[c] = append(want[c], fastValue(c, r, k, tc.card))
					}
				}
			}
			for _, readRows := range []int{1, 64, 333, 1000} {
				src, err := OpenOrdered([]string{path}, 2, readRows)
				require.NoError(t, err)
				got := readAll(t, src)
				for c := range fastFields {
					require.Equal(t, want[c], got[c], "column %s, readRows %d", fastFields[c].Name, readRows)
				}
			}
		})
	}
}

// TestDirectDecoderRejectsUnevenLists reads files whose Arrow schema says
// fixed-size lists while their Parquet lists
// have other lengths (with the same total): the repetition levels give it
// away.
func TestDirectDecoderRejectsUnevenLists(t *testing.T) {
	// lists of 32 are encoded the same way list after list: the uneven
	// pair sits among them
	even32 := func(n int) []int {
		l := make([]int, n)
		for i := range l {
			l[i] = 32
		}
		return l
	}
	cases := []struct {
		width int
		lens  []int
	}{
		{4, []int{4, 4, 3, 5, 4, 4}}, {4, []int{2, 6, 4, 4, 4, 4, 4, 4}}, {4, []int{4, 4, 4, 4, 4, 4, 4, 1, 7}}, {4, []int{12, 2, 2, 2, 2}},
		{32, append(append(even32(40), 31, 33), even32(20)...)}, {32, append(append(even32(40), 16, 48), even32(20)...)},
	}
	for i, tc := range cases {
		width, lens := tc.width, tc.lens
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			listSchema := arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true}}, nil)
			fslSchema := arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.FixedSizeListOf(int32(width), arrow.PrimitiveTypes.Float32), Nullable: true}}, nil)
			lb := array.NewListBuilder(memory.DefaultAllocator, arrow.PrimitiveTypes.Float32)
			vb := lb.ValueBuilder().(*array.Float32Builder)
			for _, n := range lens {
				lb.Append(true)
				for k := range n {
					vb.Append(float32(k))
				}
			}
			col := lb.NewArray()
			lb.Release()
			rec := array.NewRecordBatch(listSchema, []arrow.Array{col}, int64(len(lens)))
			col.Release()
			defer rec.Release()
			path := filepath.Join(t.TempDir(), fmt.Sprintf("uneven%d.parquet", i))
			f, err := os.Create(path)
			require.NoError(t, err)
			w, err := pqarrow.NewFileWriter(listSchema, f, parquet.NewWriterProperties(), pqarrow.DefaultWriterProps())
			require.NoError(t, err)
			require.NoError(t, w.AppendKeyValueMetadata("ARROW:schema", base64.StdEncoding.EncodeToString(flight.SerializeSchema(fslSchema, memory.DefaultAllocator))))
			require.NoError(t, w.Write(rec))
			require.NoError(t, w.Close())

			fast, err := openFastRowGroup(path, 0, fastLayout{schema: fslSchema}, 64, 0)
			require.NoError(t, err)
			require.NotNil(t, fast, "the general reader would be used")
			fast.Close()
			src, err := OpenOrdered([]string{path}, 1, 64)
			require.NoError(t, err)
			defer src.Close()
			require.True(t, arrow.TypeEqual(fslSchema.Field(0).Type, src.Schema().Field(0).Type), "schema %s", src.Schema())
			_, err = src.Next(context.Background())
			require.ErrorIs(t, err, errListWidth)
		})
	}
}

func TestRepBytesMatch(t *testing.T) {
	// lists of width w starting at level pos: bit j of byte b is 0 where
	// pos+8b+j is a multiple of w
	for _, w := range []int64{1, 2, 3, 5, 8, 9, 32, 784} {
		for _, off := range []int64{0, 1, w - 1} {
			off %= w
			var packed []byte
			for b := range 40 {
				var x byte
				for j := range 8 {
					if (off+int64(b*8+j))%w != 0 {
						x |= 1 << j
					}
				}
				packed = append(packed, x)
			}
			for _, c := range []int64{1, 7, 8, 9, 320} {
				require.True(t, repBytesMatch(packed, c, off, w), "w=%d off=%d c=%d", w, off, c)
				bad := append([]byte(nil), packed...)
				bad[(c-1)/8] ^= 1 << ((c - 1) % 8)
				require.False(t, repBytesMatch(bad, c, off, w), "w=%d off=%d c=%d", w, off, c)
			}
		}
	}
}

// TestRepLevelsPeriodic: lists of 32 encoded the way writers do (a
// bit-packed group of 0,1,1,1,1,1,1,1 then an RLE run of 24 ones) are
// checked by their repeating bytes; any byte changed is caught.
func TestRepLevelsPeriodic(t *testing.T) {
	one := []byte{0x03, 0xfe, 24 << 1, 0x01}
	var data []byte
	for range 100 {
		data = append(data, one...)
	}
	require.Equal(t, int64(4), listBytes(data, 32))
	require.NoError(t, checkRepLevels(data, 100*32, 0, 32))
	require.NoError(t, checkRepLevels(data[4:], 99*32, 32, 32))
	require.ErrorIs(t, checkRepLevels(data, 100*32, 1, 32), errListWidth, "not at a list start")
	for _, i := range []int{1, 2, 3, 201, 202, 203, 397, 398, 399} {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x10
		require.Error(t, checkRepLevels(bad, 100*32, 0, 32), "byte %d", i)
	}
}

// TestStreamUnitsUseDirectDecoder reads every unit of a dataset whose
// files the direct decoder takes, whole and projected onto some columns
// (named out of file order), and compares each record with the general
// reader's: same schema, same values, same row counts.
func TestStreamUnitsUseDirectDecoder(t *testing.T) {
	dir := t.TempDir()
	schema := arrow.NewSchema(fastFields, nil)
	writeFast(t, filepath.Join(dir, "a.parquet"), schema, 700, 300, 0)
	writeFast(t, filepath.Join(dir, "b.parquet"), schema, 250, 100, 7)
	for _, cols := range [][]string{nil, {"i64", "f32x5"}, {"f64x3"}} {
		var opts []SourceOption
		if cols != nil {
			opts = append(opts, Columns(cols...))
		}
		d, err := ScanDataset(dir, ScanConfig{Options: opts})
		require.NoError(t, err)
		require.Len(t, d.Pieces(), 3+3)
		for i, u := range d.units {
			o := newSourceOptions(append(opts, ReadRows(64)))
			o.columns = cols
			fast, err := openFastUnit(u.File, u.Index, o)
			require.NoError(t, err)
			require.NotNil(t, fast, "unit %d takes the general reader", i)
			general, err := openParquet(u.File, func() sourceOptions { o.rowGroups = []int{u.Index}; return o }())
			require.NoError(t, err)
			require.True(t, fast.Schema().Equal(general.Schema()), "unit %d: %s vs %s", i, fast.Schema(), general.Schema())
			require.Equal(t, readAll(t, general), readAll(t, fast), "unit %d, columns %v", i, cols)
		}
	}
	// A projected column the file lacks is left to the general reader,
	// which names it.
	o := newSourceOptions(nil)
	o.columns = []string{"i64", "nope"}
	fast, err := openFastUnit(filepath.Join(dir, "a.parquet"), 0, o)
	require.NoError(t, err)
	require.Nil(t, fast)
}
