package arrowio_test

import (
	"testing"

	"github.com/gotflow/gotflow/internal/leakcheck"
)

// TestMain fails the package's tests when they leave Arrow memory on
// leakcheck.Allocator or a goroutine behind.
func TestMain(m *testing.M) { leakcheck.Main(m) }
