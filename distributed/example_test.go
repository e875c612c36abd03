package distributed_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/gotflow/gotflow/distributed"
)

// A training loop on the in-process launcher: each epoch every trainer
// asks its Agent for row ranges, maps them through the epoch's shuffled
// order (the same on every trainer, derived from the seed), trains, and
// reports progress. OnEpochEnd runs once all trainers are idle: the place
// to evaluate, checkpoint and decide on early stopping.
func ExampleInProcessLauncher() {
	const rows, epochs, seed = 1000, 3, 42
	order := func(epoch int) []int { // the epoch's row permutation
		r := rand.New(rand.NewPCG(seed, uint64(epoch)))
		return r.Perm(rows)
	}
	var mu sync.Mutex
	trained := map[int]int{} // epoch -> rows trained

	l := distributed.InProcessLauncher{
		Trainer: func(ctx context.Context, env distributed.TaskEnv, a *distributed.Agent) error {
			var step int64
			for {
				w, err := a.Next(ctx)
				if errors.Is(err, distributed.ErrStopped) {
					return nil // the job is over
				}
				if err != nil {
					return err
				}
				perm := order(w.Epoch)
				for _, rg := range w.Ranges {
					batch := perm[rg.Start:rg.End] // row indices to train on
					step++
					mu.Lock()
					trained[w.Epoch] += len(batch)
					mu.Unlock()
					a.Advance(rg.Len(), step, 0)
				}
			}
		},
	}
	res, err := l.Launch(context.Background(), distributed.JobConfig{
		Workers: 4, Rows: rows, Epochs: epochs,
		Heartbeat: distributed.HeartbeatConfig{Interval: 10 * time.Millisecond},
		MonitorHooks: distributed.MonitorHooks{OnEpochEnd: func(epoch int) bool {
			mu.Lock()
			defer mu.Unlock()
			fmt.Printf("epoch %d: %d rows\n", epoch, trained[epoch])
			return false // true stops early
		}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Reason)
	// Output:
	// epoch 0: 1000 rows
	// epoch 1: 1000 rows
	// epoch 2: 1000 rows
	// completed 3 epochs
}
