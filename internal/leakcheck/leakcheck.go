package leakcheck

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"go.uber.org/goleak"
)

// Option configures Main.
type Option interface{ apply(*options) }

type options struct {
	checks  []check
	ignores []goleak.Option
}

type check struct {
	name string
	fn   func() error
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// Check adds a check that runs after the tests passed: fn returns an error
// saying what leaked, or nil. name prefixes its report.
func Check(name string, fn func() error) Option {
	return optionFunc(func(o *options) { o.checks = append(o.checks, check{name: name, fn: fn}) })
}

// IgnoreGoroutine lets goroutines whose stack contains the function fn
// (a full name, "pkg/path.Func" or "pkg/path.(*Type).Method") outlive the
// tests. why says what starts them and why they never end; it is required
// so that each ignore documents itself.
func IgnoreGoroutine(fn, why string) Option {
	if why == "" {
		panic("leakcheck: IgnoreGoroutine(" + fn + ") needs a reason")
	}
	return optionFunc(func(o *options) { o.ignores = append(o.ignores, goleak.IgnoreAnyFunction(fn)) })
}

var (
	allocOnce sync.Once
	alloc     *memory.CheckedAllocator
)

// Allocator returns the process-wide checked Arrow allocator whose
// outstanding bytes Main checks: tests allocate through it (instead of
// memory.DefaultAllocator or an unchecked Go allocator). It wraps Arrow's
// Go allocator, whose buffers are 64-byte aligned.
func Allocator() *memory.CheckedAllocator {
	allocOnce.Do(func() { alloc = memory.NewCheckedAllocator(memory.NewGoAllocator()) })
	return alloc
}

// Main runs the tests and, if they passed, checks for leaks; then it exits.
// Call it from TestMain; a package that already has one calls Main where
// it called m.Run.
func Main(m *testing.M, opts ...Option) {
	os.Exit(run(m, os.Stderr, opts))
}

func run(m *testing.M, w io.Writer, opts []Option) int {
	if code := m.Run(); code != 0 {
		return code
	}
	if err := Verify(opts...); err != nil {
		fmt.Fprintf(w, "leakcheck: the tests passed but left leaks behind\n%v\n", err)
		return 1
	}
	return 0
}

// Verify runs the checks Main runs after the tests: goroutines first (a
// goroutine still finishing may release memory), then the checks the
// options add, then the Arrow bytes outstanding on Allocator. It returns
// one error naming every leak, or nil.
func Verify(opts ...Option) error {
	var o options
	// No goroutine is ignored by default: in every package that uses Main,
	// grpc-go, net/http and TensorFlow leave none behind once the servers
	// and clients the tests made are closed. A package that needs an
	// ignore passes IgnoreGoroutine with its reason.
	for _, opt := range opts {
		opt.apply(&o)
	}
	var errs []error
	if err := goleak.Find(o.ignores...); err != nil {
		errs = append(errs, fmt.Errorf("goroutines: %w", err))
	}
	for _, c := range o.checks {
		if err := c.fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		}
	}
	if err := arrowLeaks(); err != nil {
		errs = append(errs, fmt.Errorf("arrow: %w", err))
	}
	return errors.Join(errs...)
}

// arrowLeaks reports the bytes outstanding on Allocator and where each
// leaked buffer was allocated.
func arrowLeaks() error {
	if alloc == nil {
		return nil
	}
	n := alloc.CurrentAlloc()
	if n == 0 {
		return nil
	}
	var sites report
	alloc.AssertSize(&sites, 0)
	return fmt.Errorf("%d bytes outstanding on leakcheck.Allocator() (ARROW_CHECKED_MAX_RETAINED_FRAMES=N shows N callers of each site)\n%s",
		n, strings.Join(sites.lines, "\n"))
}

// report collects what memory.CheckedAllocator.AssertSize says.
type report struct{ lines []string }

func (r *report) Errorf(format string, args ...any) {
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

func (r *report) Helper() {}
