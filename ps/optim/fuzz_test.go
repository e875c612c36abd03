package optim

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzParseConfig feeds arbitrary JSON; whatever parses must build an
// optimizer that applies an update without panicking.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"optimizer":"adam","beta1":0.9,"schedule":{"type":"cosine_decay","decay_steps":3}}`))
	f.Add([]byte(`{"name":"rmsprop","decay":0.5,"momentum":0.1,"centered":true}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		o, err := New(c)
		require.NoError(t, err)
		w, g := []float32{1, -2}, []float32{0.5, 3}
		o.Apply(3, 1, w, g, o.NewSlots(2))
	})
}
