package flight

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gotflow/gotflow/serving"
)

// Defaults of the bulk job store.
const (
	DefaultJobBytes = 1 << 30
	DefaultJobTTL   = 10 * time.Minute
)

// Option configures Register.
type Option func(*options)

type options struct {
	mem      memory.Allocator
	jobBytes int64
	jobTTL   time.Duration
	inFlight int
}

// DefaultInFlight is how many record batches of one DoExchange stream
// run at once by default: one runs while the next is decoded and the last
// encoded and sent.
const DefaultInFlight = 2

// WithInFlight sets how many record batches of one DoExchange stream run
// at once (default DefaultInFlight); answers keep the batches' order.
func WithInFlight(n int) Option { return func(o *options) { o.inFlight = max(n, 1) } }

// WithAllocator sets the allocator of the Arrow IPC readers and writers
// (default memory.DefaultAllocator).
func WithAllocator(mem memory.Allocator) Option { return func(o *options) { o.mem = mem } }

// WithJobLimit bounds the bytes of predictions that bulk jobs hold at
// once, counting uploads in progress (default DefaultJobBytes).
func WithJobLimit(bytes int64) Option { return func(o *options) { o.jobBytes = bytes } }

// WithJobTTL sets how long a finished upload's predictions wait for their
// DoGet (default DefaultJobTTL).
func WithJobTTL(d time.Duration) Option { return func(o *options) { o.jobTTL = d } }

// Service is the Arrow Flight service of a serving.Server.
type Service struct {
	flight.BaseFlightServer
	srv  *serving.Server
	mem  memory.Allocator
	jobs *jobStore
	log  *slog.Logger
	// inFlight is how many batches of one exchange run at once.
	inFlight int
}

// Register registers the Flight service on s.GRPC(); call it before
// s.Serve.
func Register(s *serving.Server, opts ...Option) *Service {
	o := options{mem: memory.DefaultAllocator, jobBytes: DefaultJobBytes, jobTTL: DefaultJobTTL, inFlight: DefaultInFlight}
	for _, opt := range opts {
		opt(&o)
	}
	svc := &Service{srv: s, mem: o.mem, jobs: newJobStore(o.jobBytes, o.jobTTL), log: s.Logger().With("api", serving.APIFlight), inFlight: o.inFlight}
	flight.RegisterFlightServiceServer(s.GRPC(), svc)
	s.OnClose(svc.Close)
	return svc
}

// Close drops the stored bulk jobs and refuses new uploads. The RPCs stop
// with the server; Close only frees the jobs' memory early.
func (s *Service) Close() { s.jobs.close() }

// Jobs returns the number of stored bulk jobs and the bytes that jobs and
// uploads in progress hold.
func (s *Service) Jobs() (jobs int, bytes int64) { return s.jobs.stats() }

// planFor resolves a target against the version it names.
func (s *Service) planFor(t target) (*signaturePlan, error) {
	meta, err := s.srv.Metadata(t.Model, t.Version, t.Label)
	if err != nil {
		return nil, serving.AsStatus(err)
	}
	return newPlan(t, meta)
}

func (s *Service) plan(d *flight.FlightDescriptor) (*signaturePlan, error) {
	t, err := parseDescriptor(d)
	if err != nil {
		return nil, err
	}
	return s.planFor(t)
}

// finish logs a failed RPC and returns its error as a gRPC status.
func (s *Service) finish(method string, err error) error {
	if err == nil {
		return nil
	}
	err = serving.AsStatus(err)
	switch status.Code(err) {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		s.log.Warn("flight call failed", "method", method, "err", err)
	default:
		s.log.Debug("flight call failed", "method", method, "err", err)
	}
	return err
}

// GetSchema returns the input schema of the flight the descriptor names.
func (s *Service) GetSchema(_ context.Context, d *flight.FlightDescriptor) (_ *flight.SchemaResult, err error) {
	defer func() { err = s.finish("GetSchema", err) }()
	p, err := s.plan(d)
	if err != nil {
		return nil, err
	}
	return &flight.SchemaResult{Schema: flight.SerializeSchema(p.in, s.mem)}, nil
}

// GetFlightInfo describes the flight the descriptor names.
func (s *Service) GetFlightInfo(_ context.Context, d *flight.FlightDescriptor) (_ *flight.FlightInfo, err error) {
	defer func() { err = s.finish("GetFlightInfo", err) }()
	p, err := s.plan(d)
	if err != nil {
		return nil, err
	}
	return s.info(p, d), nil
}

// InfoMetadata is the JSON in a FlightInfo's app_metadata.
type InfoMetadata struct {
	Model     string `json:"model"`
	Version   int64  `json:"version"`
	Signature string `json:"signature"`
	Method    string `json:"method"`
	// Inputs and Outputs are the signature's tensors (Outputs filtered
	// as the descriptor asks); Shape is null for an unknown rank.
	Inputs  []TensorMetadata `json:"inputs"`
	Outputs []TensorMetadata `json:"outputs"`
	// OutputSchema is the schema of the outputs' record batches, as
	// flight.SerializeSchema writes it (base64 in the JSON).
	OutputSchema []byte `json:"output_schema"`
}

// TensorMetadata is a signature tensor in InfoMetadata.
type TensorMetadata struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
}

func (s *Service) info(p *signaturePlan, d *flight.FlightDescriptor) *flight.FlightInfo {
	im := InfoMetadata{Model: p.meta.Model, Version: p.meta.Version, Signature: p.sigKey, Method: p.sig.Method,
		Inputs: []TensorMetadata{}, Outputs: []TensorMetadata{}, OutputSchema: flight.SerializeSchema(p.out, s.mem)}
	for _, c := range p.inputs {
		im.Inputs = append(im.Inputs, TensorMetadata{c.info.Name, c.info.DType.String(), c.info.Shape})
	}
	for _, c := range p.outputs {
		im.Outputs = append(im.Outputs, TensorMetadata{c.info.Name, c.info.DType.String(), c.info.Shape})
	}
	md, _ := json.Marshal(im)
	return &flight.FlightInfo{
		Schema:           flight.SerializeSchema(p.in, s.mem),
		FlightDescriptor: d,
		Endpoint: []*flight.FlightEndpoint{{
			Ticket:   &flight.Ticket{Ticket: modelTicket(p.target)},
			Location: []*flight.Location{{Uri: flight.LocationReuseConnection}},
		}},
		TotalRecords: -1,
		TotalBytes:   -1,
		AppMetadata:  md,
	}
}

// ListFlights sends one FlightInfo per served model: its serving_default
// signature (or, without one, its first signature by key). Models with no
// version available, or whose signature Flight cannot carry, are left
// out. The criteria are ignored.
func (s *Service) ListFlights(_ *flight.Criteria, stream flight.FlightService_ListFlightsServer) (err error) {
	defer func() { err = s.finish("ListFlights", err) }()
	for _, name := range s.srv.Models() {
		if err := stream.Context().Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		meta, err := s.srv.Metadata(name, 0, "")
		if err != nil {
			s.log.Debug("model left out of ListFlights", "model", name, "err", err)
			continue
		}
		t := target{Model: name}
		if sig, ok := meta.Signatures[serving.DefaultSignature]; !ok || !sig.Servable {
			var keys []string
			for k := range meta.Signatures {
				if !strings.HasPrefix(k, "__") {
					keys = append(keys, k)
				}
			}
			if len(keys) == 0 {
				continue
			}
			slices.Sort(keys)
			t.Signature = keys[0]
		}
		p, err := newPlan(t, meta)
		if err != nil {
			s.log.Debug("model left out of ListFlights", "model", name, "err", err)
			continue
		}
		if err := stream.Send(s.info(p, descriptorFor(t))); err != nil {
			return err
		}
	}
	return nil
}

// BatchMetadata is the JSON in the app_metadata of every record batch of
// predictions (DoExchange and DoGet).
type BatchMetadata struct {
	Model     string `json:"model"`
	Version   int64  `json:"version"`
	Signature string `json:"signature"`
	Rows      int    `json:"rows"`
	// Shapes are the output tensors' shapes, first dimension the rows
	// (list columns need them to restore a row's shape).
	Shapes map[string][]int64 `json:"shapes"`
}

// PutMetadata is the JSON in DoPut's PutResult app_metadata.
type PutMetadata struct {
	// Ticket is DoGet's ticket for the job's predictions.
	Ticket  string    `json:"ticket"`
	Rows    int64     `json:"rows"`
	Batches int       `json:"batches"`
	Bytes   int64     `json:"bytes"`
	Expires time.Time `json:"expires"`
}

// openUpload reads a DoExchange or DoPut stream's descriptor and schema.
func (s *Service) openUpload(stream flight.DataStreamReader) (*flight.Reader, *signaturePlan, error) {
	rdr, err := flight.NewRecordReader(stream, ipc.WithAllocator(s.mem))
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, serving.InvalidArgument("the stream ended before its schema")
		}
		return nil, nil, readErr(err)
	}
	p, err := s.plan(rdr.LatestFlightDescriptor())
	if err == nil {
		err = p.checkSchema(rdr.Schema())
	}
	if err != nil {
		rdr.Release()
		return nil, nil, err
	}
	return rdr, p, nil
}

// readErr is a stream's read error as a status.
func readErr(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return serving.InvalidArgument("reading the record batches: %v", err)
}

// request converts a record batch into a Request.
func (p *signaturePlan) request(rec arrow.RecordBatch, maxBatch int) (*serving.Request, error) {
	rows := int(rec.NumRows())
	req := &serving.Request{
		Model:     p.target.Model,
		Version:   p.target.Version,
		Label:     p.target.Label,
		Signature: p.sigKey,
		Outputs:   p.target.Outputs,
		API:       serving.APIFlight,
		Inputs:    make(map[string]*serving.Tensor, len(p.inputs)),
		NoBatch:   maxBatch > 0 && rows >= maxBatch,
	}
	for i, f := range rec.Schema().Fields() {
		c := p.byName[f.Name]
		if c == nil {
			return nil, serving.InvalidArgument("column %q is not an input (inputs: %s)", f.Name, p.inputNames())
		}
		t, err := c.toTensor(f, rec.Column(i), rows)
		if err != nil {
			return nil, err
		}
		req.Inputs[f.Name] = t
	}
	return req, nil
}

// run predicts one record batch and returns the outputs' record batch and
// its app_metadata.
func (s *Service) run(ctx context.Context, p *signaturePlan, rec arrow.RecordBatch) (arrow.RecordBatch, []byte, error) {
	rows := int(rec.NumRows())
	bm := BatchMetadata{Model: p.meta.Model, Version: p.meta.Version, Signature: p.sigKey, Rows: rows, Shapes: map[string][]int64{}}
	outs := map[string]*serving.Tensor{}
	if rows == 0 {
		for _, c := range p.outputs {
			outs[c.info.Name] = c.emptyTensor()
		}
	} else {
		req, err := p.request(rec, s.srv.MaxBatchSize())
		if err != nil {
			return nil, nil, err
		}
		resp, err := s.srv.Predict(ctx, req)
		if err != nil {
			return nil, nil, serving.AsStatus(err)
		}
		outs, bm.Version = resp.Outputs, resp.Version
	}
	cols := make([]arrow.Array, 0, len(p.outputs))
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	for _, c := range p.outputs {
		t := outs[c.info.Name]
		if t == nil {
			return nil, nil, serving.Internal("the model returned no output %q", c.info.Name)
		}
		a, err := c.toArray(t, rows)
		if err != nil {
			return nil, nil, err
		}
		cols = append(cols, a)
		bm.Shapes[c.info.Name] = t.Shape
	}
	md, _ := json.Marshal(bm)
	return array.NewRecordBatch(p.out, cols, int64(rows)), md, nil
}

// DoExchange predicts each record batch the client writes and writes back
// one record batch of outputs for it.
func (s *Service) DoExchange(stream flight.FlightService_DoExchangeServer) (err error) {
	defer func() { err = s.finish("DoExchange", err) }()
	rdr, p, err := s.openUpload(stream)
	if err != nil {
		return err
	}
	w := flight.NewRecordWriter(stream, ipc.WithSchema(p.out), ipc.WithAllocator(s.mem))
	// Batches run while the next ones are read and the earlier ones sent:
	// the reader starts each batch's run and queues its result, and this
	// loop sends the results in the order the batches came.
	type result struct {
		out arrow.RecordBatch
		md  []byte
		err error
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	results := make(chan chan result, max(s.inFlight-2, 0))
	readDone := make(chan error, 1)
	go func() {
		defer close(results)
		defer rdr.Release()
		for rdr.Next() {
			rec := rdr.RecordBatch()
			rec.Retain()
			f := make(chan result, 1)
			runOne := func() {
				defer rec.Release()
				out, md, err := s.run(ctx, p, rec)
				f <- result{out, md, err}
			}
			if s.inFlight > 1 {
				go runOne()
			} else {
				runOne()
			}
			select {
			case results <- f:
			case <-ctx.Done():
				if r := <-f; r.out != nil {
					r.out.Release()
				}
				readDone <- ctx.Err()
				return
			}
		}
		readDone <- readErr(rdr.Err())
	}()
	drain := func() {
		cancel()
		go func() {
			for f := range results {
				if r := <-f; r.out != nil {
					r.out.Release()
				}
			}
		}()
	}
	for f := range results {
		r := <-f
		if r.err != nil {
			drain()
			return r.err
		}
		err := w.WriteWithAppMetadata(r.out, r.md)
		r.out.Release()
		if err != nil {
			drain()
			return err
		}
	}
	if err := <-readDone; err != nil {
		return err
	}
	return w.Close()
}

// DoPut predicts a bulk job's record batches as they arrive and keeps the
// predictions for DoGet; its one PutResult carries PutMetadata.
func (s *Service) DoPut(stream flight.FlightService_DoPutServer) (err error) {
	defer func() { err = s.finish("DoPut", err) }()
	rdr, p, err := s.openUpload(stream)
	if err != nil {
		return err
	}
	defer rdr.Release()
	j := &job{schema: p.out}
	stored := false
	defer func() {
		if !stored {
			s.jobs.unreserve(j.bytes)
			j.release()
		}
	}()
	for rdr.Next() {
		out, md, err := s.run(stream.Context(), p, rdr.RecordBatch())
		if err != nil {
			return err
		}
		n := recordBytes(out)
		if err := s.jobs.reserve(n); err != nil {
			out.Release()
			return err
		}
		j.bytes += n
		j.rows += out.NumRows()
		j.recs = append(j.recs, out)
		j.metas = append(j.metas, md)
	}
	if err := readErr(rdr.Err()); err != nil {
		return err
	}
	ticket, err := s.jobs.add(j)
	if err != nil {
		return err
	}
	stored = true
	md, _ := json.Marshal(PutMetadata{Ticket: string(ticket), Rows: j.rows, Batches: len(j.recs), Bytes: j.bytes, Expires: j.expires})
	return stream.Send(&flight.PutResult{AppMetadata: md})
}

// DoGet streams a bulk job's predictions (a job ticket, once) or, for a
// model ticket from a FlightInfo, the flight's input schema and no rows.
func (s *Service) DoGet(tkt *flight.Ticket, stream flight.FlightService_DoGetServer) (err error) {
	defer func() { err = s.finish("DoGet", err) }()
	b := tkt.GetTicket()
	if isJobTicket(b) {
		j := s.jobs.take(b)
		if j == nil {
			return serving.NotFound("ticket %s is unknown, expired or already used: a job's predictions are downloaded once", quote(b))
		}
		defer s.jobs.done(j)
		w := flight.NewRecordWriter(stream, ipc.WithSchema(j.schema), ipc.WithAllocator(s.mem))
		for i, r := range j.recs {
			if err := w.WriteWithAppMetadata(r, j.metas[i]); err != nil {
				return err
			}
		}
		return w.Close()
	}
	if rest, ok := bytes.CutPrefix(b, []byte(modelTicketPrefix)); ok {
		t, err := parseCommand(rest, "ticket")
		if err != nil {
			return err
		}
		p, err := s.planFor(t)
		if err != nil {
			return err
		}
		return flight.NewRecordWriter(stream, ipc.WithSchema(p.in), ipc.WithAllocator(s.mem)).Close()
	}
	return serving.NotFound("ticket %s is unknown: tickets come from DoPut's PutResult or a FlightInfo endpoint", quote(b))
}

// quote quotes a ticket for a message, cut to 100 bytes.
func quote(b []byte) string {
	if len(b) > 100 {
		return strconv.Quote(string(b[:100])) + "..."
	}
	return strconv.Quote(string(b))
}
