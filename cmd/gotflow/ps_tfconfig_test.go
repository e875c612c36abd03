package main

import (
	"context"
	"flag"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPSFromTFConfig(t *testing.T) {
	parse := func(args ...string) (*flag.FlagSet, *string, *string) {
		fs := flag.NewFlagSet("ps", flag.ContinueOnError)
		listen := fs.String("listen", "127.0.0.1:7070", "")
		shard := fs.String("shard", "0/1", "")
		require.NoError(t, fs.Parse(args))
		return fs, shard, listen
	}
	const cluster = `{"cluster":{"chief":["c:2222"],"worker":["w:2222"],"ps":["p0:2222","p1:2223"]},"task":{"type":"ps","index":1},"environment":"cloud"}`

	t.Setenv("TF_CONFIG", "")
	fs, shard, listen := parse()
	require.NoError(t, psFromTFConfig(fs, shard, listen))
	require.Equal(t, "0/1", *shard, "no TF_CONFIG: flags keep their defaults")
	require.Equal(t, "127.0.0.1:7070", *listen)

	t.Setenv("TF_CONFIG", cluster)
	fs, shard, listen = parse()
	require.NoError(t, psFromTFConfig(fs, shard, listen))
	require.Equal(t, "1/2", *shard)
	require.Equal(t, ":2223", *listen)

	fs, shard, listen = parse("--listen", "127.0.0.1:9000")
	require.NoError(t, psFromTFConfig(fs, shard, listen))
	require.Equal(t, "1/2", *shard)
	require.Equal(t, "127.0.0.1:9000", *listen, "explicit flags win")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for cfg, want := range map[string]string{
		`{"cluster":`: "TF_CONFIG is not valid JSON",
		`{"cluster":{"worker":["w:1"],"ps":["p:1"]},"task":{"type":"trainer","index":0}}`: `unknown task type "trainer"`,
		`{"cluster":{"worker":["w:1"],"ps":["p:1"]},"task":{"type":"ps","index":3}}`:      "index out of range",
		`{"cluster":{"worker":["w:1"],"ps":["p:1"]},"task":{"type":"worker","index":0}}`:  "gotflow ps runs ps tasks",
	} {
		t.Setenv("TF_CONFIG", cfg)
		err := runPS(ctx, nil, io.Discard, io.Discard)
		require.ErrorContains(t, err, want, cfg)
	}
}
