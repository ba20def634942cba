package main

// A minimal JSON scanner for the server frames: it walks objects and arrays and hands out sub-slices
// of the frame (keys, raw values) without allocating, so a delivery decodes only the fields the
// worker needs (type, message.conversation_id, message.sequence_number, message.payload.t, ...).
// It validates structure only as far as it walks; a malformed frame yields ok=false somewhere.

import (
	"strconv"
	"unsafe"
)

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString: b[i] == '"'; returns the index after the closing quote, or -1.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index just after the JSON value starting at b[i] (no leading whitespace), or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; c {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				j := skipString(b, i)
				if j < 0 {
					return -1
				}
				i = j - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	case 't':
		return literal(b, i, "true")
	case 'f':
		return literal(b, i, "false")
	case 'n':
		return literal(b, i, "null")
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			j := i + 1
			for j < len(b) {
				d := b[j]
				if (d >= '0' && d <= '9') || d == '.' || d == 'e' || d == 'E' || d == '+' || d == '-' {
					j++
					continue
				}
				break
			}
			return j
		}
		return -1
	}
}

func literal(b []byte, i int, lit string) int {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit)
	}
	return -1
}

// object iterates the members of a JSON object.
type object struct {
	b   []byte
	i   int
	bad bool
}

// objectOf starts iterating v, which must be a JSON object (leading whitespace allowed).
func objectOf(v []byte) (object, bool) {
	i := skipWS(v, 0)
	if i >= len(v) || v[i] != '{' {
		return object{}, false
	}
	return object{b: v, i: i + 1}, true
}

// next returns the next member's key (raw, without quotes) and value (raw JSON); ok=false at the
// end of the object or on malformed input (o.bad is set then).
func (o *object) next() (key, val []byte, ok bool) {
	b := o.b
	i := skipWS(b, o.i)
	if i < len(b) && b[i] == ',' {
		i = skipWS(b, i+1)
	}
	if i >= len(b) {
		o.bad = true
		return nil, nil, false
	}
	if b[i] == '}' {
		o.i = i + 1
		return nil, nil, false
	}
	if b[i] != '"' {
		o.bad = true
		return nil, nil, false
	}
	ke := skipString(b, i)
	if ke < 0 {
		o.bad = true
		return nil, nil, false
	}
	key = b[i+1 : ke-1]
	i = skipWS(b, ke)
	if i >= len(b) || b[i] != ':' {
		o.bad = true
		return nil, nil, false
	}
	i = skipWS(b, i+1)
	ve := skipValue(b, i)
	if ve < 0 {
		o.bad = true
		return nil, nil, false
	}
	o.i = ve
	return key, b[i:ve], true
}

// array iterates the elements of a JSON array.
type array struct {
	b   []byte
	i   int
	bad bool
}

func arrayOf(v []byte) (array, bool) {
	i := skipWS(v, 0)
	if i >= len(v) || v[i] != '[' {
		return array{}, false
	}
	return array{b: v, i: i + 1}, true
}

func (a *array) next() (val []byte, ok bool) {
	b := a.b
	i := skipWS(b, a.i)
	if i < len(b) && b[i] == ',' {
		i = skipWS(b, i+1)
	}
	if i >= len(b) {
		a.bad = true
		return nil, false
	}
	if b[i] == ']' {
		a.i = i + 1
		return nil, false
	}
	ve := skipValue(b, i)
	if ve < 0 {
		a.bad = true
		return nil, false
	}
	a.i = ve
	return b[i:ve], true
}

// strOf: the raw contents of a JSON string value (escapes are not decoded: ids, keys and codes have none).
func strOf(v []byte) ([]byte, bool) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1], true
	}
	return nil, false
}

// intOf parses an integer value (a JSON number without fraction/exponent).
func intOf(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	neg := false
	i := 0
	if v[0] == '-' {
		neg = true
		i = 1
	}
	if i >= len(v) {
		return 0, false
	}
	var n int64
	for ; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			// 12.0 or 1e3: fall back to the float parser
			f, ok := floatOf(v)
			return int64(f), ok
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// floatOf parses a JSON number without allocating.
func floatOf(v []byte) (float64, bool) {
	if len(v) == 0 || !(v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) {
		return 0, false
	}
	f, err := strconv.ParseFloat(unsafe.String(&v[0], len(v)), 64)
	return f, err == nil
}

func isTrue(v []byte) bool { return string(v) == "true" }

// appendJSONNumber appends f the way JavaScript's JSON.stringify writes a number (shortest
// round-trip form; integers without a fraction). Exponent forms only occur outside the epoch-ms
// range the payload times are in.
func appendJSONNumber(buf []byte, f float64) []byte {
	if f >= 1e21 || (f != 0 && f < 1e-6 && f > -1e-6) || f <= -1e21 {
		return strconv.AppendFloat(buf, f, 'g', -1, 64)
	}
	return strconv.AppendFloat(buf, f, 'f', -1, 64)
}
