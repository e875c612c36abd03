package tune

import (
	"encoding/csv"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/gotflow/gotflow/internal/atomicfile"
)

// writeTables writes trials.csv and trials.parquet: one row per trial with
// its id, status, one column per parameter named params_<name> (float64
// for double, int64 for int, string for categorical), the final and best objective, the best
// epoch, epochs run, wall seconds, stop reason, error and export path.
func writeTables(dir string, sp *Space, trials []*Trial) error {
	fields := []arrow.Field{{Name: "id", Type: arrow.BinaryTypes.String}, {Name: "status", Type: arrow.BinaryTypes.String}}
	for _, p := range sp.Parameters {
		t := arrow.DataType(arrow.BinaryTypes.String)
		switch p.ParameterType {
		case "double":
			t = arrow.PrimitiveTypes.Float64
		case "int":
			t = arrow.PrimitiveTypes.Int64
		}
		fields = append(fields, arrow.Field{Name: "params_" + p.Name, Type: t, Nullable: true})
	}
	obj := sp.Objective.ObjectiveMetricName
	fields = append(fields,
		arrow.Field{Name: obj, Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		arrow.Field{Name: "best_" + obj, Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		arrow.Field{Name: "best_epoch", Type: arrow.PrimitiveTypes.Int64},
		arrow.Field{Name: "epochs", Type: arrow.PrimitiveTypes.Int64},
		arrow.Field{Name: "wall_seconds", Type: arrow.PrimitiveTypes.Float64},
		arrow.Field{Name: "stop_reason", Type: arrow.BinaryTypes.String},
		arrow.Field{Name: "error", Type: arrow.BinaryTypes.String},
		arrow.Field{Name: "export", Type: arrow.BinaryTypes.String},
	)
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	header := make([]string, len(fields))
	for i, f := range fields {
		header[i] = f.Name
	}
	rows := [][]string{header}
	num := func(x Metric) string {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return ""
		}
		return strconv.FormatFloat(float64(x), 'g', -1, 64)
	}
	putF := func(fb *array.Float64Builder, x float64) {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			fb.AppendNull()
		} else {
			fb.Append(x)
		}
	}
	for _, t := range trials {
		row := []string{t.ID, t.Status}
		b.Field(0).(*array.StringBuilder).Append(t.ID)
		b.Field(1).(*array.StringBuilder).Append(t.Status)
		for i, p := range sp.Parameters {
			v, ok := t.Params[p.Name]
			row = append(row, string(v))
			fb := b.Field(2 + i)
			switch fb := fb.(type) {
			case *array.Float64Builder:
				x, err := strconv.ParseFloat(string(v), 64)
				if !ok || err != nil {
					fb.AppendNull()
				} else {
					fb.Append(x)
				}
			case *array.Int64Builder:
				x, err := strconv.ParseInt(string(v), 10, 64)
				if !ok || err != nil {
					fb.AppendNull()
				} else {
					fb.Append(x)
				}
			case *array.StringBuilder:
				if ok {
					fb.Append(string(v))
				} else {
					fb.AppendNull()
				}
			}
		}
		k := 2 + len(sp.Parameters)
		putF(b.Field(k).(*array.Float64Builder), float64(t.Final))
		putF(b.Field(k+1).(*array.Float64Builder), float64(t.Best))
		b.Field(k + 2).(*array.Int64Builder).Append(int64(t.BestEpoch))
		b.Field(k + 3).(*array.Int64Builder).Append(int64(len(t.Metrics)))
		b.Field(k + 4).(*array.Float64Builder).Append(t.Wall)
		b.Field(k + 5).(*array.StringBuilder).Append(t.StopReason)
		b.Field(k + 6).(*array.StringBuilder).Append(t.Error)
		b.Field(k + 7).(*array.StringBuilder).Append(t.Export)
		row = append(row, num(t.Final), num(t.Best), strconv.Itoa(t.BestEpoch), strconv.Itoa(len(t.Metrics)),
			strconv.FormatFloat(t.Wall, 'f', 3, 64), t.StopReason, t.Error, t.Export)
		rows = append(rows, row)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	if err := atomicfile.Write(filepath.Join(dir, "trials.csv"), func(w io.Writer) error {
		cw := csv.NewWriter(w)
		if err := cw.WriteAll(rows); err != nil {
			return err
		}
		cw.Flush()
		return cw.Error()
	}); err != nil {
		return fmt.Errorf("tune: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, "trials.parquet"), func(w io.Writer) error {
		tbl := array.NewTableFromRecords(schema, []arrow.RecordBatch{rec})
		defer tbl.Release()
		return pqarrow.WriteTable(tbl, w, max(tbl.NumRows(), 1), nil, pqarrow.DefaultWriterProps())
	}); err != nil {
		return fmt.Errorf("tune: %w", err)
	}
	return nil
}

// copyDir replaces dst with a copy of the directory src: the copy is made
// beside dst and published with atomicfile.CreateDir (synced, renamed into
// place), so dst is always whole.
func copyDir(src, dst string) error {
	d, err := atomicfile.CreateDir(dst)
	if err != nil {
		return err
	}
	defer d.Abort()
	err = filepath.WalkDir(src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(d.Path(), rel)
		if e.IsDir() {
			return os.MkdirAll(to, atomicfile.DirMode)
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, atomicfile.FileMode)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		return err
	}
	return d.Commit()
}
