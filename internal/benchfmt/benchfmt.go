// Package benchfmt writes benchmark results in the format `make bench`
// collects under bench/results/<area>.json: a JSON list of measurements, each
// taken beside a peer in the same run so that the ratio, not the noisy
// absolute figure, is what is compared.
package benchfmt

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gotflow/gotflow/internal/atomicfile"
)

// Result is one measurement.
type Result struct {
	Name      string  `json:"name"`       // what was measured, e.g. "arrow_to_tensor/float32x784/copy"
	Metric    string  `json:"metric"`     // e.g. "throughput", "latency_p50"
	Unit      string  `json:"unit"`       // e.g. "bytes/s", "rows/s", "ns"
	Value     float64 `json:"value"`      // gotflow's figure
	Peer      string  `json:"peer"`       // what it was compared with, e.g. "memcpy"; empty if none
	PeerValue float64 `json:"peer_value"` // the peer's figure in the same run and unit
	Ratio     float64 `json:"ratio"`      // Value/PeerValue for higher-is-better units, PeerValue/Value for lower-is-better
	Note      string  `json:"note,omitempty"`
}

// lowerIsBetter reports whether smaller values of unit are better.
func lowerIsBetter(unit string) bool {
	switch unit {
	case "ns", "us", "ms", "s", "ns/op", "bytes/op", "allocs/op", "B/op", "bytes":
		return true
	}
	return false
}

// New builds a Result and computes its ratio so that a ratio above 1 always
// means gotflow did better than the peer.
func New(name, metric, unit string, value float64, peer string, peerValue float64) Result {
	r := Result{Name: name, Metric: metric, Unit: unit, Value: value, Peer: peer, PeerValue: peerValue}
	if peer != "" && value > 0 && peerValue > 0 {
		if lowerIsBetter(unit) {
			r.Ratio = peerValue / value
		} else {
			r.Ratio = value / peerValue
		}
		r.Ratio = math.Round(r.Ratio*1000) / 1000
	}
	return r
}

// Write stores results as indented JSON at path, atomically: the file is
// written under a temporary name in the same directory and renamed.
func Write(path string, results []Result) error {
	data, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return fmt.Errorf("benchfmt: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("benchfmt: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(data, '\n')); err != nil {
		return fmt.Errorf("benchfmt: %w", err)
	}
	return nil
}

// Measure runs f as a Go benchmark (testing.Benchmark) and returns its result.
func Measure(f func(b *testing.B)) testing.BenchmarkResult {
	return testing.Benchmark(f)
}

// PerSecond converts a per-operation duration into a rate of n units per
// operation.
func PerSecond(n float64, perOp time.Duration) float64 {
	if perOp <= 0 {
		return 0
	}
	return n / perOp.Seconds()
}
