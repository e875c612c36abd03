package estimator_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/internal/testcerts"
	"github.com/gotflow/gotflow/ps"
)

// psAddr reads the address a job's shard 0 serves on from its log.
func psAddr(t *testing.T, modelDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(modelDir, "logs", "ps-0.log"))
	require.NoError(t, err)
	m := regexp.MustCompile(`listening on (\S+),`).FindSubmatch(b)
	require.NotNil(t, m, "no address in the shard's log:\n%s", b)
	return string(m[1])
}

// TestFitProcessesWithTLSAndToken trains against shards that require a
// bearer token and client certificates (mTLS), and checks while the job
// runs that those shards refuse a client without them.
func TestFitProcessesWithTLSAndToken(t *testing.T) {
	files := testcerts.Write(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600))
	e := processEstimator(t)
	e.Mode = "async-lock"
	e.PSAuth = ps.Credentials{TokenFile: tokenFile, CertFile: files.Cert, KeyFile: files.Key, CAFile: files.CA}
	refusals := map[string]error{}
	e.Hooks.OnEpoch = func(i estimator.EpochInfo) {
		if i.Epoch != 0 {
			return
		}
		addr := []string{psAddr(t, e.ModelDir)}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for name, creds := range map[string]ps.Credentials{
			"plain":               {Token: "-"},
			"token only":          {TokenFile: tokenFile},
			"TLS, no client cert": {TokenFile: tokenFile, CAFile: files.CA},
			"mTLS, wrong token":   {Token: "guess", CertFile: files.Cert, KeyFile: files.Key, CAFile: files.CA},
		} {
			opts, err := creds.ClientOptions()
			require.NoError(t, err)
			dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
			c, err := ps.Dial(dctx, addr, append(opts, ps.WithRetry(1, time.Millisecond, time.Millisecond))...)
			if err == nil {
				_, err = c.Stats(dctx)
				c.Close()
			}
			dcancel()
			refusals[name] = err
		}
	}
	m, err := fitProcesses(t, &e)
	require.NoError(t, err)
	defer m.Close()
	require.Len(t, predict(t, m), 96*3)
	require.Len(t, refusals, 4)
	for name, err := range refusals {
		require.Error(t, err, name)
	}
	require.Equal(t, codes.Unauthenticated, status.Code(refusals["mTLS, wrong token"]), "%v", refusals["mTLS, wrong token"])
	requireNoProcesses(t, e.ModelDir)
}

// TestFitProcessesChildFailsAtStart: a shard that cannot start (its
// snapshot was taken with another optimizer) fails Fit at once with the
// shard's own reason, and the job file of the earlier run stays.
func TestFitProcessesChildFailsAtStart(t *testing.T) {
	e := processEstimator(t)
	e.Epochs = 1
	m, err := fitProcesses(t, &e)
	require.NoError(t, err)
	m.Close()
	jobPath := filepath.Join(e.ModelDir, "job.json")
	before, err := os.ReadFile(jobPath)
	require.NoError(t, err)

	e.Epochs, e.Optimizer = 3, "adam"
	start := time.Now()
	_, err = fitProcesses(t, &e)
	require.ErrorContains(t, err, "task ps:0 exited during start-up")
	require.ErrorContains(t, err, "was taken with optimizer")
	require.Less(t, time.Since(start), 25*time.Second, "the parent does not wait out its start timeout")
	after, err := os.ReadFile(jobPath)
	require.NoError(t, err)
	require.Equal(t, string(before), string(after), "job.json is replaced only by a job that started")
	require.NoFileExists(t, filepath.Join(e.ModelDir, "job.starting.json"))
	requireNoProcesses(t, e.ModelDir)
}
