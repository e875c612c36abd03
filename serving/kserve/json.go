package kserve

import (
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/tf"
)

// The infer endpoint reads and writes JSON with its own parser and
// writer: tensor data goes straight between the body and the tensor's
// buffer, integers keep every digit, and floats may be the tokens NaN,
// Infinity and -Infinity (which encoding/json refuses).

// maxDepth bounds nesting so that a hostile body cannot exhaust the
// stack.
const maxDepth = 256

// parser reads one JSON text.
type parser struct {
	b     []byte
	i     int
	depth int
}

func (p *parser) errorf(format string, args ...any) error {
	return serving.InvalidArgument("malformed JSON at byte %d: %s", p.i, fmt.Sprintf(format, args...))
}

// peek skips white space and returns the next byte (0 at the end).
func (p *parser) peek() byte {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return p.b[p.i]
		}
	}
	return 0
}

// end checks that nothing but white space is left.
func (p *parser) end() error {
	if p.peek(); p.i != len(p.b) {
		return p.errorf("unexpected %q after the JSON value", p.b[p.i])
	}
	return nil
}

func (p *parser) enter() error {
	p.depth++
	if p.depth > maxDepth {
		return p.errorf("nested deeper than %d", maxDepth)
	}
	return nil
}

// object reads an object, calling fn for each key; fn reads the value.
func (p *parser) object(fn func(key []byte) error) error {
	if p.peek() != '{' {
		return p.errorf("want an object")
	}
	p.i++
	if err := p.enter(); err != nil {
		return err
	}
	if p.peek() == '}' {
		p.i++
		p.depth--
		return nil
	}
	for {
		if p.peek() != '"' {
			return p.errorf("want a string key")
		}
		k, err := p.str()
		if err != nil {
			return err
		}
		if p.peek() != ':' {
			return p.errorf("want ':' after a key")
		}
		p.i++
		if err := fn(k); err != nil {
			return err
		}
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			p.i++
			p.depth--
			return nil
		default:
			return p.errorf("want ',' or '}' in an object")
		}
	}
}

// array reads an array, calling fn for each element; fn reads it.
func (p *parser) array(fn func() error) error {
	if p.peek() != '[' {
		return p.errorf("want an array")
	}
	p.i++
	if err := p.enter(); err != nil {
		return err
	}
	if p.peek() == ']' {
		p.i++
		p.depth--
		return nil
	}
	for {
		if err := fn(); err != nil {
			return err
		}
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			p.depth--
			return nil
		default:
			return p.errorf("want ',' or ']' in an array")
		}
	}
}

// str reads a string. The result aliases the input when the string has
// no escapes.
func (p *parser) str() ([]byte, error) {
	if p.peek() != '"' {
		return nil, p.errorf("want a string")
	}
	p.i++
	start := p.i
	for p.i < len(p.b) {
		switch c := p.b[p.i]; {
		case c == '"':
			s := p.b[start:p.i:p.i]
			p.i++
			return s, nil
		case c == '\\':
			return p.escaped(append([]byte(nil), p.b[start:p.i]...))
		case c < 0x20:
			return nil, p.errorf("control character in a string")
		}
		p.i++
	}
	return nil, p.errorf("unterminated string")
}

// escaped reads the rest of a string from its first backslash.
func (p *parser) escaped(out []byte) ([]byte, error) {
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return out, nil
		case c < 0x20:
			return nil, p.errorf("control character in a string")
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.b) {
			break
		}
		e := p.b[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, err := p.hex4()
			if err != nil {
				return nil, err
			}
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
					save := p.i
					p.i += 2
					lo, err := p.hex4()
					if err != nil {
						return nil, err
					}
					if r2 = utf16.DecodeRune(r, lo); r2 == utf8.RuneError {
						p.i = save // not a pair: the second escape stands alone
					}
				}
				r = r2
			}
			out = utf8.AppendRune(out, r)
		default:
			p.i--
			return nil, p.errorf("invalid escape \\%c", e)
		}
	}
	return nil, p.errorf("unterminated string")
}

func (p *parser) hex4() (rune, error) {
	if p.i+4 > len(p.b) {
		return 0, p.errorf("short \\u escape")
	}
	v, err := strconv.ParseUint(string(p.b[p.i:p.i+4]), 16, 16)
	if err != nil {
		return 0, p.errorf("invalid \\u escape")
	}
	p.i += 4
	return rune(v), nil
}

// Kinds of scalar.
const (
	kindString = iota + 1
	kindNumber
	kindTrue
	kindFalse
	kindNull
)

// scalar is a value that is not an object or array: a string (decoded),
// or a number as written (NaN, Infinity and -Infinity included).
type scalar struct {
	kind int
	text []byte
}

func (s scalar) describe() string {
	switch s.kind {
	case kindString:
		return "a string"
	case kindNumber:
		return "a number"
	case kindTrue, kindFalse:
		return "a boolean"
	}
	return "null"
}

func (p *parser) hasPrefix(lit string) bool {
	return len(p.b)-p.i >= len(lit) && string(p.b[p.i:p.i+len(lit)]) == lit
}

// scalar reads a string, number, boolean or null.
func (p *parser) scalar() (scalar, error) {
	switch c := p.peek(); {
	case c == '"':
		s, err := p.str()
		return scalar{kindString, s}, err
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	for _, lit := range []struct {
		text string
		kind int
	}{{"true", kindTrue}, {"false", kindFalse}, {"null", kindNull}, {"NaN", kindNumber}, {"Infinity", kindNumber}} {
		if p.hasPrefix(lit.text) {
			s := scalar{lit.kind, p.b[p.i : p.i+len(lit.text)]}
			p.i += len(lit.text)
			return s, nil
		}
	}
	if p.i >= len(p.b) {
		return scalar{}, p.errorf("unexpected end")
	}
	return scalar{}, p.errorf("unexpected %q", p.b[p.i])
}

// number reads a number as RFC 8259 writes it, or -Infinity.
func (p *parser) number() (scalar, error) {
	start := p.i
	if p.hasPrefix("-Infinity") {
		p.i += len("-Infinity")
		return scalar{kindNumber, p.b[start:p.i]}, nil
	}
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.b[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return scalar{}, p.errorf("invalid number")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return scalar{}, p.errorf("invalid number")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return scalar{}, p.errorf("invalid number")
		}
	}
	return scalar{kindNumber, p.b[start:p.i]}, nil
}

// skip reads a value of any kind and returns its text.
func (p *parser) skip() ([]byte, error) {
	p.peek()
	start := p.i
	var err error
	switch p.peek() {
	case '{':
		err = p.object(func([]byte) error { _, err := p.skip(); return err })
	case '[':
		err = p.array(func() error { _, err := p.skip(); return err })
	default:
		_, err = p.scalar()
	}
	return p.b[start:p.i], err
}

// param is a request or tensor parameter: a string, boolean or number
// (kept as written).
type param = scalar

// params reads a parameters object.
func (p *parser) params() (map[string]param, error) {
	out := map[string]param{}
	err := p.object(func(k []byte) error {
		v, err := p.scalar()
		if err != nil {
			if c := p.peek(); c == '{' || c == '[' {
				return serving.InvalidArgument("parameter %q: want a string, number or boolean", k)
			}
			return err
		}
		if v.kind == kindNull {
			return serving.InvalidArgument("parameter %q: want a string, number or boolean, not null", k)
		}
		out[string(k)] = v
		return nil
	})
	return out, err
}

func (v param) asBool(name string) (bool, error) {
	switch v.kind {
	case kindTrue:
		return true, nil
	case kindFalse:
		return false, nil
	}
	return false, serving.InvalidArgument("parameter %q: want a boolean, not %s", name, v.describe())
}

func (v param) asInt(name string) (int64, error) {
	if v.kind == kindNumber {
		if n, err := strconv.ParseInt(string(v.text), 10, 64); err == nil {
			return n, nil
		}
	}
	return 0, serving.InvalidArgument("parameter %q: want an integer, not %s", name, v.describe())
}

func (v param) asString(name string) (string, error) {
	if v.kind != kindString {
		return "", serving.InvalidArgument("parameter %q: want a string, not %s", name, v.describe())
	}
	return string(v.text), nil
}

// readData fills t, whose type and shape are set and which has n
// elements, from a JSON array of its elements in row-major order: flat,
// or nested in any way.
func readData(raw []byte, t *serving.Tensor, name string, n int64) error {
	if n > int64(len(raw)) { // every element takes a byte at least
		return serving.InvalidArgument("input %q: data holds fewer than the %d elements of shape %v", name, n, t.Shape)
	}
	if t.DType == tf.String {
		t.Strings = make([][]byte, 0, n)
	} else {
		t.Data = make([]byte, n*int64(t.DType.Size()))
	}
	p := &parser{b: raw}
	count := int64(0)
	var walk func() error
	walk = func() error {
		if p.peek() == '[' {
			return p.array(walk)
		}
		v, err := p.scalar()
		if err != nil {
			return err
		}
		if count >= n {
			return serving.InvalidArgument("input %q: data holds more than the %d elements of shape %v", name, n, t.Shape)
		}
		if err := setElement(t, int(count), v); err != nil {
			return serving.InvalidArgument("input %q: element %d: %v", name, count, err)
		}
		count++
		return nil
	}
	if err := walk(); err != nil {
		return err
	}
	if err := p.end(); err != nil {
		return err
	}
	if count != n {
		return serving.InvalidArgument("input %q: data holds %d elements, shape %v has %d", name, count, t.Shape, n)
	}
	return nil
}

// setElement stores a JSON value as element i of t.
func setElement(t *serving.Tensor, i int, v scalar) error {
	switch t.DType {
	case tf.String:
		if v.kind != kindString {
			return fmt.Errorf("want a string for BYTES, not %s", v.describe())
		}
		t.Strings = append(t.Strings, v.text)
		return nil
	case tf.Bool:
		switch {
		case v.kind == kindTrue || v.kind == kindNumber && string(v.text) == "1":
			t.Data[i] = 1
		case v.kind == kindFalse || v.kind == kindNumber && string(v.text) == "0":
			t.Data[i] = 0
		default:
			return fmt.Errorf("want true or false for BOOL, not %s", v.describe())
		}
		return nil
	}
	if v.kind != kindNumber {
		return fmt.Errorf("want a number for %s, not %s", datatypeName(t.DType), v.describe())
	}
	text := string(v.text)
	switch t.DType {
	case tf.Float, tf.Double, tf.Half, tf.BFloat16:
		bits := 64
		if t.DType == tf.Float {
			bits = 32
		}
		f, err := parseFloat(text, bits)
		if err != nil {
			return fmt.Errorf("%s is out of range for %s", text, datatypeName(t.DType))
		}
		t.SetFloat64(i, f)
		return nil
	case tf.Uint8, tf.Uint16, tf.Uint32, tf.Uint64:
		u, err := parseUint(text, t.DType.Size()*8)
		if err != nil {
			return fmt.Errorf("%s is not a %s: %v", text, datatypeName(t.DType), err)
		}
		t.SetInt64(i, int64(u))
		return nil
	case tf.Int8, tf.Int16, tf.Int32, tf.Int64:
		n, err := parseInt(text, t.DType.Size()*8)
		if err != nil {
			return fmt.Errorf("%s is not an %s: %v", text, datatypeName(t.DType), err)
		}
		t.SetInt64(i, n)
		return nil
	}
	return fmt.Errorf("unsupported type %s", t.DType)
}

func parseFloat(s string, bits int) (float64, error) {
	switch s {
	case "NaN":
		return math.NaN(), nil
	case "Infinity":
		return math.Inf(1), nil
	case "-Infinity":
		return math.Inf(-1), nil
	}
	return strconv.ParseFloat(s, bits)
}

// parseInt reads a whole number of the given width, also when written as
// a decimal or with an exponent ("3.0", "1e3").
func parseInt(s string, bits int) (int64, error) {
	n, err := strconv.ParseInt(s, 10, bits)
	if err == nil {
		return n, nil
	}
	if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
		return 0, ne.Err
	}
	f, ferr := strconv.ParseFloat(s, 64)
	limit := math.Ldexp(1, bits-1)
	switch {
	case ferr != nil || math.IsNaN(f) || math.IsInf(f, 0):
		return 0, strconv.ErrSyntax
	case f != math.Trunc(f):
		return 0, fmt.Errorf("not a whole number")
	case f < -limit || f >= limit:
		return 0, strconv.ErrRange
	}
	return int64(f), nil
}

// parseUint is parseInt for unsigned types.
func parseUint(s string, bits int) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, bits)
	if err == nil {
		return n, nil
	}
	if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
		return 0, ne.Err
	}
	f, ferr := strconv.ParseFloat(s, 64)
	switch {
	case ferr != nil || math.IsNaN(f) || math.IsInf(f, 0):
		return 0, strconv.ErrSyntax
	case f != math.Trunc(f):
		return 0, fmt.Errorf("not a whole number")
	case f < 0 || f >= math.Ldexp(1, bits):
		return 0, strconv.ErrRange
	}
	return uint64(f), nil
}

// appendString appends s as a JSON string. s must be UTF-8.
func appendString[S string | []byte](b []byte, s S) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func appendFloat(b []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, 1):
		return append(b, "Infinity"...)
	case math.IsInf(f, -1):
		return append(b, "-Infinity"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, bits)
}

// appendData appends a tensor's elements as a flat JSON array.
func appendData(b []byte, t *serving.Tensor, name string) ([]byte, error) {
	b = append(b, '[')
	if t.DType == tf.String {
		for i, s := range t.Strings {
			if !utf8.Valid(s) {
				return nil, serving.InvalidArgument("output %q: element %d is not UTF-8, which JSON cannot carry; ask for the output as binary data (parameter binary_data: true)", name, i)
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, s)
		}
		return append(b, ']'), nil
	}
	n := int(t.NumElements())
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		switch t.DType {
		case tf.Bool:
			b = strconv.AppendBool(b, t.Data[i] != 0)
		case tf.Float, tf.Half, tf.BFloat16:
			b = appendFloat(b, t.Float64At(i), 32)
		case tf.Double:
			b = appendFloat(b, t.Float64At(i), 64)
		case tf.Uint64:
			b = strconv.AppendUint(b, uint64(t.Int64At(i)), 10)
		default:
			b = strconv.AppendInt(b, t.Int64At(i), 10)
		}
	}
	return append(b, ']'), nil
}
