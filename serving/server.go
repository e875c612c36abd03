package serving

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
)

// Version is the server's version, reported by the metadata endpoints.
const Version = "0.1.0"

// DefaultSignature is the signature a request without one runs.
const DefaultSignature = "serving_default"

// Server serves models: it keeps each model's versions loaded as its base
// path and policy say, runs requests on them (through the batcher when
// batching is on), and serves the front ends registered on its gRPC
// server and HTTP mux.
type Server struct {
	cfg     Config
	log     *slog.Logger
	models  map[string]*model
	names   []string
	metrics *metrics
	grpc    *grpc.Server
	health  *health.Server
	mux     *http.ServeMux
	http    *http.Server
	// conns counts the HTTP connections whose goroutine has not ended:
	// http.Server.Close does not wait for them (one that answered a
	// too-large body lingers half a second before it closes), Close does.
	conns sync.WaitGroup

	ctx    context.Context // cancelled by Close: stops polling and loads
	cancel context.CancelFunc
	wg     sync.WaitGroup // the poller and unloads

	mu       sync.Mutex
	closed   bool
	draining bool
	onClose  []func()
	polled   chan struct{} // closed after the first scan of every model
}

// NewServer checks cfg, loads every model's versions once (a model with
// no loadable version is logged and served once one appears) and starts
// polling the base paths. Front ends register on GRPC() and Mux() before
// Serve.
func NewServer(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Second
	}
	if len(cfg.Tags) == 0 {
		cfg.Tags = []string{"serve"}
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = 64 << 20
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.Batching != nil {
		b := cfg.Batching.withDefaults(runtime.NumCPU())
		cfg.Batching = &b
	}
	s := &Server{cfg: cfg, log: cfg.Logger, models: map[string]*model{}, mux: http.NewServeMux(), polled: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, mc := range cfg.Models {
		s.models[mc.Name] = newModel(mc)
		s.names = append(s.names, mc.Name)
	}
	sort.Strings(s.names)
	s.metrics = newMetrics(s)
	gopts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(min(cfg.MaxRequestBytes, 1<<31-1))),
		grpc.MaxSendMsgSize(1<<31 - 1),
		// Windows large enough for a Flight record batch or a large
		// tensor in one round trip (the default starts at 64 KiB).
		grpc.InitialWindowSize(8 << 20), grpc.InitialConnWindowSize(32 << 20),
		grpc.ChainUnaryInterceptor(s.unaryAuth),
		grpc.ChainStreamInterceptor(s.streamAuth),
	}
	if cfg.TLS != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	s.grpc = grpc.NewServer(gopts...)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Live() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			http.Error(w, "not ready: "+s.notReady(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	s.mux.Handle("GET /metrics", s.metrics.handler())
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.scanAll(ctx)
	close(s.polled)
	s.updateHealth()
	if cfg.PollInterval > 0 {
		s.wg.Add(1)
		go s.poll()
	}
	return s, nil
}

func (s *Server) scanAll(ctx context.Context) {
	for _, name := range s.names {
		if ctx.Err() != nil {
			return
		}
		s.syncModel(ctx, s.models[name])
	}
}

// poll rescans the base paths every PollInterval until Close.
func (s *Server) poll() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.scanAll(s.ctx)
		s.updateHealth()
	}
}

// logModelOnce logs a model-level problem (the base path is unreadable).
func (s *Server) logModelOnce(m *model, msg string, err error) {
	m.mu.Lock()
	key := msg + err.Error()
	seen := m.failed[-1] == key
	m.failed[-1] = key
	m.mu.Unlock()
	if !seen {
		s.log.Error(msg, "model", m.cfg.Name, "base_path", m.cfg.BasePath, "err", err)
	}
}

func (s *Server) updateHealth() {
	if s.Ready() {
		s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	} else {
		s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	}
	for _, name := range s.names {
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if s.modelReady(name) {
			st = healthpb.HealthCheckResponse_SERVING
		}
		s.health.SetServingStatus(name, st)
	}
}

// GRPC is the server's gRPC server: front ends register their services on
// it before Serve.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Mux is the HTTP port's mux: front ends add their routes before Serve.
func (s *Server) Mux() *http.ServeMux { return s.mux }

// Logger is the server's logger.
func (s *Server) Logger() *slog.Logger { return s.log }

// Models lists the configured models' names, sorted.
func (s *Server) Models() []string { return slices.Clone(s.names) }

// MaxBatchSize is the batcher's largest batch, 0 without batching.
func (s *Server) MaxBatchSize() int {
	if s.cfg.Batching == nil {
		return 0
	}
	return s.cfg.Batching.MaxBatchSize
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// MaxRequestBytes is the largest request body or gRPC message accepted.
func (s *Server) MaxRequestBytes() int64 { return s.cfg.MaxRequestBytes }

// Live reports whether the server takes requests (false once shutting
// down).
func (s *Server) Live() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && !s.draining
}

// Ready reports whether every model has a version available.
func (s *Server) Ready() bool { return s.Live() && s.notReady() == "" }

func (s *Server) notReady() string {
	var missing []string
	for _, name := range s.names {
		if !s.modelReady(name) {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return "no version available of " + strings.Join(missing, ", ")
}

func (s *Server) modelReady(name string) bool {
	m := s.models[name]
	if m == nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.available()) > 0
}

// ModelReady reports whether a model's version (0: any) serves.
func (s *Server) ModelReady(name string, version int64) bool {
	st, err := s.ModelStatus(name, version, "")
	if err != nil {
		return false
	}
	for _, v := range st {
		if v.State == StateAvailable {
			return true
		}
	}
	return false
}

// WaitReady waits until every model has a version available, or ctx ends;
// the error names the models still missing.
func (s *Server) WaitReady(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !s.Ready() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("serving: waiting for the models to load: %s: %w", s.notReady(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

func (s *Server) model(name string) (*model, error) {
	if name == "" {
		return nil, InvalidArgument("Missing model name in request.")
	}
	m := s.models[name]
	if m == nil {
		return nil, NotFound("Servable not found for request: Latest(%s)", name)
	}
	return m, nil
}

// ModelStatus returns the states of a model's versions: all of them with
// version 0 and no label, newest first.
func (s *Server) ModelStatus(name string, version int64, label string) ([]VersionStatus, error) {
	m := s.models[name]
	if m == nil {
		if name == "" {
			return nil, InvalidArgument("Missing model name in request.")
		}
		return nil, NotFound("Could not find any versions of model %s", name)
	}
	return m.status(version, label)
}

// Metadata describes a served version of a model (the newest with
// version 0 and no label). It is shared: callers must not modify it.
func (s *Server) Metadata(name string, version int64, label string) (*Metadata, error) {
	m, err := s.model(name)
	if err != nil {
		return nil, err
	}
	v, err := m.acquire(version, label)
	if err != nil {
		return nil, err
	}
	defer m.release(v)
	return v.meta, nil
}

// Predict runs a request on the version it names: every input of the
// signature must be given with the signature's type; the outputs are the
// signature's (or those the request filters), by alias.
func (s *Server) Predict(ctx context.Context, req *Request) (resp *Response, err error) {
	start := time.Now()
	api := req.API
	if api == "" {
		api = "go"
	}
	defer func() {
		name := req.Model
		if s.models[name] == nil {
			name = "" // a name no model has does not become a series
		}
		s.metrics.request(name, resp, api, err, time.Since(start))
	}()
	// While draining, requests already accepted still run: Shutdown's
	// graceful stops refuse the new ones.
	if s.isClosed() {
		return nil, Errorf(codes.Unavailable, "the server is shutting down")
	}
	m, err := s.model(req.Model)
	if err != nil {
		return nil, err
	}
	v, err := m.acquire(req.Version, req.Label)
	if err != nil {
		return nil, err
	}
	defer m.release(v)
	key := req.Signature
	if key == "" {
		key = DefaultSignature
	}
	sig := v.sigs[key]
	if sig == nil {
		if _, ok := v.meta.Signatures[key]; ok {
			return nil, Errorf(codes.FailedPrecondition, "signature %q has sparse or composite tensors, which cannot be served", key)
		}
		return nil, Errorf(codes.FailedPrecondition, "Serving signature key %q not found. (have: %s)", key, strings.Join(sortedKeys(v.sigs), ", "))
	}
	if err := checkInputs(sig, req.Inputs); err != nil {
		return nil, err
	}
	outs, err := selectOutputs(sig, req.Outputs)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
	}
	var res map[string]*Tensor
	if s.cfg.Batching != nil && !req.NoBatch {
		res, err = s.batched(ctx, v, sig, req.Inputs, outs)
	} else {
		res, err = s.run(ctx, v, sig, req.Inputs, outs)
	}
	if err != nil {
		return nil, err
	}
	return &Response{Model: m.cfg.Name, Version: v.n, Signature: key, Method: sig.MethodName, Outputs: res, Order: outs}, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// checkInputs checks the request's inputs against the signature.
func checkInputs(sig *savedmodel.Signature, in map[string]*Tensor) error {
	var extra, missing, want []string
	for _, t := range sig.Inputs {
		want = append(want, t.Alias)
		if in[t.Alias] == nil {
			missing = append(missing, t.Alias)
		}
	}
	for alias := range in {
		if _, ok := sig.Input(alias); !ok {
			extra = append(extra, alias)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		return InvalidArgument("input tensor alias not found in signature: %s. Inputs expected to be in the set {%s}.", strings.Join(extra, ","), strings.Join(want, ","))
	}
	if len(missing) > 0 {
		return InvalidArgument("input size does not match signature: %d!=%d len({%s}) != len({%s}). Missing but required: {%s}.",
			len(in), len(sig.Inputs), strings.Join(sortedKeys(in), ","), strings.Join(want, ","), strings.Join(missing, ","))
	}
	for _, spec := range sig.Inputs {
		t := in[spec.Alias]
		if err := t.Check(spec.Alias); err != nil {
			return err
		}
		if t.DType != spec.DType {
			return InvalidArgument("input %q: got %s, the signature expects %s", spec.Alias, t.DType, spec.DType)
		}
		if spec.Shape != nil && len(t.Shape) == len(spec.Shape) {
			for i, d := range spec.Shape {
				if d >= 0 && t.Shape[i] != d {
					return InvalidArgument("input %q: shape %v does not match the signature's %v (dimension %d)", spec.Alias, t.Shape, spec.Shape, i)
				}
			}
		}
	}
	return nil
}

// selectOutputs returns the outputs to fetch, in the signature's order.
func selectOutputs(sig *savedmodel.Signature, filter []string) ([]string, error) {
	var all []string
	for _, o := range sig.Outputs {
		all = append(all, o.Alias)
	}
	if len(filter) == 0 {
		return all, nil
	}
	seen := map[string]bool{}
	for _, f := range filter {
		if _, ok := sig.Output(f); !ok {
			return nil, InvalidArgument("output tensor alias not found in signature: %s Outputs expected to be in the set {%s}.", f, strings.Join(all, ","))
		}
		if seen[f] {
			return nil, InvalidArgument("duplicate output tensor alias in the output filter: %s", f)
		}
		seen[f] = true
	}
	var out []string
	for _, a := range all {
		if seen[a] {
			out = append(out, a)
		}
	}
	return out, nil
}

// run runs the signature once.
func (s *Server) run(ctx context.Context, v *version, sig *savedmodel.Signature, in map[string]*Tensor, outs []string) (map[string]*Tensor, error) {
	g := v.sm.Graph()
	feeds := make([]tf.Feed, 0, len(in))
	defer func() {
		for _, f := range feeds {
			f.Tensor.Close()
		}
	}()
	// Sorted feeds keep TensorFlow's executor cache to one entry per
	// signature.
	for _, alias := range sortedKeys(in) {
		spec, _ := sig.Input(alias)
		o, err := g.Output(spec.Name)
		if err != nil {
			return nil, Internal("input %q: %v", alias, err)
		}
		x, err := in[alias].toTF()
		if err != nil {
			return nil, InvalidArgument("input %q: %v", alias, err)
		}
		// Shapes are checked by the kernels, as TF Serving leaves them:
		// a [n] batch flows through a [-1,1] graph's elementwise ops.
		feeds = append(feeds, tf.Feed{Output: o, Tensor: x, AnyShape: true})
	}
	fetch := make([]tf.Output, len(outs))
	for i, alias := range outs {
		spec, _ := sig.Output(alias)
		o, err := g.Output(spec.Name)
		if err != nil {
			return nil, Internal("output %q: %v", alias, err)
		}
		fetch[i] = o
	}
	res, err := v.sm.Session().Run(ctx, feeds, fetch, nil)
	if err != nil {
		return nil, AsStatus(unwrapTF(err))
	}
	out := make(map[string]*Tensor, len(res))
	var ferr error
	for i, r := range res {
		if ferr == nil {
			var t *Tensor
			if t, ferr = fromTF(r); ferr == nil {
				out[outs[i]] = t
			}
		}
		r.Close()
	}
	if ferr != nil {
		return nil, ferr
	}
	return out, nil
}

// unwrapTF keeps TensorFlow's status code and message for the client.
func unwrapTF(err error) error {
	var te *tf.Error
	if errors.As(err, &te) {
		return Errorf(codes.Code(te.Code), "%s", te.Msg)
	}
	return err
}

// Serve serves gRPC on grpcLis and HTTP on httpLis (either may be nil)
// until Shutdown or Close; it returns nil then.
func (s *Server) Serve(grpcLis, httpLis net.Listener) error {
	s.mu.Lock()
	if s.closed || s.draining {
		s.mu.Unlock()
		return errors.New("serving: server is closed")
	}
	if httpLis != nil {
		if s.cfg.TLS != nil {
			httpLis = tls.NewListener(httpLis, s.cfg.TLS)
		}
		s.http = &http.Server{Handler: s.httpHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
			ConnState: s.trackConn}
	}
	hs := s.http
	s.mu.Unlock()
	errc := make(chan error, 2)
	n := 0
	if grpcLis != nil {
		n++
		go func() { errc <- s.grpc.Serve(grpcLis) }()
	}
	if hs != nil {
		n++
		go func() {
			err := hs.Serve(httpLis)
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			errc <- err
		}()
	}
	var first error
	for range n {
		if err := <-errc; err != nil && first == nil {
			first = err
			s.Close() // one port failing stops the other
		}
	}
	return first
}

// trackConn counts an HTTP connection from its accept until its goroutine
// ends (StateClosed is set last, after any lingering close).
func (s *Server) trackConn(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		s.conns.Add(1)
	case http.StateHijacked, http.StateClosed:
		s.conns.Done()
	}
}

// httpHandler wraps the mux with the token check and the size limit.
func (s *Server) httpHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Token != "" && !openPath(r.URL.Path) {
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) != 1 {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("WWW-Authenticate", "Bearer")
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprintln(w, `{"error": "missing or wrong bearer token"}`)
				return
			}
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxRequestBytes)
		}
		s.mux.ServeHTTP(w, r)
	})
}

// openPath is what answers without a token: liveness and readiness
// probes, the server's and a model's.
func openPath(p string) bool {
	switch p {
	case "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready":
		return true
	}
	return strings.HasPrefix(p, "/v2/models/") && strings.HasSuffix(p, "/ready") && !strings.Contains(p, "..")
}

func (s *Server) checkToken(ctx context.Context, method string) error {
	if s.cfg.Token == "" || strings.HasPrefix(method, "/grpc.health.v1.Health/") {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := strings.CutPrefix(v, "Bearer "); ok && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) == 1 {
			return nil
		}
	}
	return Errorf(codes.Unauthenticated, "missing or wrong bearer token")
}

func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.checkToken(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.checkToken(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

// Shutdown stops taking requests, lets those in flight finish (until ctx
// ends: then they are cut), and closes every model.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.draining = true
	hs := s.http
	s.mu.Unlock()
	s.health.Shutdown()
	var err error
	if hs != nil {
		err = hs.Shutdown(ctx)
	}
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		if err == nil {
			err = fmt.Errorf("serving: shutdown: requests still running: %w", ctx.Err())
		}
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

// OnClose registers f to run when the server closes, after the ports stop
// and before the models are freed: front ends release what they hold.
func (s *Server) OnClose(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onClose = append(s.onClose, f)
}

// Close stops serving at once and frees every model, once the requests
// holding them return. It is idempotent.
// closeConnsWait bounds how long Close waits for the HTTP connections it
// closed to finish the requests they were running.
const closeConnsWait = 30 * time.Second

// waitConns waits for the HTTP connections' goroutines, at most d; past it
// Close goes on (the models still wait for their runs) and says so.
func (s *Server) waitConns(d time.Duration) {
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.log.Warn("serving: close: HTTP requests still running; closing the models without them", "waited", d)
	}
}

func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	hs := s.http
	hooks := s.onClose
	s.mu.Unlock()
	s.cancel()
	if hs != nil {
		// Close returns once Serve stopped accepting, so no connection is
		// added after it; then wait for the goroutines of those it closed.
		hs.Close()
		s.waitConns(closeConnsWait)
	}
	s.grpc.Stop()
	for _, f := range hooks {
		f()
	}
	s.wg.Wait() // the poller and unloads in progress
	var errs []error
	for _, name := range s.names {
		m := s.models[name]
		m.mu.Lock()
		var vs []*version
		for _, v := range m.versions {
			if v.state == StateAvailable {
				v.retireLocked()
				vs = append(vs, v)
			}
		}
		m.mu.Unlock()
		for _, v := range vs {
			if err := s.unload(m, v); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
