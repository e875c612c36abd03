package tune

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gotflow/gotflow/estimator"
)

// Space is a study's search space, objective, budget, algorithm and early
// stopping, in the shape of a Kubeflow Katib Experiment's spec (the same
// key names), plus a time budget. A Katib Experiment file (apiVersion,
// kind, metadata, spec) is read as its spec; the keys that describe
// Kubernetes trial jobs (trialTemplate, metricsCollectorSpec, resumePolicy)
// are ignored.
type Space struct {
	Objective Objective `json:"objective"`
	Algorithm Algorithm `json:"algorithm"`
	// Parameters are TFEstimator fields, by their JSON names
	// (learning_rate, batch_size, optimizer, optimizer_options, mode,
	// epochs, pull_every, bundle, ...).
	Parameters []Parameter `json:"parameters"`
	// MaxTrialCount is the number of trials (default 12; for grid, at most
	// the grid's size, which is the default).
	MaxTrialCount int `json:"maxTrialCount,omitempty"`
	// ParallelTrialCount is how many trials run at once (default 1).
	ParallelTrialCount int `json:"parallelTrialCount,omitempty"`
	// MaxFailedTrialCount ends the study once more trials than this failed
	// (default 3).
	MaxFailedTrialCount *int `json:"maxFailedTrialCount,omitempty"`
	// TimeBudget, if set ("30m", "2h"), stops starting trials after it and
	// stops the running ones when it runs out.
	TimeBudget Duration `json:"timeBudget,omitempty"`
	// EarlyStopping, if set, stops unpromising trials after an epoch.
	EarlyStopping *EarlyStopping `json:"earlyStopping,omitempty"`
}

// Objective is what the study optimises: a metric a trial reports after
// every epoch (loss, val_loss, or a bundle metric with or without the val_
// prefix, such as val_accuracy).
type Objective struct {
	Type                string   `json:"type"` // minimize or maximize
	ObjectiveMetricName string   `json:"objectiveMetricName"`
	Goal                *float64 `json:"goal,omitempty"` // stop starting trials once one reaches it
}

// Algorithm picks the sampler: random, grid or tpe. Settings:
// random_state (the seed, default 1) for all three; for tpe also
// n_startup_trials (random trials first, default 10, as Optuna), gamma (fraction of
// trials that are "good", default 0.25) and n_ei_candidates (default 24).
type Algorithm struct {
	AlgorithmName     string    `json:"algorithmName"`
	AlgorithmSettings []Setting `json:"algorithmSettings,omitempty"`
}

// Setting is a name/value pair, as Katib writes algorithm settings.
type Setting struct {
	Name  string `json:"name"`
	Value Value  `json:"value"`
}

// Parameter is one dimension of the space.
type Parameter struct {
	Name          string        `json:"name"`
	ParameterType string        `json:"parameterType"` // double, int, categorical (or discrete)
	FeasibleSpace FeasibleSpace `json:"feasibleSpace"`
}

// FeasibleSpace bounds a parameter: Min and Max (and Step, for grid) for
// double and int, List for categorical and discrete. Distribution
// logUniform samples uniformly in log space (Min > 0).
type FeasibleSpace struct {
	Min          Value   `json:"min,omitempty"`
	Max          Value   `json:"max,omitempty"`
	Step         Value   `json:"step,omitempty"`
	List         []Value `json:"list,omitempty"`
	Distribution string  `json:"distribution,omitempty"` // uniform (default) or logUniform
}

// EarlyStopping picks the trial scheduler: asha or median. ASHA settings
// (Ray Tune's defaults): max_t 100 (capped at the trials' epochs),
// grace_period 1, reduction_factor 4. Median settings: grace_period 1,
// min_samples_required 3.
type EarlyStopping struct {
	AlgorithmName     string    `json:"algorithmName"`
	AlgorithmSettings []Setting `json:"algorithmSettings,omitempty"`
}

// Value is a scalar of a space file: Katib writes numbers as strings, and
// both forms are accepted.
type Value string

// UnmarshalJSON accepts a string, a number or a boolean.
func (v *Value) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*v = Value(s)
		return nil
	}
	var x json.Number
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&x); err == nil {
		*v = Value(x.String())
		return nil
	}
	var t bool
	if err := json.Unmarshal(b, &t); err == nil {
		*v = Value(strconv.FormatBool(t))
		return nil
	}
	return fmt.Errorf("want a string or a number, got %s", b)
}

// Duration is a time.Duration written as "30m" in space files.
type Duration time.Duration

// UnmarshalJSON accepts "1h30m" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil || v < 0 {
			return fmt.Errorf("want a duration such as 30m or 2h, got %q", s)
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil || secs < 0 {
		return fmt.Errorf("want a duration such as 30m or 2h, got %s", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// MarshalJSON writes the duration as "30m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// ReadSpace reads a space file, YAML or JSON.
func ReadSpace(path string) (*Space, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tune: space: %w", err)
	}
	s, err := ParseSpace(b)
	if err != nil {
		return nil, fmt.Errorf("tune: space %s: %w", path, err)
	}
	return s, nil
}

// katibIgnored are the keys of a Katib Experiment spec that describe how
// Kubernetes runs trials; gotflow runs them itself.
var katibIgnored = []string{"trialTemplate", "metricsCollectorSpec", "resumePolicy"}

// ParseSpace parses a space from YAML or JSON (JSON is YAML) and checks
// it (Space.Check).
func ParseSpace(b []byte) (*Space, error) {
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML or JSON: %w", err)
	}
	m, ok := doc.(map[string]any)
	if !ok {
		return nil, errors.New("want a mapping at the top level (objective, algorithm, parameters, ...)")
	}
	if spec, ok := m["spec"].(map[string]any); ok && m["kind"] != nil {
		m = spec // a Katib Experiment
	}
	for _, k := range katibIgnored {
		delete(m, k)
	}
	j, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("cannot read the space: %w", err)
	}
	var s Space
	d := json.NewDecoder(bytes.NewReader(j))
	d.DisallowUnknownFields()
	if err := d.Decode(&s); err != nil {
		return nil, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if err := s.Check(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Managed are the TFEstimator fields a study sets for every trial; they
// cannot be parameters.
var managed = map[string]bool{"model_dir": true, "export_dir": true, "tensorboard_dir": true, "binary": true}

// estimatorFields maps the JSON names of TFEstimator's fields to their
// types.
func estimatorFields() map[string]reflect.Type {
	out := map[string]reflect.Type{}
	t := reflect.TypeFor[estimator.TFEstimator]()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out[name] = f.Type
		}
	}
	return out
}

// Check validates the space and fills in its defaults; every error names
// the key that is wrong.
func (s *Space) Check() error {
	o := &s.Objective
	switch o.Type {
	case "minimize", "maximize":
	case "":
		return errors.New("objective.type is missing: want minimize or maximize")
	default:
		return fmt.Errorf("objective.type %q: want minimize or maximize", o.Type)
	}
	if o.ObjectiveMetricName == "" {
		return errors.New("objective.objectiveMetricName is missing (e.g. val_loss or val_accuracy)")
	}
	if len(s.Parameters) == 0 {
		return errors.New("parameters is empty: name at least one TFEstimator field to search")
	}
	fields := estimatorFields()
	seen := map[string]bool{}
	for i := range s.Parameters {
		p := &s.Parameters[i]
		key := fmt.Sprintf("parameters[%d]", i)
		if p.Name == "" {
			return fmt.Errorf("%s.name is missing", key)
		}
		key = fmt.Sprintf("parameters[%d] (%s)", i, p.Name)
		if _, ok := fields[p.Name]; !ok || managed[p.Name] {
			names := make([]string, 0, len(fields))
			for n := range fields {
				if !managed[n] {
					names = append(names, n)
				}
			}
			sort.Strings(names)
			return fmt.Errorf("%s: %q is not a TFEstimator field a trial can set; want one of %s", key, p.Name, strings.Join(names, ", "))
		}
		if seen[p.Name] {
			return fmt.Errorf("%s: parameter %q is listed twice", key, p.Name)
		}
		seen[p.Name] = true
		if err := p.check(key, fields[p.Name]); err != nil {
			return err
		}
	}
	switch s.Algorithm.AlgorithmName {
	case "":
		s.Algorithm.AlgorithmName = "random"
	case "random", "grid", "tpe":
	default:
		return fmt.Errorf("algorithm.algorithmName %q: want random, grid or tpe", s.Algorithm.AlgorithmName)
	}
	if err := checkSettings("algorithm.algorithmSettings", s.Algorithm.AlgorithmSettings, map[string]bool{
		"random_state": true, "n_startup_trials": true, "gamma": true, "n_ei_candidates": true}); err != nil {
		return err
	}
	if s.Algorithm.AlgorithmName == "grid" {
		n, err := gridSize(s.Parameters)
		if err != nil {
			return err
		}
		if s.MaxTrialCount == 0 || s.MaxTrialCount > n {
			s.MaxTrialCount = n
		}
	}
	if s.MaxTrialCount == 0 {
		s.MaxTrialCount = 12
	}
	if s.MaxTrialCount < 0 {
		return fmt.Errorf("maxTrialCount %d: want at least 1", s.MaxTrialCount)
	}
	if s.ParallelTrialCount == 0 {
		s.ParallelTrialCount = 1
	}
	if s.ParallelTrialCount < 0 {
		return fmt.Errorf("parallelTrialCount %d: want at least 1", s.ParallelTrialCount)
	}
	if s.MaxFailedTrialCount == nil {
		three := 3
		s.MaxFailedTrialCount = &three
	} else if *s.MaxFailedTrialCount < 0 {
		return fmt.Errorf("maxFailedTrialCount %d: want 0 or more", *s.MaxFailedTrialCount)
	}
	if es := s.EarlyStopping; es != nil {
		switch es.AlgorithmName {
		case "asha":
			if err := checkSettings("earlyStopping.algorithmSettings", es.AlgorithmSettings, map[string]bool{
				"max_t": true, "grace_period": true, "reduction_factor": true}); err != nil {
				return err
			}
		case "median", "medianstop":
			if err := checkSettings("earlyStopping.algorithmSettings", es.AlgorithmSettings, map[string]bool{
				"grace_period": true, "min_samples_required": true}); err != nil {
				return err
			}
		default:
			return fmt.Errorf("earlyStopping.algorithmName %q: want asha or median", es.AlgorithmName)
		}
	}
	return nil
}

func checkSettings(key string, ss []Setting, known map[string]bool) error {
	for i, st := range ss {
		if !known[st.Name] {
			names := slices.Sorted(func(yield func(string) bool) {
				for k := range known {
					if !yield(k) {
						return
					}
				}
			})
			return fmt.Errorf("%s[%d]: unknown setting %q; want one of %s", key, i, st.Name, strings.Join(names, ", "))
		}
		if _, err := strconv.ParseFloat(string(st.Value), 64); err != nil {
			return fmt.Errorf("%s[%d] (%s): value %q is not a number", key, i, st.Name, st.Value)
		}
	}
	return nil
}

// setting returns the named setting's value, or def.
func setting(ss []Setting, name string, def float64) float64 {
	for _, st := range ss {
		if st.Name == name {
			v, _ := strconv.ParseFloat(string(st.Value), 64)
			return v
		}
	}
	return def
}

func (p *Parameter) check(key string, field reflect.Type) error {
	fs := &p.FeasibleSpace
	switch p.ParameterType {
	case "double", "int":
		if field.Kind() == reflect.String || field.Kind() == reflect.Bool {
			return fmt.Errorf("%s: TFEstimator field %s is a %s; search it as categorical", key, p.Name, field.Kind())
		}
		lo, err1 := strconv.ParseFloat(string(fs.Min), 64)
		hi, err2 := strconv.ParseFloat(string(fs.Max), 64)
		switch {
		case fs.Min == "" || fs.Max == "":
			return fmt.Errorf("%s: feasibleSpace needs min and max for a %s parameter", key, p.ParameterType)
		case err1 != nil || math.IsNaN(lo) || math.IsInf(lo, 0):
			return fmt.Errorf("%s: feasibleSpace.min %q is not a number", key, fs.Min)
		case err2 != nil || math.IsNaN(hi) || math.IsInf(hi, 0):
			return fmt.Errorf("%s: feasibleSpace.max %q is not a number", key, fs.Max)
		case lo > hi:
			return fmt.Errorf("%s: feasibleSpace.min %v is greater than max %v", key, lo, hi)
		case p.ParameterType == "int" && (lo != math.Trunc(lo) || hi != math.Trunc(hi)):
			return fmt.Errorf("%s: feasibleSpace min %v and max %v must be integers for an int parameter", key, lo, hi)
		case p.ParameterType == "int" && field.Kind() == reflect.Float64:
		case p.ParameterType == "double" && field.Kind() != reflect.Float64:
			return fmt.Errorf("%s: TFEstimator field %s is an integer; search it as int", key, p.Name)
		}
		if len(fs.List) > 0 {
			return fmt.Errorf("%s: feasibleSpace.list is for categorical parameters; a %s parameter takes min and max", key, p.ParameterType)
		}
		switch fs.Distribution {
		case "", "uniform":
		case "logUniform":
			if lo <= 0 {
				return fmt.Errorf("%s: feasibleSpace.distribution logUniform needs min > 0, got %v", key, lo)
			}
		default:
			return fmt.Errorf("%s: feasibleSpace.distribution %q: want uniform or logUniform", key, fs.Distribution)
		}
		if fs.Step != "" {
			st, err := strconv.ParseFloat(string(fs.Step), 64)
			if err != nil || st <= 0 || math.IsInf(st, 0) {
				return fmt.Errorf("%s: feasibleSpace.step %q: want a number > 0", key, fs.Step)
			}
		}
	case "categorical", "discrete":
		if len(fs.List) == 0 {
			return fmt.Errorf("%s: feasibleSpace.list is empty: a %s parameter needs at least one value", key, p.ParameterType)
		}
		if fs.Min != "" || fs.Max != "" {
			return fmt.Errorf("%s: a %s parameter takes feasibleSpace.list, not min and max", key, p.ParameterType)
		}
		seen := map[Value]bool{}
		for i, v := range fs.List {
			if seen[v] {
				return fmt.Errorf("%s: feasibleSpace.list[%d] %q is listed twice", key, i, v)
			}
			seen[v] = true
			if _, err := convert(v, field); err != nil {
				return fmt.Errorf("%s: feasibleSpace.list[%d]: %w", key, i, err)
			}
		}
	case "":
		return fmt.Errorf("%s: parameterType is missing: want double, int or categorical", key)
	default:
		return fmt.Errorf("%s: parameterType %q: want double, int or categorical", key, p.ParameterType)
	}
	return nil
}

// convert turns a space value into the JSON value of a TFEstimator field
// of type t.
func convert(v Value, t reflect.Type) (any, error) {
	s := string(v)
	switch t.Kind() {
	case reflect.String:
		return s, nil
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", s)
		}
		return b, nil
	case reflect.Int, reflect.Int64, reflect.Int32:
		if t == reflect.TypeFor[time.Duration]() {
			d, err := time.ParseDuration(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not a duration such as 10s", s)
			}
			return int64(d), nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", s)
		}
		return n, nil
	case reflect.Float64:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", s)
		}
		return x, nil
	}
	// JSON-valued fields (optimizer_options, early_stopping, maps).
	if !json.Valid([]byte(s)) {
		return nil, fmt.Errorf("%q is not valid JSON for a %s", s, t)
	}
	return json.RawMessage(s), nil
}

// gridSize is the number of points of the space's grid.
func gridSize(ps []Parameter) (int, error) {
	n := 1
	for i, p := range ps {
		pts, err := gridPoints(p)
		if err != nil {
			return 0, fmt.Errorf("parameters[%d] (%s): %w", i, p.Name, err)
		}
		if n > math.MaxInt32/len(pts) {
			return 0, errors.New("the grid has more than 2^31 points")
		}
		n *= len(pts)
	}
	return n, nil
}

// gridPoints are a parameter's grid values: min, min+step, ... up to max
// (for logUniform: min, min·step, ...; int parameters step 1 by default),
// or the list.
func gridPoints(p Parameter) ([]Value, error) {
	fs := p.FeasibleSpace
	if p.ParameterType == "categorical" || p.ParameterType == "discrete" {
		return fs.List, nil
	}
	lo, _ := strconv.ParseFloat(string(fs.Min), 64)
	hi, _ := strconv.ParseFloat(string(fs.Max), 64)
	step, _ := strconv.ParseFloat(string(fs.Step), 64)
	if fs.Step == "" {
		if p.ParameterType != "int" {
			return nil, errors.New("grid needs feasibleSpace.step for a double parameter")
		}
		step = 1
	}
	logScale := fs.Distribution == "logUniform"
	if logScale && step <= 1 {
		return nil, fmt.Errorf("grid on a logUniform parameter multiplies by feasibleSpace.step, which must be > 1, got %v", step)
	}
	var out []Value
	for k := 0; ; k++ {
		x := lo + float64(k)*step
		if logScale {
			x = lo * math.Pow(step, float64(k))
		}
		if !logScale && x > hi+1e-9*step || logScale && x > hi*(1+1e-9) {
			break // the tolerance keeps an end point that rounding overshoots
		}
		if len(out) >= 1<<20 {
			return nil, errors.New("the grid has more than 2^20 points for this parameter")
		}
		if p.ParameterType == "int" {
			out = append(out, Value(strconv.FormatInt(int64(math.Round(x)), 10)))
		} else {
			out = append(out, Value(strconv.FormatFloat(x, 'g', 12, 64)))
		}
	}
	return out, nil
}

// marshal writes the space as JSON, with its defaults filled in.
func (s *Space) marshal() []byte {
	b, _ := json.MarshalIndent(s, "", "  ")
	return append(b, '\n')
}
