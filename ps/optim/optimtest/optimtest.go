package optimtest

import (
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// Parity is the fixture: the Keras version that recorded it and its cases.
type Parity struct {
	Keras string `json:"keras"`
	Cases []Case `json:"cases"`
}

// Case is one optimizer run Keras recorded: the optimizer's Config (as
// optim.ParseConfig reads it), the variables and their initial values,
// the gradients of every step, the variables after every step, and the
// slots (slot name -> variable name -> values) after the last one.
type Case struct {
	Name      string     `json:"name"`
	Config    string     `json:"config"`
	Variables []Variable `json:"variables"`
	// Gradients and After map variable names to values, one map per step.
	Gradients  []map[string][]float32          `json:"gradients"`
	After      []map[string][]float32          `json:"after"`
	Slots      map[string]map[string][]float32 `json:"slots"`
	Iterations int                             `json:"iterations"`
}

// Variable is a variable of a Case.
type Variable struct {
	Name  string    `json:"name"`
	Shape []int64   `json:"shape"`
	Init  []float32 `json:"init"`
}

// LoadParity reads the fixture at path and requires at least one case.
func LoadParity(t *testing.T, path string) Parity {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var f Parity
	require.NoError(t, json.Unmarshal(data, &f))
	require.NotEmpty(t, f.Cases)
	return f
}

// Tol is the relative tolerance within which the Go optimizers reproduce
// Keras: |got-want| <= Tol*max(1, |want|).
const Tol = 1e-6

// RequireClose fails the test unless got has want's length and every
// element is within Tol of want's; what names the values in the message.
func RequireClose(t *testing.T, want, got []float32, what string) {
	t.Helper()
	require.Len(t, got, len(want), what)
	for i := range want {
		d := math.Abs(float64(want[i]) - float64(got[i]))
		if d > Tol*math.Max(1, math.Abs(float64(want[i]))) {
			t.Fatalf("%s[%d]: Keras %v, Go %v (diff %.3g > %g)", what, i, want[i], got[i], d, Tol)
		}
	}
}
