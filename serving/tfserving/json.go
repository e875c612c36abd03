package tfserving

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// The REST API's JSON is RFC 8259 plus the tokens NaN, Infinity and
// -Infinity for floats (as TF Serving accepts and writes), which
// encoding/json refuses. jsonValue is a parsed value: nil, bool, jsonNum,
// string, []jsonValue or *jsonObject.
type jsonValue any

// jsonNum is a number as written, so that integers keep every digit and
// decimals are told apart from whole numbers (as TF Serving does when it
// builds tf.Example features).
type jsonNum string

// isFloat reports whether the number was written as a decimal, with an
// exponent, or as NaN/Infinity.
func (n jsonNum) isFloat() bool { return strings.ContainsAny(string(n), ".eEaI") }

func (n jsonNum) float() (float64, error) {
	switch n {
	case "NaN", "-NaN":
		return strconv.ParseFloat("NaN", 64)
	case "Infinity":
		return strconv.ParseFloat("+Inf", 64)
	case "-Infinity":
		return strconv.ParseFloat("-Inf", 64)
	}
	return strconv.ParseFloat(string(n), 64)
}

// numArray is an array whose elements are all numbers.
type numArray []jsonNum

// asList returns an array's elements (a numArray's boxed one by one).
func asList(v jsonValue) ([]jsonValue, bool) {
	switch l := v.(type) {
	case []jsonValue:
		return l, true
	case numArray:
		out := make([]jsonValue, len(l))
		for i, n := range l {
			out[i] = n
		}
		return out, true
	}
	return nil, false
}

type jsonObject struct {
	keys []string
	vals map[string]jsonValue
}

func (o *jsonObject) get(k string) (jsonValue, bool) {
	v, ok := o.vals[k]
	return v, ok
}

type jsonParser struct {
	s     string
	i     int
	depth int
}

// maxJSONDepth bounds nesting so that a hostile body cannot exhaust the
// stack.
const maxJSONDepth = 512

func parseJSON(s string) (jsonValue, error) {
	p := &jsonParser{s: s}
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.s) {
		return nil, p.errorf("unexpected %q after the JSON value", p.peekText())
	}
	return v, nil
}

func (p *jsonParser) errorf(format string, args ...any) error {
	line, col := 1, 1
	for _, r := range p.s[:min(p.i, len(p.s))] {
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return fmt.Errorf("JSON Parse error: %s at line %d column %d", fmt.Sprintf(format, args...), line, col)
}

func (p *jsonParser) peekText() string {
	end := min(p.i+10, len(p.s))
	return p.s[p.i:end]
}

func (p *jsonParser) space() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) value() (jsonValue, error) {
	p.space()
	if p.i >= len(p.s) {
		return nil, p.errorf("unexpected end of input")
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		return p.str()
	case c == 't' && strings.HasPrefix(p.s[p.i:], "true"):
		p.i += 4
		return true, nil
	case c == 'f' && strings.HasPrefix(p.s[p.i:], "false"):
		p.i += 5
		return false, nil
	case c == 'n' && strings.HasPrefix(p.s[p.i:], "null"):
		p.i += 4
		return nil, nil
	case c == 'N' && strings.HasPrefix(p.s[p.i:], "NaN"):
		p.i += 3
		return jsonNum("NaN"), nil
	case c == 'I' && strings.HasPrefix(p.s[p.i:], "Infinity"):
		p.i += 8
		return jsonNum("Infinity"), nil
	case c == '-' && strings.HasPrefix(p.s[p.i:], "-Infinity"):
		p.i += 9
		return jsonNum("-Infinity"), nil
	case c == '-' && strings.HasPrefix(p.s[p.i:], "-NaN"):
		p.i += 4
		return jsonNum("NaN"), nil
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return nil, p.errorf("invalid value %q", p.peekText())
}

func (p *jsonParser) number() (jsonValue, error) {
	n, err := p.numberText()
	if err != nil {
		return nil, err
	}
	return n, nil
}

// numberText reads a number and returns its text (a substring of the
// input: no copy).
func (p *jsonParser) numberText() (jsonNum, error) {
	start := p.i
	if p.s[p.i] == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if digits() == 0 {
		return "", p.errorf("invalid number")
	}
	if p.i < len(p.s) && p.s[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return "", p.errorf("invalid number")
		}
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return "", p.errorf("invalid number")
		}
	}
	return jsonNum(p.s[start:p.i]), nil
}

// startsNumber reports whether a plain number (not NaN or Infinity)
// starts at p.i.
func (p *jsonParser) startsNumber() bool {
	if p.i >= len(p.s) {
		return false
	}
	c := p.s[p.i]
	if c == '-' && p.i+1 < len(p.s) {
		c = p.s[p.i+1]
	}
	return c >= '0' && c <= '9'
}

func (p *jsonParser) str() (string, error) {
	p.i++ // "
	var b strings.Builder
	start := p.i
	for {
		if p.i >= len(p.s) {
			return "", p.errorf("unterminated string")
		}
		c := p.s[p.i]
		switch {
		case c == '"':
			b.WriteString(p.s[start:p.i])
			p.i++
			s := b.String()
			if !utf8.ValidString(s) {
				return "", p.errorf("string is not valid UTF-8")
			}
			return s, nil
		case c < 0x20:
			return "", p.errorf("control character in string")
		case c == '\\':
			b.WriteString(p.s[start:p.i])
			p.i++
			if p.i >= len(p.s) {
				return "", p.errorf("unterminated string")
			}
			switch e := p.s[p.i]; e {
			case '"', '\\', '/':
				b.WriteByte(e)
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				r, err := p.hex4()
				if err != nil {
					return "", err
				}
				if utf16.IsSurrogate(r) && strings.HasPrefix(p.s[p.i+1:], "\\u") {
					p.i += 2
					r2, err := p.hex4()
					if err != nil {
						return "", err
					}
					r = utf16.DecodeRune(r, r2)
				}
				b.WriteRune(r)
			default:
				return "", p.errorf("invalid escape \\%c", e)
			}
			p.i++
			start = p.i
		default:
			p.i++
		}
	}
}

// hex4 reads the 4 hex digits after \u; p.i is on the 'u' and ends on
// the last digit.
func (p *jsonParser) hex4() (rune, error) {
	if p.i+4 >= len(p.s) {
		return 0, p.errorf("invalid \\u escape")
	}
	v, err := strconv.ParseUint(p.s[p.i+1:p.i+5], 16, 32)
	if err != nil {
		return 0, p.errorf("invalid \\u escape")
	}
	p.i += 4
	return rune(v), nil
}

func (p *jsonParser) array() (jsonValue, error) {
	if p.depth++; p.depth > maxJSONDepth {
		return nil, p.errorf("nested deeper than %d", maxJSONDepth)
	}
	defer func() { p.depth-- }()
	p.i++ // [
	p.space()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return []jsonValue{}, nil
	}
	// Numbers are gathered as text until something else appears; an
	// array of numbers only stays a numArray.
	var nums numArray
	var out []jsonValue
	for {
		p.space()
		if out == nil && p.startsNumber() {
			n, err := p.numberText()
			if err != nil {
				return nil, err
			}
			nums = append(nums, n)
		} else {
			if out == nil {
				out = make([]jsonValue, len(nums), len(nums)+1)
				for i, n := range nums {
					out[i] = n
				}
			}
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		p.space()
		if p.i >= len(p.s) {
			return nil, p.errorf("unterminated array")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			if out == nil {
				return nums, nil
			}
			return out, nil
		default:
			return nil, p.errorf("expected , or ] in array, got %q", p.peekText())
		}
	}
}

func (p *jsonParser) object() (jsonValue, error) {
	if p.depth++; p.depth > maxJSONDepth {
		return nil, p.errorf("nested deeper than %d", maxJSONDepth)
	}
	defer func() { p.depth-- }()
	p.i++ // {
	o := &jsonObject{vals: map[string]jsonValue{}}
	p.space()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return o, nil
	}
	for {
		p.space()
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return nil, p.errorf("expected a string key in object")
		}
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		p.space()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return nil, p.errorf("expected : after key %q", k)
		}
		p.i++
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		if _, dup := o.vals[k]; dup {
			return nil, p.errorf("duplicate key %q", k)
		}
		o.keys = append(o.keys, k)
		o.vals[k] = v
		p.space()
		if p.i >= len(p.s) {
			return nil, p.errorf("unterminated object")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return o, nil
		default:
			return nil, p.errorf("expected , or } in object, got %q", p.peekText())
		}
	}
}
