package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/gotflow/gotflow/distributed"
	"github.com/gotflow/gotflow/ps"
	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/serving/flight"
	"github.com/gotflow/gotflow/serving/kserve"
	"github.com/gotflow/gotflow/serving/tfserving"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	host := fs.String("host", "127.0.0.1", "address to bind both ports on (a non-loopback address needs TLS and a token, or --insecure)")
	port := fs.Int("port", 8500, "gRPC port (0: any free port)")
	restPort := fs.Int("rest_api_port", 8501, "HTTP/REST port (0: any free port, -1: no REST)")
	name := fs.String("model_name", "default", "name of the model served from --model_base_path")
	basePath := fs.String("model_base_path", "", "directory of the model's numbered versions")
	configFile := fs.String("model_config_file", "", "ModelServerConfig in protobuf text format, for several models (instead of --model_base_path)")
	poll := fs.Int("file_system_poll_wait_seconds", 1, "seconds between scans of the base paths for new versions (0: only at start)")
	batching := fs.Bool("enable_batching", false, "merge concurrent requests into batches")
	batchFile := fs.String("batching_parameters_file", "", "BatchingParameters in protobuf text format (with --enable_batching)")
	intra := fs.Int("tensorflow_intra_op_parallelism", 0, "threads of each session's intra-op pool (0: TensorFlow's default)")
	inter := fs.Int("tensorflow_inter_op_parallelism", 0, "threads of each session's inter-op pool (0: TensorFlow's default)")
	tags := fs.String("saved_model_tags", "serve", "comma-separated tag set of the meta graph to load")
	timeoutMS := fs.Int("rest_api_timeout_in_ms", 30000, "deadline of a request that brings none")
	maxBytes := fs.Int64("max_request_bytes", 64<<20, "largest request body or gRPC message")
	drain := fs.Duration("drain_timeout", 30*time.Second, "on SIGTERM, how long requests in flight may take to finish")
	tokenFile := fs.String("token-file", "", "file holding the bearer token clients must send (or set "+ps.EnvToken+")")
	tlsCert := fs.String("tls-cert", "", "PEM certificate to serve TLS with (needs --tls-key)")
	tlsKey := fs.String("tls-key", "", "PEM private key of --tls-cert")
	tlsClientCA := fs.String("tls-client-ca", "", "PEM CA bundle; when set, clients must present a certificate it signed")
	insecure := fs.Bool("insecure", false, "serve on a non-loopback address without TLS and a token")
	verbose := fs.Bool("v", false, "log every version loaded and unloaded, and TensorFlow's own log lines")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	cfg := serving.Config{
		PollInterval: time.Duration(*poll) * time.Second, Tags: strings.Split(*tags, ","),
		IntraOpThreads: *intra, InterOpThreads: *inter, MaxRequestBytes: *maxBytes,
		RequestTimeout: time.Duration(*timeoutMS) * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	}
	if *poll <= 0 {
		cfg.PollInterval = -1
	}
	switch {
	case *configFile != "" && *basePath != "":
		return fmt.Errorf("%w: give --model_base_path or --model_config_file, not both", errUsage)
	case *configFile != "":
		models, err := tfserving.ReadModelConfig(*configFile)
		if err != nil {
			return err
		}
		cfg.Models = models
	case *basePath != "":
		cfg.Models = []serving.ModelConfig{{Name: *name, BasePath: *basePath}}
	default:
		return fmt.Errorf("%w: --model_base_path (or --model_config_file) is required", errUsage)
	}
	if *batchFile != "" && !*batching {
		return fmt.Errorf("%w: --batching_parameters_file needs --enable_batching", errUsage)
	}
	if *batching {
		cfg.Batching = &serving.BatchingParameters{}
		if *batchFile != "" {
			p, err := tfserving.ReadBatchingParameters(*batchFile)
			if err != nil {
				return err
			}
			cfg.Batching = p
		}
	}
	creds := ps.Credentials{TokenFile: *tokenFile, CertFile: *tlsCert, KeyFile: *tlsKey, CAFile: *tlsClientCA}
	if *tlsClientCA != "" && (*tlsCert == "" || *tlsKey == "") {
		return fmt.Errorf("%w: --tls-client-ca needs --tls-cert and --tls-key", errUsage)
	}
	tlsCfg, err := creds.ServerTLS()
	if err != nil {
		return err
	}
	token, err := creds.LoadToken()
	if err != nil {
		return err
	}
	cfg.TLS, cfg.Token = tlsCfg, token
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}

	grpcLis, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		return fmt.Errorf("--port: %w", err)
	}
	var restLis net.Listener
	if *restPort >= 0 {
		if restLis, err = net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*restPort))); err != nil {
			grpcLis.Close()
			return fmt.Errorf("--rest_api_port: %w", err)
		}
	}
	closeLis := func() {
		grpcLis.Close()
		if restLis != nil {
			restLis.Close()
		}
	}
	if !isLoopback(grpcLis.Addr()) && (token == "" || tlsCfg == nil) {
		if !*insecure {
			closeLis()
			return fmt.Errorf("%w: refusing to serve on %s without both TLS (--tls-cert, --tls-key) and a token (--token-file or %s): anyone who can reach it could use the models; pass --insecure to serve anyway",
				errUsage, *host, ps.EnvToken)
		}
		fmt.Fprintf(stderr, "gotflow serve: warning: --insecure: serving on %s without both TLS and a token\n", *host)
	}

	ctx, cancel := distributed.WithParent(ctx)
	defer cancel()
	srv, err := serving.NewServer(ctx, cfg)
	if err != nil {
		closeLis()
		return err
	}
	registerFrontEnds(srv)
	for _, m := range srv.Models() {
		if !srv.ModelReady(m, 0) {
			fmt.Fprintf(stderr, "gotflow serve: warning: model %q has no loadable version yet; it is served once one appears\n", m)
		}
	}
	line := fmt.Sprintf("serving %s: gRPC on %s", strings.Join(srv.Models(), ", "), grpcLis.Addr())
	if restLis != nil {
		line += fmt.Sprintf(", REST on %s", restLis.Addr())
	}
	fmt.Fprintln(stdout, line) // one write: programs read the addresses from it
	done := make(chan error, 1)
	go func() { done <- srv.Serve(grpcLis, restLis) }()
	select {
	case err := <-done:
		srv.Close()
		return err
	case <-ctx.Done():
	}
	fmt.Fprintf(stderr, "gotflow serve: shutting down: draining requests in flight (up to %s)\n", *drain)
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), *drain)
	defer dcancel()
	serr := srv.Shutdown(dctx)
	if err := <-done; err != nil && serr == nil {
		serr = err
	}
	return serr
}

// registerFrontEnds mounts every API on the server's ports.
func registerFrontEnds(s *serving.Server) {
	tfserving.Register(s)
	tfserving.RegisterREST(s)
	kserve.Register(s)
	flight.Register(s)
}
