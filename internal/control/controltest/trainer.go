package controltest

import (
	"context"
	"errors"
	"sync"

	"github.com/gotflow/gotflow/internal/control"
)

// ChunkRows is how many rows Consume hands out at a time.
const ChunkRows = 4

// Works calls fn with each Work a hands out until the coordinator stops
// the task, when it returns nil, or until Next or fn returns an error,
// which it returns.
func Works(ctx context.Context, a *control.Agent, fn func(control.Work) error) error {
	for {
		w, err := a.Next(ctx)
		if errors.Is(err, control.ErrStopped) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(w); err != nil {
			return err
		}
	}
}

// Chunk is up to ChunkRows consecutive rows [Start, End) of one epoch's
// work; Step counts the chunks a Consume loop handed out, from 1.
type Chunk struct {
	Epoch      int
	Start, End int64
	Step       int64
}

// Rows is the number of rows in c.
func (c Chunk) Rows() int64 { return c.End - c.Start }

// Consume trains on a's work as Works does, calling train for each chunk
// of ChunkRows rows in order and then reporting the chunk to a with
// Advance(c.Rows(), c.Step, loss), loss being what train returned. An
// error from train ends the loop.
func Consume(ctx context.Context, a *control.Agent, train func(c Chunk) (loss float64, err error)) error {
	var step int64
	return Works(ctx, a, func(w control.Work) error {
		for _, r := range w.Ranges {
			for i := r.Start; i < r.End; i += ChunkRows {
				step++
				c := Chunk{Epoch: w.Epoch, Start: i, End: min(i+ChunkRows, r.End), Step: step}
				loss, err := train(c)
				if err != nil {
					return err
				}
				a.Advance(c.Rows(), c.Step, loss)
			}
		}
		return nil
	})
}

// ErrKilled is returned by TrainLoop when it stopped early.
var ErrKilled = errors.New("controltest: killed")

// TrainLoop is the loop a worker of the given rank runs against a: it
// records in rec each row it consumes per epoch and reports a loss of
// 1/step. stopAfter >= 0 makes it return ErrKilled (as a killed process
// goes silent) before the chunk that would take it past that many rows.
func TrainLoop(ctx context.Context, a *control.Agent, rec *RowLog, rank int, stopAfter int64) error {
	var total int64
	return Consume(ctx, a, func(c Chunk) (float64, error) {
		if stopAfter >= 0 && total+c.Rows() > stopAfter {
			return 0, ErrKilled
		}
		rec.Add(c.Epoch, rank, c.Start, c.End)
		total += c.Rows()
		return 1 / float64(c.Step), nil
	})
}

// RowLog records which ranks consumed which rows.
type RowLog struct {
	mu sync.Mutex
	// Seen maps epoch -> row -> the ranks that consumed it, in order.
	Seen map[int]map[int64][]int
}

// Add records that rank consumed rows [start, end) of epoch.
func (l *RowLog) Add(epoch, rank int, start, end int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Seen == nil {
		l.Seen = map[int]map[int64][]int{}
	}
	if l.Seen[epoch] == nil {
		l.Seen[epoch] = map[int64][]int{}
	}
	for i := start; i < end; i++ {
		l.Seen[epoch][i] = append(l.Seen[epoch][i], rank)
	}
}
