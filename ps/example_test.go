package ps_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/gotflow/gotflow/ps"
	"github.com/gotflow/gotflow/ps/optim"
)

// Two in-process shards, SGD with momentum configured from JSON, one
// worker pushing gradients and assigning a batch-norm statistic.
func ExampleNewLocalCluster() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opt, err := optim.ParseConfig([]byte(`{"optimizer": "sgd", "learning_rate": 0.5, "momentum": 0.9}`))
	if err != nil {
		log.Fatal(err)
	}
	cluster, err := ps.NewLocalCluster(2, ps.WithMode(ps.AsyncLock), ps.WithOptimizer(opt))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	c, err := cluster.Dial(ctx, ps.WithWorkerID("worker-0"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	err = c.Register(ctx, []ps.Variable{
		{Name: "dense/kernel", Shape: []int64{2, 2}, Trainable: true, Init: []float32{1, 2, 3, 4}},
		{Name: "bn/moving_mean", Shape: []int64{2}, Init: []float32{0, 0}},
	})
	if err != nil {
		log.Fatal(err)
	}
	grad := []ps.Tensor{{Name: "dense/kernel", Values: []float32{1, 1, 0, 0}}}
	weights := []ps.Tensor{{Name: "dense/kernel", Values: make([]float32, 4)}, {Name: "bn/moving_mean", Values: make([]float32, 2)}}
	for range 2 {
		if _, err := c.PushPull(ctx, grad, weights); err != nil {
			log.Fatal(err)
		}
		fmt.Println(weights[0].Values)
	}
	if err := c.Assign(ctx, []ps.Tensor{{Name: "bn/moving_mean", Values: []float32{0.25, -1}}}); err != nil {
		log.Fatal(err)
	}
	if err := c.Pull(ctx, weights); err != nil {
		log.Fatal(err)
	}
	fmt.Println(weights[1].Values)
	// Output:
	// [0.5 1.5 3 4]
	// [-0.45 0.55 3 4]
	// [0.25 -1]
}
