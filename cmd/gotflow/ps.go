package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gotflow/gotflow/distributed"
	"github.com/gotflow/gotflow/ps"
	"github.com/gotflow/gotflow/ps/optim"
)

func runPS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ps", stderr)
	listen := fs.String("listen", "127.0.0.1:7070", "address to serve gRPC on (loopback unless you say otherwise; with TF_CONFIG set, its port on every interface)")
	shard := fs.String("shard", "0/1", "this shard's index and the number of shards, as i/N (with TF_CONFIG set: task index / size of the ps job)")
	mode := fs.String("mode", "async-lock", "update mode: hogwild, async-lock, sync or bounded-staleness")
	workers := fs.Int("workers", 1, "pushes per step in sync mode")
	syncTimeout := fs.Duration("sync-timeout", time.Minute, "sync mode: how long a step waits for its last push")
	straggler := fs.String("straggler", "fail", "sync mode: what a step does at its timeout: fail (workers retry) or drop (apply what arrived)")
	maxStale := fs.Uint64("max-staleness", 0, "bounded-staleness mode: largest accepted staleness in versions")
	scaleStale := fs.Bool("staleness-scaling", false, "bounded-staleness mode: apply pushes beyond the bound with the learning rate divided by their staleness instead of rejecting them")
	optimizer := fs.String("optimizer", "sgd", "optimizer: sgd, momentum, adam, adamw, adagrad or rmsprop (as in train; a whole JSON configuration is accepted too)")
	optOptions := fs.String("optimizer-options", "", "more optimizer settings (learning_rate, beta_1, clipnorm, ...) as JSON or @file, as in train")
	snapDir := fs.String("snapshot-dir", "", "directory for snapshots; the shard resumes from its snapshot there")
	snapEvery := fs.Uint64("snapshot-every", 1000, "snapshot after this many updates (0: never by count)")
	snapInterval := fs.Duration("snapshot-interval", time.Minute, "snapshot this often when something changed (0: never by time)")
	walOn := fs.Bool("wal", true, "with --snapshot-dir: log every change and answer a push only once it is on disk, so a killed shard restarts with every acknowledged update (--wal=false: updates after the last snapshot die with the process)")
	tokenFile := fs.String("token-file", "", "file holding the bearer token clients must send (or set "+ps.EnvToken+")")
	tlsCert := fs.String("tls-cert", "", "PEM certificate to serve TLS with (needs --tls-key)")
	tlsKey := fs.String("tls-key", "", "PEM private key of --tls-cert")
	tlsClientCA := fs.String("tls-client-ca", "", "PEM CA bundle; when set, clients must present a certificate it signed")
	metrics := fs.String("metrics", "", "address to serve Prometheus metrics on at /metrics (empty: off)")
	allowNonFinite := fs.Bool("allow-non-finite", false, "accept NaN and Inf gradients instead of rejecting them")
	maxMsg := fs.Int("max-message-bytes", 64<<20, "largest gRPC message accepted")
	idle := fs.Duration("idle-timeout", 0, "exit once no request has come for this long (0: never); a shard whose job died then ends by itself")
	insecure := fs.Bool("insecure", false, "serve on a non-loopback address without TLS and a token")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if err := psFromTFConfig(fs, shard, listen); err != nil {
		return err
	}
	i, n, err := parseShard(*shard)
	if err != nil {
		return err
	}
	m, err := ps.ParseMode(*mode)
	if err != nil {
		return fmt.Errorf("%w: --mode: %v", errUsage, err)
	}
	optJSON, err := optimizerJSON(*optimizer, *optOptions)
	if err != nil {
		return err
	}
	cfg, err := optim.ParseConfig(optJSON)
	if err != nil {
		return fmt.Errorf("%w: --optimizer: %v", errUsage, err)
	}
	opts := []ps.ServerOption{
		ps.WithShard(i, n), ps.WithMode(m), ps.WithOptimizer(cfg), ps.WithWorkers(*workers),
		ps.WithMaxStaleness(*maxStale), ps.WithMaxMessageBytes(*maxMsg),
	}
	switch *straggler {
	case "fail":
		opts = append(opts, ps.WithSyncTimeout(*syncTimeout, ps.StragglerFail))
	case "drop":
		opts = append(opts, ps.WithSyncTimeout(*syncTimeout, ps.StragglerDrop))
	default:
		return fmt.Errorf("%w: --straggler %q, want fail or drop", errUsage, *straggler)
	}
	if *scaleStale {
		opts = append(opts, ps.WithStalenessScaling())
	}
	if *allowNonFinite {
		opts = append(opts, ps.WithAllowNonFinite())
	}
	if *snapDir != "" {
		opts = append(opts, ps.WithSnapshotDir(*snapDir, *snapEvery, *snapInterval))
		if !*walOn {
			opts = append(opts, ps.WithoutWAL())
		}
	}
	creds := ps.Credentials{TokenFile: *tokenFile, CertFile: *tlsCert, KeyFile: *tlsKey, CAFile: *tlsClientCA}
	if *tlsClientCA != "" && (*tlsCert == "" || *tlsKey == "") {
		return fmt.Errorf("%w: --tls-client-ca needs --tls-cert and --tls-key", errUsage)
	}
	authOpts, err := creds.ServerOptions()
	if err != nil {
		return err
	}
	opts = append(opts, authOpts...)
	token, _ := creds.LoadToken()
	secure := creds.TLS()
	if *idle > 0 {
		opts = append(opts, ps.WithIdleTimeout(*idle))
	}
	ctx, cancel := distributed.WithParent(ctx)
	defer cancel()

	srv, err := ps.NewServer(opts...)
	if err != nil {
		return err
	}
	lis, err := distributed.Listen(*listen)
	if err != nil {
		srv.Stop()
		return fmt.Errorf("--listen: %w", err)
	}
	if !isLoopback(lis.Addr()) && (token == "" || !secure) {
		if !*insecure {
			lis.Close()
			srv.Stop()
			return fmt.Errorf("%w: refusing to serve on %s without both TLS (--tls-cert, --tls-key) and a token (--token-file or %s): anyone who can reach it could read and change the model; pass --insecure to serve anyway",
				errUsage, lis.Addr(), ps.EnvToken)
		}
		fmt.Fprintf(stderr, "gotflow ps: warning: --insecure: serving on %s without both TLS and a token; anyone who can reach it can read and change the model\n", lis.Addr())
	}
	var metricsSrv *http.Server
	if *metrics != "" {
		mlis, err := net.Listen("tcp", *metrics)
		if err != nil {
			lis.Close()
			srv.Stop()
			return fmt.Errorf("--metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", srv.MetricsHandler())
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go metricsSrv.Serve(mlis)
		fmt.Fprintf(stdout, "gotflow ps: metrics on http://%s/metrics\n", mlis.Addr())
	}
	st := srv.Stats()
	fmt.Fprintf(stdout, "gotflow ps: shard %d/%d (%s, %s) listening on %s, version %d, %d parts\n",
		i, n, m, cfg.JSON(), lis.Addr(), st.Version, st.Parts)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	var serveErr error
	select {
	case <-ctx.Done():
		if cause := context.Cause(ctx); errors.Is(cause, distributed.ErrParentGone) {
			fmt.Fprintf(stdout, "gotflow ps: shard %d/%d stopping: %v\n", i, n, cause)
		}
	case <-srv.Idle():
		fmt.Fprintf(stdout, "gotflow ps: shard %d/%d stopping: no request for %v (--idle-timeout): its job is gone\n", i, n, *idle)
	case serveErr = <-served:
	}
	stopErr := srv.GracefulStop()
	if serveErr == nil {
		serveErr = <-served
	}
	if metricsSrv != nil {
		metricsSrv.Close()
	}
	st = srv.Stats()
	fmt.Fprintf(stdout, "gotflow ps: shard %d/%d stopped at version %d\n", i, n, st.Version)
	return errors.Join(serveErr, stopErr)
}

func parseShard(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return 0, 0, fmt.Errorf("%w: --shard %q, want i/N with 0 <= i < N", errUsage, s)
	}
	return i, n, nil
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// jsonArg returns the JSON object a flag gives inline or, as @FILE, in a
// file.
func jsonArg(name, v string) ([]byte, error) {
	b := []byte(v)
	if f, ok := strings.CutPrefix(strings.TrimSpace(v), "@"); ok {
		var err error
		if b, err = os.ReadFile(f); err != nil {
			return nil, fmt.Errorf("%w: --%s: %v", errUsage, name, err)
		}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil || obj == nil {
		if err == nil {
			err = fmt.Errorf("got %s", bytes.TrimSpace(b))
		}
		return nil, fmt.Errorf("%w: --%s: want a JSON object such as '{\"learning_rate\":0.01}' or @file: %v", errUsage, name, err)
	}
	return b, nil
}

// optimizerJSON merges ps' --optimizer and --optimizer-options into the
// JSON configuration optim.ParseConfig reads. --optimizer may itself
// be a whole configuration (JSON or @file), as SparkFlow passes it.
func optimizerJSON(name, options string) ([]byte, error) {
	cfg := map[string]json.RawMessage{}
	if n := strings.TrimSpace(name); strings.HasPrefix(n, "{") || strings.HasPrefix(n, "@") {
		b, err := jsonArg("optimizer", n)
		if err != nil {
			return nil, err
		}
		_ = json.Unmarshal(b, &cfg) // checked by jsonArg
	} else {
		cfg["optimizer"], _ = json.Marshal(n)
	}
	if options != "" {
		b, err := jsonArg("optimizer-options", options)
		if err != nil {
			return nil, err
		}
		var more map[string]json.RawMessage
		_ = json.Unmarshal(b, &more)
		for k, v := range more {
			if k == "optimizer" || k == "name" {
				return nil, fmt.Errorf("%w: --optimizer-options: name the optimizer with --optimizer, not %q", errUsage, k)
			}
			cfg[k] = v
		}
	}
	return json.Marshal(cfg)
}
