package feeder_test

import (
	"testing"

	"github.com/gotflow/gotflow/internal/leakcheck"
	"github.com/gotflow/gotflow/internal/leakcheck/tfleak"
)

// TestMain fails the package's tests when they leave a TensorFlow object
// open, Arrow memory on leakcheck.Allocator or a goroutine behind.
func TestMain(m *testing.M) { leakcheck.Main(m, tfleak.Objects()) }
