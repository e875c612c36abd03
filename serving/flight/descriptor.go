package flight

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/flight"

	"github.com/gotflow/gotflow/serving"
)

// Command is the JSON of a CMD flight descriptor. Model is required;
// Version (> 0) or Label picks a version (neither: the newest); Signature
// defaults to serving_default; Outputs filters the signature's outputs
// (empty: all of them, in the signature's order).
type Command struct {
	Model     string   `json:"model"`
	Version   int64    `json:"version,omitempty"`
	Label     string   `json:"label,omitempty"`
	Signature string   `json:"signature,omitempty"`
	Outputs   []string `json:"outputs,omitempty"`
}

// target is what a descriptor or a model ticket names.
type target = Command

const descriptorForms = `PATH ["<model>"] or ["<model>", "<version>"], or CMD {"model", "version", "label", "signature", "outputs"} as JSON`

// parseDescriptor reads a flight descriptor.
func parseDescriptor(d *flight.FlightDescriptor) (target, error) {
	if d == nil {
		return target{}, serving.InvalidArgument("no flight descriptor: send one, %s", descriptorForms)
	}
	switch d.GetType() {
	case flight.DescriptorPATH:
		p := d.GetPath()
		if len(p) < 1 || len(p) > 2 || p[0] == "" {
			return target{}, serving.InvalidArgument("flight descriptor path %q: want %s", p, descriptorForms)
		}
		t := target{Model: p[0]}
		if len(p) == 2 {
			v, err := strconv.ParseInt(p[1], 10, 64)
			if err != nil || v <= 0 {
				return target{}, serving.InvalidArgument("flight descriptor path %q: version %q is not a positive integer", p, p[1])
			}
			t.Version = v
		}
		return t, nil
	case flight.DescriptorCMD:
		return parseCommand(d.GetCmd(), "flight descriptor command")
	}
	return target{}, serving.InvalidArgument("flight descriptor of type %v: want %s", d.GetType(), descriptorForms)
}

// parseCommand decodes a Command strictly.
func parseCommand(b []byte, what string) (target, error) {
	var t target
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return target{}, serving.InvalidArgument("%s %q: %v (want JSON {\"model\", \"version\", \"label\", \"signature\", \"outputs\"})", what, b, err)
	}
	if dec.More() {
		return target{}, serving.InvalidArgument("%s %q: trailing data after the JSON object", what, b)
	}
	switch {
	case t.Model == "":
		return target{}, serving.InvalidArgument("%s %q: no model", what, b)
	case t.Version < 0:
		return target{}, serving.InvalidArgument("%s %q: version %d: versions are positive", what, b, t.Version)
	case t.Version > 0 && t.Label != "":
		return target{}, serving.InvalidArgument("%s %q: give a version or a label, not both", what, b)
	}
	return t, nil
}

// descriptorFor is the simplest descriptor naming t.
func descriptorFor(t target) *flight.FlightDescriptor {
	if t.Label == "" && t.Signature == "" && len(t.Outputs) == 0 {
		p := []string{t.Model}
		if t.Version > 0 {
			p = append(p, strconv.FormatInt(t.Version, 10))
		}
		return &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: p}
	}
	b, _ := json.Marshal(t)
	return &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: b}
}

// Ticket prefixes: a model ticket (FlightInfo endpoints) is the prefix
// and a Command's JSON; a job ticket (DoPut) the prefix and 32 hex digits.
const (
	modelTicketPrefix = "model:"
	jobTicketPrefix   = "job:"
)

func modelTicket(t target) []byte {
	b, _ := json.Marshal(t)
	return append([]byte(modelTicketPrefix), b...)
}

func isJobTicket(t []byte) bool { return strings.HasPrefix(string(t), jobTicketPrefix) }
