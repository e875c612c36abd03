package optim

import "testing"

// BenchmarkOptimizerApply measures one update of 1M parameters.
func BenchmarkOptimizerApply(b *testing.B) {
	for _, name := range []string{"sgd", "momentum", "adam", "adagrad", "rmsprop"} {
		b.Run(name, func(b *testing.B) {
			o, err := New(Config{Optimizer: name})
			if err != nil {
				b.Fatal(err)
			}
			const n = 1 << 20
			w, g := make([]float32, n), make([]float32, n)
			for i := range g {
				g[i] = float32(i%13) / 13
			}
			slots := o.NewSlots(n)
			b.SetBytes(4 * n)
			b.ReportAllocs()
			var it uint64
			for b.Loop() {
				o.Apply(it, 1, w, g, slots)
				it++
			}
		})
	}
}
