// Command inference measures batch inference side by side: gotflow's
// TFModel.Transform against Python TensorFlow (the project's .venv) on the
// same SavedModels, the same Parquet files, the same batch sizes and thread
// settings, plus the raw C API floors: one goroutine looping TF_SessionRun
// on a pre-made tensor, and as many goroutines as gotflow keeps runs in
// flight (the equal-concurrency floor, the honest one for gotflow's own
// overhead); and gotflow from Parquet against gotflow in memory. It writes
// bench/results/inference.json.
//
//	go run ./bench/inference -out bench/results/inference.json
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/benchfmt"
	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
)

type model struct {
	name   string // "mlp", "cnn"
	dir    string
	input  string // signature input alias = column name
	width  int    // float32 values per row
	output string
	rows   map[int]int // batch size → rows per pass
}

type run struct {
	Name      string `json:"name"`
	Model     string `json:"model"`
	Signature string `json:"signature"`
	Input     string `json:"input"`
	Column    string `json:"column"`
	Data      string `json:"data"`
	Batch     int    `json:"batch"`
	Repeats   int    `json:"repeats"`

	m *model
}

type pyResult struct {
	Name     string  `json:"name"`
	Rows     int     `json:"rows"`
	Seconds  float64 `json:"seconds"`
	RowsPerS float64 `json:"rows_per_s"`
}

func main() {
	out := flag.String("out", "bench/results/inference.json", "where to write the results")
	threads := flag.Int("threads", 2, "TensorFlow intra-op and inter-op threads, on both sides")
	repeats := flag.Int("repeats", 4, "passes per measurement; the best is kept")
	scale := flag.Float64("scale", 1, "multiply every row count (e.g. 0.1 for a smoke run)")
	flag.IntVar(&inFlight, "in-flight", 0, "TFModel.InFlight (0: its default)")
	flag.IntVar(&readers, "readers", 0, "arrowio.OpenOrdered's readers (0: arrowio.DefaultReaders)")
	flag.IntVar(&decodeAhead, "decode-ahead", 0, "arrowio.DecodeAhead records (0: its default)")
	only := flag.String("only", "", "run only the runs whose name contains this")
	cpuProfile := flag.String("cpuprofile", "", "write a Go CPU profile of the whole run here")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	log.SetFlags(0)
	onlyRuns = *only

	if err := bench(*out, *threads, *repeats, *scale); err != nil {
		log.Printf("bench/inference: %v", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

var (
	onlyRuns    string
	inFlight    int
	readers     int
	decodeAhead int
)

func bench(out string, threads, repeats int, scale float64) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	models := []*model{
		{name: "mlp", dir: testmodels.Dir("mlp_savedmodel"), input: "features", width: 32, output: "output_0",
			rows: map[int]int{1: 4096, 64: 131072, 1024: 524288}},
		{name: "cnn", dir: testmodels.Dir("cnn_savedmodel"), input: "pixels", width: 784, output: "output_0",
			rows: map[int]int{1: 1024, 64: 8192, 1024: 16384}},
	}
	tmp, err := os.MkdirTemp("", "gotflow-bench-inference-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	var runs []run
	for _, m := range models {
		for _, b := range []int{1, 64, 1024} {
			if !strings.Contains(fmt.Sprintf("inference/%s/batch%d", m.name, b), onlyRuns) {
				continue
			}
			n := max(b, int(float64(m.rows[b])*scale))
			path := filepath.Join(tmp, fmt.Sprintf("%s_%d.parquet", m.name, n))
			if _, err := os.Stat(path); err != nil {
				if err := writeData(path, m.input, m.width, n); err != nil {
					return err
				}
			}
			runs = append(runs, run{Name: fmt.Sprintf("inference/%s/batch%d", m.name, b), Model: m.dir, Signature: "serving_default",
				Input: m.input, Column: m.input, Data: path, Batch: b, Repeats: repeats, m: m})
		}
	}

	py, err := startPython(ctx, threads)
	if err != nil {
		return err
	}
	defer py.close()
	var results []benchfmt.Result
	for _, r := range runs {
		res, err := measure(ctx, py, r, threads)
		if err != nil {
			return fmt.Errorf("%s: %w", r.Name, err)
		}
		results = append(results, res...)
	}
	if err := benchfmt.Write(out, results); err != nil {
		return err
	}
	fmt.Printf("wrote %s in %s\n", out, time.Since(start).Round(time.Second))
	return nil
}

// measure alternates passes of the four contenders for one run, so that all
// see the same machine load, and keeps each one's best pass.
func measure(ctx context.Context, py *pySide, r run, threads int) ([]benchfmt.Result, error) {
	gf, err := newGotflowPass(ctx, r, threads)
	if err != nil {
		return nil, err
	}
	defer gf.close()
	floor, err := newFloorPass(ctx, r, threads, gf.rows)
	if err != nil {
		return nil, err
	}
	defer floor.close()
	conc := inFlight
	if conc == 0 {
		conc = 2 // TFModel's default InFlight
	}
	best := map[string]float64{}
	keep := func(k string, rows int, d time.Duration) {
		if v := float64(rows) / d.Seconds(); v > best[k] {
			best[k] = v
		}
	}
	for i := range r.Repeats {
		rows, sec, err := py.pass(r)
		if err != nil {
			return nil, err
		}
		keep("python", rows, time.Duration(sec*float64(time.Second)))
		// The pass right after Python's shares the cores with its threads
		// winding down: the two gotflow passes take that place in turn.
		passes := []string{"parquet", "memory"}
		if i%2 == 1 {
			passes[0], passes[1] = passes[1], passes[0]
		}
		for _, p := range passes {
			pass := gf.parquet
			if p == "memory" {
				pass = gf.inMemory
			}
			n, d, err := pass(ctx)
			if err != nil {
				return nil, err
			}
			keep(p, n, d)
		}
		n, d, err := floor.pass(ctx)
		if err != nil {
			return nil, err
		}
		keep("floor", n, d)
		n, d, err = floor.concurrent(ctx, conc)
		if err != nil {
			return nil, err
		}
		keep("floor_equal", n, d)
	}
	common := fmt.Sprintf("%d rows per pass, best of %d alternating passes; intra=inter=%d TensorFlow threads on both sides; gotflow %d batches in flight",
		gf.rows, r.Repeats, threads, 2)
	vsPy := benchfmt.New(r.Name, "throughput", "rows/s", round(best["parquet"]), "python_tf", round(best["python"]))
	vsPy.Note = "same SavedModel and Parquet file; gotflow: TFModel.Transform from arrowio.OpenOrdered (" + readersNote() + "); Python: pyarrow read_table + signature calls on numpy slices; " + common
	mem := benchfmt.New(r.Name+"/in_memory_vs_c_api_floor", "throughput", "rows/s", round(best["memory"]), "c_api_floor", round(best["floor"]))
	mem.Note = "gotflow: TFModel.Transform over Arrow records already in memory (conversion, runs, appended outputs); floor: one goroutine looping TF_SessionRun on a pre-made input tensor; " + common
	pq := benchfmt.New(r.Name+"/parquet_vs_c_api_floor", "throughput", "rows/s", round(best["parquet"]), "c_api_floor", round(best["floor"]))
	pq.Note = "as in_memory_vs_c_api_floor, but gotflow also reads and decodes the Parquet file; " + common
	eq := benchfmt.New(r.Name+"/in_memory_vs_c_api_equal_concurrency", "throughput", "rows/s", round(best["memory"]), "c_api_equal_concurrency", round(best["floor_equal"]))
	eq.Note = fmt.Sprintf("floor: %d goroutines looping TF_SessionRun on the same session and pre-made input tensors, as many runs in flight as gotflow's InFlight; target >= 0.95; ", conc) + common
	pm := benchfmt.New(r.Name+"/parquet_vs_in_memory", "throughput", "rows/s", round(best["parquet"]), "gotflow_in_memory", round(best["memory"]))
	pm.Note = "gotflow from the Parquet file against gotflow over the same rows already in memory, the two passes taking turns right after Python's; target >= 0.9 at batch 1024; " + common
	fmt.Printf("%-26s in-memory vs equal-concurrency floor %9.0f (x%.3f), parquet vs in-memory x%.3f\n", r.Name, best["floor_equal"], eq.Ratio, pm.Ratio)
	fmt.Printf("%-26s gotflow parquet %9.0f  python %9.0f (x%.2f) | gotflow in-memory %9.0f  C API floor %9.0f (x%.3f) rows/s\n",
		r.Name, best["parquet"], best["python"], vsPy.Ratio, best["memory"], best["floor"], mem.Ratio)
	return []benchfmt.Result{vsPy, mem, pq, eq, pm}, nil
}

// readersNote describes OpenOrdered's settings.
func readersNote() string {
	r, a := readers, decodeAhead
	if r <= 0 {
		r = arrowio.DefaultReaders()
	}
	if a <= 0 {
		a = 2 * r
	}
	return fmt.Sprintf("%d reader(s) decoding row groups in order, %d records decoded ahead", r, a)
}

func round(v float64) float64 { return float64(int64(v + 0.5)) }

// writeData writes n rows of width float32 values (seeded) as a fixed-size
// list column to a Parquet file.
func writeData(path, column string, width, n int) error {
	typ := arrow.FixedSizeListOf(int32(width), arrow.PrimitiveTypes.Float32)
	schema := arrow.NewSchema([]arrow.Field{{Name: column, Type: typ}}, nil)
	// Several row groups, so that readers on both sides can decode in
	// parallel. Each Write holds exactly one row group: arrow-go v18.8.0's
	// writer repeats the first group's list values when it splits a record.
	rowGroup := max(1024, n/8)
	sink, err := arrowio.CreateParquet(path, schema, arrowio.RowGroupRows(int64(rowGroup)))
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(uint64(width), uint64(n)))
	mem := memory.DefaultAllocator
	chunk := rowGroup
	for off := 0; off < n; off += chunk {
		rows := min(chunk, n-off)
		b := array.NewFixedSizeListBuilder(mem, int32(width), arrow.PrimitiveTypes.Float32)
		vb := b.ValueBuilder().(*array.Float32Builder)
		vals := make([]float32, rows*width)
		for i := range vals {
			vals[i] = float32(rng.NormFloat64())
		}
		for range rows {
			b.Append(true)
		}
		vb.AppendValues(vals, nil)
		col := b.NewArray()
		b.Release()
		rec := array.NewRecordBatch(schema, []arrow.Array{col}, int64(rows))
		col.Release()
		err := sink.Write(rec)
		rec.Release()
		if err != nil {
			sink.Abort()
			return err
		}
	}
	return sink.Close()
}

// pySide is the Python benchmark process, driven one pass at a time.
type pySide struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startPython(ctx context.Context, threads int) (*pySide, error) {
	python := os.Getenv("GOTFLOW_PYTHON")
	if python == "" {
		python = filepath.Join(testmodels.Root(), ".venv", "bin", "python")
	}
	script := filepath.Join(testmodels.Root(), "scripts", "bench", "inference.py")
	cmd := exec.CommandContext(ctx, python, script, "--intra", fmt.Sprint(threads), "--inter", fmt.Sprint(threads))
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), "TF_CPP_MIN_LOG_LEVEL=2")
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("python side (%s %s): %w", python, script, err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	return &pySide{cmd: cmd, in: in, out: sc}, nil
}

func (p *pySide) pass(r run) (int, float64, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return 0, 0, err
	}
	if _, err := p.in.Write(append(b, '\n')); err != nil {
		return 0, 0, fmt.Errorf("python side: %w", err)
	}
	if !p.out.Scan() {
		return 0, 0, fmt.Errorf("python side exited: %v", p.out.Err())
	}
	var res pyResult
	if err := json.Unmarshal(p.out.Bytes(), &res); err != nil {
		return 0, 0, fmt.Errorf("python side printed %q: %w", p.out.Text(), err)
	}
	return res.Rows, res.Seconds, nil
}

func (p *pySide) close() {
	p.in.Close()
	p.cmd.Wait()
}

// gotflowPass measures TFModel.Transform, from the Parquet file and from the
// same rows already in memory.
type gotflowPass struct {
	m        *estimator.TFModel
	r        run
	readRows int
	recs     []arrow.RecordBatch
	schema   *arrow.Schema
	rows     int
}

func newGotflowPass(ctx context.Context, r run, threads int) (*gotflowPass, error) {
	g := &gotflowPass{r: r, m: &estimator.TFModel{Path: r.Model, SignatureDefKey: r.Signature, BatchSize: r.Batch,
		IntraOpThreads: threads, InterOpThreads: threads, InFlight: inFlight,
		OutputMapping: map[string]string{r.m.output: "prediction"}}}
	typ := arrow.FixedSizeListOf(int32(r.m.width), arrow.PrimitiveTypes.Float32)
	g.readRows = arrowio.RowsPerRecord(arrow.NewSchema([]arrow.Field{{Name: r.Column, Type: typ}}, nil), r.Batch)
	src, err := arrowio.OpenParquet(r.Data, arrowio.ReadRows(g.readRows))
	if err != nil {
		return nil, err
	}
	g.schema = src.Schema()
	for {
		rec, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			src.Close()
			g.close()
			return nil, err
		}
		g.recs = append(g.recs, rec)
		g.rows += int(rec.NumRows())
	}
	src.Close()
	// warm-up: loads the model and makes the first runs
	if _, _, err := g.inMemory(ctx); err != nil {
		g.close()
		return nil, err
	}
	return g, nil
}

func (g *gotflowPass) drain(ctx context.Context, src arrowio.Source, t0 time.Time) (int, time.Duration, error) {
	s, err := g.m.Transform(ctx, src)
	if err != nil {
		return 0, 0, err
	}
	rows := 0
	for s.Next() {
		rows += int(s.RecordBatch().NumRows())
	}
	err = s.Close()
	return rows, time.Since(t0), err
}

func (g *gotflowPass) parquet(ctx context.Context) (int, time.Duration, error) {
	t0 := time.Now()
	src, err := arrowio.OpenOrdered([]string{g.r.Data}, readers, g.readRows, arrowio.DecodeAhead(decodeAhead))
	if err != nil {
		return 0, 0, err
	}
	return g.drain(ctx, src, t0)
}

func (g *gotflowPass) inMemory(ctx context.Context) (int, time.Duration, error) {
	src, err := arrowio.FromRecords(g.schema, g.recs...)
	if err != nil {
		return 0, 0, err
	}
	return g.drain(ctx, src, time.Now())
}

func (g *gotflowPass) close() {
	for _, r := range g.recs {
		r.Release()
	}
	g.recs = nil
	g.m.Close()
}

// floorPass loops Session.Run (TF_SessionRun) on one pre-made input tensor
// for as many rows as a pass, fetching the same output.
type floorPass struct {
	m       *savedmodel.Model
	x       *tf.Tensor
	feeds   []tf.Feed
	fetches []tf.Output
	iters   int
	batch   int
}

func newFloorPass(ctx context.Context, r run, threads, rows int) (*floorPass, error) {
	m, err := savedmodel.Load(ctx, r.Model, savedmodel.WithSignature(r.Signature),
		savedmodel.WithSessionOptions(tf.WithIntraOpThreads(threads), tf.WithInterOpThreads(threads)))
	if err != nil {
		return nil, err
	}
	f := &floorPass{m: m, iters: max(1, rows/r.Batch), batch: r.Batch}
	in, err := m.Input(r.Input)
	if err != nil {
		f.close()
		return nil, err
	}
	outEp, err := m.Output(r.m.output)
	if err != nil {
		f.close()
		return nil, err
	}
	vals := make([]float32, r.Batch*r.m.width)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range vals {
		vals[i] = float32(rng.NormFloat64())
	}
	if f.x, err = tf.NewTensor([]int64{int64(r.Batch), int64(r.m.width)}, vals); err != nil {
		f.close()
		return nil, err
	}
	f.feeds = []tf.Feed{{Output: in.Output, Tensor: f.x}}
	f.fetches = []tf.Output{outEp.Output}
	for range min(f.iters, 10) { // warm-up
		if err := f.run(ctx); err != nil {
			f.close()
			return nil, err
		}
	}
	return f, nil
}

func (f *floorPass) run(ctx context.Context) error {
	res, err := f.m.Session().Run(ctx, f.feeds, f.fetches, nil)
	if err != nil {
		return err
	}
	for _, t := range res {
		t.Close()
	}
	return nil
}

func (f *floorPass) pass(ctx context.Context) (int, time.Duration, error) {
	t0 := time.Now()
	for range f.iters {
		if err := f.run(ctx); err != nil {
			return 0, 0, err
		}
	}
	return f.iters * f.batch, time.Since(t0), nil
}

// concurrent runs the same number of rows as pass from n goroutines, each
// with its own pre-made input tensor, on the one session: the C API at the
// concurrency gotflow runs with.
func (f *floorPass) concurrent(ctx context.Context, n int) (int, time.Duration, error) {
	feeds := make([][]tf.Feed, n)
	for i := range n {
		x, err := tf.NewTensorFill(f.x.DataType(), f.x.Shape(), func(b []byte) error { copy(b, f.x.Bytes()); return nil })
		if err != nil {
			return 0, 0, err
		}
		defer x.Close()
		feeds[i] = []tf.Feed{{Output: f.feeds[0].Output, Tensor: x}}
	}
	var next atomic.Int64
	errs := make(chan error, n)
	t0 := time.Now()
	for i := range n {
		go func() {
			for next.Add(1) <= int64(f.iters) {
				res, err := f.m.Session().Run(ctx, feeds[i], f.fetches, nil)
				if err != nil {
					errs <- err
					return
				}
				for _, t := range res {
					t.Close()
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return f.iters * f.batch, time.Since(t0), first
}

func (f *floorPass) close() {
	if f.x != nil {
		f.x.Close()
	}
	f.m.Close()
}
