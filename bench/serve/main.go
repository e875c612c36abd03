// Command serve benchmarks `gotflow serve`'s front ends (package serving)
// against a Python server of the same SavedModel, in one run:
//
//   - serve/{rest,grpc,flight}/{mlp,cnn}/c{1,8,64}: requests of one row
//     from 1, 8 or 64 closed-loop clients for a fixed time, against the
//     same clients sending the same rows as TF Serving REST requests to
//     scripts/bench/serve_baseline.py (tf.saved_model.load behind a
//     ThreadingHTTPServer): queries per second (ratio = gotflow's QPS over
//     the Python server's), with p50 and p99 latency rows beside them;
//   - serve/flight/<model>/vs_transform: rows/s of Flight DoExchange
//     streaming 1024-row record batches through the server, against
//     TFModel.Transform over the same rows in this process.
//
// gotflow serves with batching on (TF Serving's defaults: max_batch_size
// 1000, batch_timeout_micros 0, one batch thread per core), as a server
// under concurrent load runs.
//
//	go run ./bench/serve -out bench/results/serve.json [-duration 3s]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	arrowflight "github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	tensorpb "github.com/wamuir/graft/tensorflow/core/framework/tensor_go_proto"
	tspb "github.com/wamuir/graft/tensorflow/core/framework/tensor_shape_go_proto"
	typespb "github.com/wamuir/graft/tensorflow/core/framework/types_go_proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/benchfmt"
	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/serving/flight"
	"github.com/gotflow/gotflow/serving/tfserving"
	"github.com/gotflow/gotflow/serving/tfserving/tfservingpb"
)

type model struct {
	name, dir, input, output string
	width                    int
}

var models = []model{
	{name: "mlp", dir: testmodels.Dir("mlp_savedmodel"), input: "features", output: "output_0", width: 32},
	{name: "cnn", dir: testmodels.Dir("cnn_savedmodel"), input: "pixels", output: "output_0", width: 784},
}

func main() {
	out := flag.String("out", "bench/results/serve.json", "results file")
	dur := flag.Duration("duration", 3*time.Second, "measuring time of each row")
	only := flag.String("only", "", "run only the rows whose name contains this")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatalf("bench/serve: %v", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatalf("bench/serve: %v", err)
		}
		defer pprof.StopCPUProfile()
	}
	log.SetFlags(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	res, err := run(ctx, *dur, *only)
	if err != nil {
		pprof.StopCPUProfile()
		log.Fatalf("bench/serve: %v", err)
	}
	if err := benchfmt.Write(*out, res); err != nil {
		log.Fatalf("bench/serve: %v", err)
	}
	fmt.Printf("wrote %s (%d rows)\n", *out, len(res))
}

func run(ctx context.Context, dur time.Duration, only string) ([]benchfmt.Result, error) {
	tmp, err := os.MkdirTemp("", "gotflow-bench-serve-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	var cfgs []serving.ModelConfig
	for _, m := range models {
		base := filepath.Join(tmp, m.name)
		if err := os.MkdirAll(base, 0o755); err != nil {
			return nil, err
		}
		if err := os.Symlink(m.dir, filepath.Join(base, "1")); err != nil {
			return nil, err
		}
		cfgs = append(cfgs, serving.ModelConfig{Name: m.name, BasePath: base})
	}
	srv, err := serving.NewServer(ctx, serving.Config{Models: cfgs, PollInterval: -1, Batching: &serving.BatchingParameters{}})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	tfserving.Register(srv)
	tfserving.RegisterREST(srv)
	flight.Register(srv)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go srv.Serve(gl, hl)
	if err := srv.WaitReady(ctx); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	var results []benchfmt.Result
	for _, m := range models {
		py, err := startPython(ctx, m)
		if err != nil {
			return nil, err
		}
		rows := makeRows(m.width, 256)
		for _, c := range []int{1, 8, 64} {
			var peer *stats
			for _, api := range []string{"rest", "grpc", "flight"} {
				name := fmt.Sprintf("serve/%s/%s/c%d", api, m.name, c)
				if !strings.Contains(name, only) {
					continue
				}
				if peer == nil {
					if peer, err = load(ctx, c, dur, restClient(py.url, m, rows)); err != nil {
						py.close()
						return nil, fmt.Errorf("python %s c%d: %w", m.name, c, err)
					}
					log.Printf("python/%s/c%d: %.0f qps, p50 %.2f ms, p99 %.2f ms", m.name, c, peer.qps, peer.p50*1e3, peer.p99*1e3)
				}
				var mk func() (caller, error)
				switch api {
				case "rest":
					mk = restClient("http://"+hl.Addr().String(), m, rows)
				case "grpc":
					mk = grpcClient(conn, m, rows)
				case "flight":
					mk = flightClient(ctx, gl.Addr().String(), m, rows)
				}
				st, err := load(ctx, c, dur, mk)
				if err != nil {
					py.close()
					return nil, fmt.Errorf("%s: %w", name, err)
				}
				log.Printf("%s: %.0f qps (%.2fx python), p50 %.2f ms, p99 %.2f ms", name, st.qps, st.qps/peer.qps, st.p50*1e3, st.p99*1e3)
				note := fmt.Sprintf("one-row requests from %d closed-loop clients for %s; gotflow batching on (TF Serving defaults); peer: scripts/bench/serve_baseline.py (tf.saved_model.load + ThreadingHTTPServer, TF Serving REST JSON); both servers on the same 2 cores as the load generator; target at c8 >= 3", c, dur)
				r := benchfmt.New(name, "throughput", "requests/s", st.qps, "python_threaded_http_server", peer.qps)
				r.Note = note
				p50 := benchfmt.New(name+"/p50", "latency_p50", "ms", st.p50*1e3, "python_threaded_http_server", peer.p50*1e3)
				p99 := benchfmt.New(name+"/p99", "latency_p99", "ms", st.p99*1e3, "python_threaded_http_server", peer.p99*1e3)
				results = append(results, r, p50, p99)
			}
		}
		py.close()
		name := fmt.Sprintf("serve/flight/%s/vs_transform", m.name)
		if strings.Contains(name, only) {
			r, err := vsTransform(ctx, gl.Addr().String(), m)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			r.Name = name
			log.Printf("%s: %.0f rows/s, TFModel.Transform %.0f rows/s (%.2fx)", name, r.Value, r.PeerValue, r.Ratio)
			results = append(results, r)
		}
	}
	return results, nil
}

// makeRows makes n rows of width random float32s in [0, 1).
func makeRows(width, n int) [][]float32 {
	rng := rand.New(rand.NewPCG(1, uint64(width)))
	out := make([][]float32, n)
	for i := range out {
		out[i] = make([]float32, width)
		for j := range out[i] {
			out[i][j] = rng.Float32()
		}
	}
	return out
}

// caller makes one request with row i.
type caller func(ctx context.Context, i int) error

type stats struct{ qps, p50, p99 float64 }

// load runs c clients, each with its own caller, for dur after a short
// warm-up, and reports the completed requests per second and the
// latency percentiles (seconds).
func load(ctx context.Context, c int, dur time.Duration, mk func() (caller, error)) (*stats, error) {
	callers := make([]caller, c)
	for i := range callers {
		var err error
		if callers[i], err = mk(); err != nil {
			return nil, err
		}
	}
	warm := dur / 5
	start := time.Now()
	measureFrom, end := start.Add(warm), start.Add(warm+dur)
	lat := make([][]float64, c)
	errs := make(chan error, c)
	var wg sync.WaitGroup
	for k := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; ; i += c {
				t0 := time.Now()
				if t0.After(end) {
					return
				}
				if err := callers[k](ctx, i); err != nil {
					errs <- err
					return
				}
				if t0.After(measureFrom) {
					lat[k] = append(lat[k], time.Since(t0).Seconds())
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	var all []float64
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return nil, errors.New("no request completed")
	}
	slices.Sort(all)
	pct := func(q float64) float64 { return all[min(len(all)-1, int(q*float64(len(all))))] }
	return &stats{qps: float64(len(all)) / dur.Seconds(), p50: pct(0.5), p99: pct(0.99)}, nil
}

// restClient posts TF Serving REST predict requests of one row.
func restClient(base string, m model, rows [][]float32) func() (caller, error) {
	bodies := make([][]byte, len(rows))
	for i, r := range rows {
		var b bytes.Buffer
		b.WriteString(`{"instances": [[`)
		for j, v := range r {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%g", v)
		}
		b.WriteString(`]]}`)
		bodies[i] = b.Bytes()
	}
	url := base + "/v1/models/" + m.name + ":predict"
	return func() (caller, error) {
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}
		return func(ctx context.Context, i int) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(bodies[i%len(bodies)]))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("predictions")) {
				return fmt.Errorf("%s: %d %s", url, resp.StatusCode, body)
			}
			return nil
		}, nil
	}
}

// grpcClient calls PredictionService.Predict with one row.
func grpcClient(conn *grpc.ClientConn, m model, rows [][]float32) func() (caller, error) {
	reqs := make([]*tfservingpb.PredictRequest, len(rows))
	for i, r := range rows {
		content := make([]byte, 4*len(r))
		for j, v := range r {
			binary.LittleEndian.PutUint32(content[4*j:], math.Float32bits(v))
		}
		reqs[i] = &tfservingpb.PredictRequest{ModelSpec: &tfservingpb.ModelSpec{Name: m.name},
			Inputs: map[string]*tensorpb.TensorProto{m.input: {Dtype: typespb.DataType_DT_FLOAT,
				TensorShape:   &tspb.TensorShapeProto{Dim: []*tspb.TensorShapeProto_Dim{{Size: 1}, {Size: int64(m.width)}}},
				TensorContent: content}}}
	}
	return func() (caller, error) {
		c := tfservingpb.NewPredictionServiceClient(conn)
		return func(ctx context.Context, i int) error {
			resp, err := c.Predict(ctx, reqs[i%len(reqs)])
			if err != nil {
				return err
			}
			if resp.GetOutputs()[m.output] == nil {
				return fmt.Errorf("no output %q in the response", m.output)
			}
			return nil
		}, nil
	}
}

// flightClient keeps one DoExchange stream per client and sends one-row
// record batches, reading each prediction batch before the next.
func flightClient(ctx context.Context, addr string, m model, rows [][]float32) func() (caller, error) {
	mem := memory.NewGoAllocator()
	schema := arrow.NewSchema([]arrow.Field{{Name: m.input, Type: arrow.FixedSizeListOf(int32(m.width), arrow.PrimitiveTypes.Float32)}}, nil)
	recs := make([]arrow.RecordBatch, len(rows))
	for i, r := range rows {
		recs[i] = record(mem, schema, [][]float32{r})
	}
	return func() (caller, error) {
		cl, err := arrowflight.NewClientWithMiddleware(addr, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		stream, err := cl.DoExchange(ctx)
		if err != nil {
			return nil, err
		}
		w := arrowflight.NewRecordWriter(stream, ipc.WithSchema(schema))
		w.SetFlightDescriptor(&arrowflight.FlightDescriptor{Type: arrowflight.DescriptorPATH, Path: []string{m.name}})
		var rd *arrowflight.Reader
		return func(ctx context.Context, i int) error {
			if err := w.Write(recs[i%len(recs)]); err != nil {
				return err
			}
			if rd == nil {
				if rd, err = arrowflight.NewRecordReader(stream); err != nil {
					return err
				}
			}
			if !rd.Next() {
				if err := rd.Err(); err != nil {
					return err
				}
				return errors.New("the exchange ended early")
			}
			if rd.RecordBatch().NumRows() != 1 {
				return fmt.Errorf("%d rows back for 1", rd.RecordBatch().NumRows())
			}
			return nil
		}, nil
	}
}

func record(mem memory.Allocator, schema *arrow.Schema, rows [][]float32) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	lb := b.Field(0).(*array.FixedSizeListBuilder)
	vb := lb.ValueBuilder().(*array.Float32Builder)
	for _, r := range rows {
		lb.Append(true)
		vb.AppendValues(r, nil)
	}
	return b.NewRecordBatch()
}

// vsTransform streams rows through Flight DoExchange in 1024-row batches
// and, in this process, through TFModel.Transform with the same batch
// size: rows/s of each, best of three passes.
func vsTransform(ctx context.Context, addr string, m model) (benchfmt.Result, error) {
	const batch = 1024
	n := 64 * batch
	if m.name == "cnn" {
		n = 16 * batch
	}
	mem := memory.NewGoAllocator()
	schema := arrow.NewSchema([]arrow.Field{{Name: m.input, Type: arrow.FixedSizeListOf(int32(m.width), arrow.PrimitiveTypes.Float32)}}, nil)
	rows := makeRows(m.width, batch)
	var recs []arrow.RecordBatch
	for range n / batch {
		recs = append(recs, record(mem, schema, rows))
	}
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	cl, err := arrowflight.NewClientWithMiddleware(addr, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(8<<20), grpc.WithInitialConnWindowSize(32<<20))
	if err != nil {
		return benchfmt.Result{}, err
	}
	defer cl.Close()
	flightPass := func() (time.Duration, error) {
		t0 := time.Now()
		stream, err := cl.DoExchange(ctx)
		if err != nil {
			return 0, err
		}
		w := arrowflight.NewRecordWriter(stream, ipc.WithSchema(schema))
		w.SetFlightDescriptor(&arrowflight.FlightDescriptor{Type: arrowflight.DescriptorPATH, Path: []string{m.name}})
		sendErr := make(chan error, 1)
		go func() {
			for _, r := range recs {
				if err := w.Write(r); err != nil {
					sendErr <- err
					return
				}
			}
			w.Close()
			sendErr <- stream.CloseSend()
		}()
		rd, err := arrowflight.NewRecordReader(stream)
		if err != nil {
			return 0, err
		}
		got := 0
		for rd.Next() {
			got += int(rd.RecordBatch().NumRows())
		}
		rd.Release()
		if err := rd.Err(); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		if err := <-sendErr; err != nil {
			return 0, err
		}
		if got != n {
			return 0, fmt.Errorf("%d rows back for %d", got, n)
		}
		return time.Since(t0), nil
	}
	tm := &estimator.TFModel{Path: m.dir, BatchSize: batch, OutputMapping: map[string]string{m.output: "prediction"}}
	defer tm.Close()
	transformPass := func() (time.Duration, error) {
		t0 := time.Now()
		src, err := arrowio.FromRecords(schema, recs...)
		if err != nil {
			return 0, err
		}
		s, err := tm.Transform(ctx, src)
		if err != nil {
			return 0, err
		}
		got := 0
		for s.Next() {
			got += int(s.RecordBatch().NumRows())
		}
		if err := s.Close(); err != nil {
			return 0, err
		}
		if got != n {
			return 0, fmt.Errorf("%d rows out of Transform for %d", got, n)
		}
		return time.Since(t0), nil
	}
	best := func(f func() (time.Duration, error)) (time.Duration, error) {
		b := time.Duration(math.MaxInt64)
		for range 3 {
			d, err := f()
			if err != nil {
				return 0, err
			}
			b = min(b, d)
		}
		return b, nil
	}
	if _, err := transformPass(); err != nil { // warm-up: loads the model
		return benchfmt.Result{}, err
	}
	var fl, tr time.Duration
	// Alternate so that both see the same machine.
	for range 2 {
		f, err := best(flightPass)
		if err != nil {
			return benchfmt.Result{}, err
		}
		t, err := best(transformPass)
		if err != nil {
			return benchfmt.Result{}, err
		}
		if fl == 0 || f < fl {
			fl = f
		}
		if tr == 0 || t < tr {
			tr = t
		}
	}
	r := benchfmt.New("", "throughput", "rows/s", float64(n)/fl.Seconds(), "tfmodel_transform_in_process", float64(n)/tr.Seconds())
	r.Note = fmt.Sprintf("%d rows in %d-row record batches over one DoExchange stream (client and server in this process, loopback gRPC) against TFModel.Transform over the same records in memory; best of 6 passes each; target >= 0.8", n, batch)
	return r, nil
}

// python is the baseline server.
type python struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	url string
}

func startPython(ctx context.Context, m model) (*python, error) {
	py := os.Getenv("GOTFLOW_PYTHON")
	if py == "" {
		py = ".venv/bin/python"
	}
	cmd := exec.CommandContext(ctx, py, "scripts/bench/serve_baseline.py", "--model", m.dir, "--name", m.name)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &python{cmd: cmd, in: in}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		io.Copy(io.Discard, out)
	}()
	select {
	case l, ok := <-line:
		port, found := strings.CutPrefix(l, "port ")
		if !ok || !found {
			p.close()
			return nil, fmt.Errorf("the Python server did not start (said %q)", l)
		}
		p.url = "http://127.0.0.1:" + port
	case <-time.After(2 * time.Minute):
		p.close()
		return nil, errors.New("the Python server did not say its port within 2 minutes")
	}
	return p, nil
}

func (p *python) close() {
	p.in.Close()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}
