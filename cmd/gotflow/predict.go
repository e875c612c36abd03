package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
)

// pairs is a repeatable "a=b" flag.
type pairs struct {
	name string
	m    map[string]string
	keys []string
}

func (p *pairs) String() string { return strings.Join(p.keys, ",") }

func (p *pairs) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" || val == "" {
		return fmt.Errorf("want %s, got %q", p.name, v)
	}
	if p.m == nil {
		p.m = map[string]string{}
	}
	if _, dup := p.m[k]; dup {
		return fmt.Errorf("%q given twice", k)
	}
	p.m[k] = val
	p.keys = append(p.keys, k)
	return nil
}

type predictFlags struct {
	model, kind, signature, tags, weights string
	input, output, where                  string
	raw, binary, quiet, cast              bool
	ipc, outputsOnly                      bool
	keep, drop                            string
	batch, threads, interOp, inFlight     int
	readers, ahead                        int
	show                                  int
	inMap                                 mappingFlag
	outMap                                pairs
}

func runPredict(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("predict", stderr)
	var f predictFlags
	f.outMap.name = "OUTPUT=COLUMN"
	fs.StringVar(&f.model, "model", "", "model: SavedModel directory, frozen GraphDef, TF1 checkpoint or bundle (required)")
	fs.StringVar(&f.kind, "kind", "", "model kind: saved_model, frozen_graph, checkpoint or bundle (default: detect)")
	fs.StringVar(&f.signature, "signature", "", "signature key (default serving_default)")
	fs.StringVar(&f.tags, "tags", "", "comma-separated tag set of the meta graph (default serve)")
	fs.BoolVar(&f.raw, "raw", false, "name inputs and outputs by graph tensor (op:idx) instead of signature alias")
	fs.StringVar(&f.weights, "weights", "", "for bundles: weights file to freeze instead of the bundle's initial weights")
	fs.StringVar(&f.input, "data", "", "input data: a Parquet, Arrow IPC or CSV file, a directory or a glob (required)")
	fs.StringVar(&f.input, "input", "", "the same as --data")
	fs.StringVar(&f.where, "where", "", "column=value: predict only the rows whose column equals value (e.g. split=heldout)")
	fs.StringVar(&f.output, "output", "", "output file (required)")
	fs.Var(&f.inMap, "map", "COLUMN=INPUT [dtype=T] [shape=D,..] [fill=V] [cast] [len=N] [pad=V]: feed INPUT from COLUMN, and how (repeatable, or ';'-separated)")
	fs.Var(&f.outMap, "out-map", "OUTPUT=COLUMN: append OUTPUT as COLUMN (repeatable)")
	fs.IntVar(&f.batch, "batch-size", estimator.DefaultBatchSize, "rows per run")
	fs.IntVar(&f.threads, "threads", 0, "TensorFlow intra-op threads (0: one per core)")
	fs.IntVar(&f.interOp, "inter-op-threads", 0, "TensorFlow inter-op threads (0: one per core)")
	fs.IntVar(&f.inFlight, "in-flight", 0, "batches run at once (default 2)")
	fs.IntVar(&f.readers, "readers", 0, "Parquet row groups (or files) decoded at once (0: one per 4 cores for Parquet decoded directly into tensors' memory, else one per core)")
	fs.IntVar(&f.ahead, "decode-ahead", 0, "records decoded ahead of the model (0: 2 per reader)")
	fs.BoolVar(&f.cast, "cast", false, "allow lossy column conversions (float64 → float32, int64 → int32), e.g. for CSV input")
	fs.BoolVar(&f.binary, "binary-strings", false, "write string outputs as binary columns (for bytes that are not UTF-8)")
	fs.IntVar(&f.show, "show", 0, "print the first N output rows' appended columns to stdout")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress output")
	fs.BoolVar(&f.ipc, "ipc", false, "read an Arrow IPC stream on stdin, write one on stdout (no --data, --output)")
	fs.BoolVar(&f.outputsOnly, "outputs-only", false, "write only the output columns, not the input columns before them")
	fs.StringVar(&f.keep, "keep", "", "comma-separated input columns to write before the outputs (default: all)")
	fs.StringVar(&f.drop, "drop", "", "comma-separated input columns not to write (the others are kept)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := f.check(fs); err != nil {
		return err
	}
	if f.ipc {
		return predictIPC(ctx, &f, os.Stdin, stdout)
	}
	return predict(ctx, &f, stdout, stderr)
}

func (f *predictFlags) check(fs *flag.FlagSet) error {
	if f.keep != "" && f.drop != "" || f.outputsOnly && (f.keep != "" || f.drop != "") {
		return fmt.Errorf("%w: give one of --keep, --drop and --outputs-only", errUsage)
	}
	if f.ipc {
		if f.input != "" || f.output != "" || f.where != "" || f.show != 0 {
			return fmt.Errorf("%w: --ipc reads stdin and writes stdout; drop --data, --output, --where and --show", errUsage)
		}
		if f.model == "" {
			return fmt.Errorf("%w: --model required", errUsage)
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
		}
		if f.batch <= 0 {
			return fmt.Errorf("%w: --batch-size %d; want > 0", errUsage, f.batch)
		}
		if f.threads < 0 || f.interOp < 0 || f.inFlight < 0 {
			return fmt.Errorf("%w: --threads, --inter-op-threads and --in-flight must be >= 0", errUsage)
		}
		return nil
	}
	var missing []string
	for name, v := range map[string]string{"--model": f.model, "--data": f.input, "--output": f.output} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s required", errUsage, strings.Join(sortedStrings(missing), ", "))
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if _, err := sinkFormat(f.output); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if f.batch <= 0 {
		return fmt.Errorf("%w: --batch-size %d; want > 0", errUsage, f.batch)
	}
	if f.threads < 0 || f.interOp < 0 || f.inFlight < 0 || f.show < 0 || f.readers < 0 || f.ahead < 0 {
		return fmt.Errorf("%w: --threads, --inter-op-threads, --in-flight, --readers, --decode-ahead and --show must be >= 0", errUsage)
	}
	return nil
}

func sortedStrings(s []string) []string {
	out := append([]string(nil), s...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func sinkFormat(path string) (string, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".parquet", ".pq":
		return "parquet", nil
	case ".arrow", ".ipc", ".feather":
		return "ipc", nil
	case ".arrows":
		return "ipc-stream", nil
	}
	return "", fmt.Errorf("--output %q: unsupported extension; want .parquet, .arrow, .ipc, .feather or .arrows", path)
}

func createSink(path string, schema *arrow.Schema) (arrowio.Sink, error) {
	kind, err := sinkFormat(path)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "parquet":
		return arrowio.CreateParquet(path, schema)
	case "ipc-stream":
		return arrowio.CreateIPC(path, schema, arrowio.IPCStreamFormat())
	}
	return arrowio.CreateIPC(path, schema)
}

func predict(ctx context.Context, f *predictFlags, stdout, stderr io.Writer) (err error) {
	start := time.Now()
	ds, err := arrowio.OpenDataset(f.input)
	if err != nil {
		return err
	}
	files, schema := ds.Files(), ds.Schema()
	ds.Close()
	total := parquetRows(files)
	// Records sized for the data's row width, row groups decoded in
	// parallel and delivered in order.
	src, err := arrowio.OpenOrdered(files, f.readers, arrowio.RowsPerRecord(schema, f.batch), arrowio.DecodeAhead(f.ahead))
	if err != nil {
		return err
	}
	if f.where != "" {
		col, val, ok := strings.Cut(f.where, "=")
		if !ok || col == "" {
			src.Close()
			return fmt.Errorf("%w: --where wants column=value, got %q", errUsage, f.where)
		}
		if src, err = arrowio.Where(src, col, val); err != nil {
			return err
		}
		total = 0 // unknown until read
	}
	m := f.tfModel()
	defer m.Close()
	prog := newPredictProgress(stderr, total, f.quiet)
	m.Hooks.OnBatch = func(b estimator.BatchInfo) { prog.update(b.TotalRows) }
	s, schema, cols, err := f.transform(ctx, m, src)
	if err != nil {
		return err
	}
	defer s.Close()
	nIn := schema.NumFields() - len(s.OutputColumns())
	sink, err := createSink(f.output, schema)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			sink.Abort()
		}
	}()
	shown := 0
	for s.Next() {
		rec := projectRecord(s.RecordBatch(), schema, cols)
		err := sink.Write(rec)
		if err == nil && shown < f.show {
			if shown == 0 {
				printHeader(stdout, schema, nIn)
			}
			shown += printRows(stdout, rec, nIn, shown, f.show-shown)
		}
		rec.Release()
		if err != nil {
			return fmt.Errorf("write %s: %w", f.output, err)
		}
	}
	if err := s.Err(); err != nil {
		prog.abort()
		return err
	}
	if err := ctx.Err(); err != nil {
		prog.abort()
		return err
	}
	if err := sink.Close(); err != nil {
		prog.abort()
		return fmt.Errorf("finish %s: %w", f.output, err)
	}
	prog.done(s.Rows(), f.output, time.Since(start))
	return nil
}

// tfModel is the model the flags describe.
func (f *predictFlags) tfModel() *estimator.TFModel {
	return &estimator.TFModel{
		Path: f.model, Kind: f.kind, SignatureDefKey: f.signature, RawTensorNames: f.raw, Weights: f.weights,
		InputMapping: f.inMap.short(), Inputs: f.inMap.full(), OutputMapping: f.outMap.m, BatchSize: f.batch, TagSet: splitTags(f.tags),
		IntraOpThreads: f.threads, InterOpThreads: f.interOp, InFlight: f.inFlight, BinaryStrings: f.binary, Cast: f.cast,
	}
}

// transform starts the model over src and works out the columns written:
// the stream, the written schema and the stream columns it keeps. The
// caller closes the stream (on error there is none to close).
func (f *predictFlags) transform(ctx context.Context, m *estimator.TFModel, src arrowio.Source) (*estimator.Stream, *arrow.Schema, []int, error) {
	s, err := m.Transform(ctx, src)
	if err != nil {
		return nil, nil, nil, err
	}
	schema := s.Schema()
	if err := s.Err(); err != nil {
		s.Close()
		return nil, nil, nil, err
	}
	cols, err := f.passThrough(schema, schema.NumFields()-len(s.OutputColumns()))
	if err != nil {
		s.Close()
		return nil, nil, nil, err
	}
	return s, project(schema, cols), cols, nil
}

// passThrough returns the indices of the columns written: the input
// columns --keep names (or all but those --drop names, or none with
// --outputs-only), then every output column (from nIn on).
func (f *predictFlags) passThrough(schema *arrow.Schema, nIn int) ([]int, error) {
	var inputs []string
	for _, fl := range schema.Fields()[:nIn] {
		inputs = append(inputs, fl.Name)
	}
	names := func(flag, list string) (map[string]bool, error) {
		set := map[string]bool{}
		for _, c := range strings.Split(list, ",") {
			if c = strings.TrimSpace(c); c == "" {
				continue
			}
			if !slices.Contains(inputs, c) {
				return nil, fmt.Errorf("%w: %s %q: no such input column (columns: %s)", errUsage, flag, c, strings.Join(inputs, ", "))
			}
			set[c] = true
		}
		return set, nil
	}
	var cols []int
	switch {
	case f.outputsOnly:
	case f.keep != "":
		keep, err := names("--keep", f.keep)
		if err != nil {
			return nil, err
		}
		for i, c := range inputs {
			if keep[c] {
				cols = append(cols, i)
			}
		}
	default:
		drop, err := names("--drop", f.drop)
		if err != nil {
			return nil, err
		}
		for i, c := range inputs {
			if !drop[c] {
				cols = append(cols, i)
			}
		}
	}
	for i := nIn; i < schema.NumFields(); i++ {
		cols = append(cols, i)
	}
	return cols, nil
}

// project keeps the schema's fields at cols.
func project(schema *arrow.Schema, cols []int) *arrow.Schema {
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		fields[i] = schema.Field(c)
	}
	md := schema.Metadata()
	return arrow.NewSchema(fields, &md)
}

// projectRecord returns a new reference to rec's columns at cols, with
// the projected schema; the caller releases it.
func projectRecord(rec arrow.RecordBatch, schema *arrow.Schema, cols []int) arrow.RecordBatch {
	arrs := make([]arrow.Array, len(cols))
	for i, c := range cols {
		arrs[i] = rec.Column(c)
	}
	return array.NewRecordBatch(schema, arrs, rec.NumRows())
}

// predictIPC runs the model over the Arrow IPC stream on in and writes the
// results to out as an Arrow IPC stream, each batch as soon as it is
// computed: the input is never held whole, and a reader of out sees the
// first results while it is still writing in. An empty input stream (the
// schema and no batch) gives an output stream with the schema alone.
func predictIPC(ctx context.Context, f *predictFlags, in io.Reader, out io.Writer) error {
	src, err := arrowio.NewIPCStream(in)
	if err != nil {
		return fmt.Errorf("predict --ipc: read stdin: %w", err)
	}
	m := f.tfModel()
	defer m.Close()
	s, schema, cols, err := f.transform(ctx, m, src)
	if err != nil {
		return err
	}
	defer s.Close()
	bw := bufio.NewWriterSize(out, 1<<16)
	w := ipc.NewWriter(bw, ipc.WithSchema(schema))
	write := func(rec arrow.RecordBatch) error {
		rec = projectRecord(rec, schema, cols)
		defer rec.Release()
		if err := w.Write(rec); err != nil {
			return err
		}
		return bw.Flush()
	}
	for s.Next() {
		if err := write(s.RecordBatch()); err != nil {
			return fmt.Errorf("predict --ipc: write stdout: %w", err)
		}
	}
	if err := s.Err(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("predict --ipc: write stdout: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("predict --ipc: write stdout: %w", err)
	}
	return nil
}

func printHeader(w io.Writer, schema *arrow.Schema, from int) {
	names := []string{"row"}
	for _, fl := range schema.Fields()[from:] {
		names = append(names, fl.Name)
	}
	fmt.Fprintln(w, strings.Join(names, "\t"))
}

// printRows prints up to max rows of rec's columns from index from on,
// numbering them from first; it returns how many it printed.
func printRows(w io.Writer, rec arrow.RecordBatch, from, first, max int) int {
	n := min(int(rec.NumRows()), max)
	for r := range n {
		parts := []string{fmt.Sprint(first + r)}
		for c := from; c < int(rec.NumCols()); c++ {
			parts = append(parts, valueString(rec.Column(c), r))
		}
		fmt.Fprintln(w, strings.Join(parts, "\t"))
	}
	return n
}

func valueString(a arrow.Array, i int) string {
	switch c := a.(type) {
	case *array.FixedSizeList:
		w := int(c.DataType().(*arrow.FixedSizeListType).Len())
		vals := c.ListValues()
		off := (c.Offset() + i) * w
		parts := make([]string, w)
		for k := range w {
			parts[k] = valueString(vals, off+k)
		}
		return "[" + strings.Join(parts, " ") + "]"
	case *array.Float32:
		return fmt.Sprintf("%.6f", c.Value(i))
	case *array.Float64:
		return fmt.Sprintf("%.6f", c.Value(i))
	}
	return a.ValueStr(i)
}

// parquetRows returns the total row count when every file is Parquet (read
// from the footers), else -1.
func parquetRows(files []string) int64 {
	var total int64
	for _, p := range files {
		ext := strings.ToLower(filepath.Ext(p))
		if ext != ".parquet" && ext != ".pq" {
			return -1
		}
		r, err := file.OpenParquetFile(p, false)
		if err != nil {
			return -1
		}
		total += r.NumRows()
		r.Close()
	}
	return total
}

// progress reports rows/s: a redrawn bar on a terminal, a log line every
// few seconds otherwise.
type predictProgress struct {
	w     io.Writer
	tty   bool
	quiet bool
	total int64
	start time.Time
	last  time.Time
	drawn bool
}

func newPredictProgress(w io.Writer, total int64, quiet bool) *predictProgress {
	return &predictProgress{w: w, tty: isTerminal(w), total: total, quiet: quiet, start: time.Now()}
}

func (p *predictProgress) update(rows int64) {
	if p.quiet {
		return
	}
	now := time.Now()
	interval := 5 * time.Second
	if p.tty {
		interval = 100 * time.Millisecond
	}
	if now.Sub(p.last) < interval {
		return
	}
	p.last = now
	rate := float64(rows) / now.Sub(p.start).Seconds()
	if !p.tty {
		fmt.Fprintf(p.w, "predict: %d rows, %.0f rows/s\n", rows, rate)
		return
	}
	line := fmt.Sprintf("%d rows  %.0f rows/s", rows, rate)
	if p.total > 0 {
		const width = 30
		done := int(float64(width) * float64(rows) / float64(p.total))
		done = min(done, width)
		line = fmt.Sprintf("[%s%s] %3.0f%%  %d/%d rows  %.0f rows/s", strings.Repeat("=", done), strings.Repeat(" ", width-done),
			100*float64(rows)/float64(p.total), rows, p.total, rate)
	}
	fmt.Fprintf(p.w, "\r%s\x1b[K", line)
	p.drawn = true
}

func (p *predictProgress) abort() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func (p *predictProgress) done(rows int64, out string, d time.Duration) {
	p.abort()
	if p.quiet {
		return
	}
	fmt.Fprintf(p.w, "predict: wrote %d rows to %s in %.2fs (%.0f rows/s)\n", rows, out, d.Seconds(), float64(rows)/d.Seconds())
}
