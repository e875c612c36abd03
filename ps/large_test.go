package ps

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLargeModel pushes and pulls a 100M-parameter model (400 MB of
// float32, one variable split into 100 chunks over two shards) through the
// full gRPC stack. It needs about 3 GB of memory and runs only when
// GOTFLOW_PS_LARGE=1.
func TestLargeModel(t *testing.T) {
	if os.Getenv("GOTFLOW_PS_LARGE") != "1" {
		t.Skip("set GOTFLOW_PS_LARGE=1 to run the 100M-parameter test")
	}
	ctx := testCtx(t, 5*time.Minute)
	const n = 100 << 20 // 104,857,600 parameters, exactly 100 chunks
	lc := newCluster(t, 2, sgd1())
	init := make([]float32, n)
	for i := range init {
		init[i] = float32(i % 1000)
	}
	c := dialCluster(t, ctx, lc)
	t0 := time.Now()
	require.NoError(t, c.Register(ctx, []Variable{{Name: "embedding", Shape: []int64{n / 64, 64}, Trainable: true, Init: init}}))
	t.Logf("register 100M: %v", time.Since(t0))
	for _, s := range lc.Servers() {
		require.Equal(t, 50, s.Stats().Parts)
	}
	g := []Tensor{{Name: "embedding", Values: make([]float32, n)}}
	for i := range g[0].Values {
		g[0].Values[i] = float32(i%7) - 3
	}
	dst := []Tensor{{Name: "embedding", Values: make([]float32, n)}}
	t0 = time.Now()
	_, err := c.PushPull(ctx, g, dst)
	require.NoError(t, err)
	t.Logf("push-pull 100M: %v", time.Since(t0))
	for i := 0; i < n; i += 9973 {
		require.Equal(t, init[i]-g[0].Values[i], dst[0].Values[i], "element %d", i)
	}
	require.Equal(t, init[n-1]-g[0].Values[n-1], dst[0].Values[n-1])
}
