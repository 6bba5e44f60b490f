package rules

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// HeaderPrefix starts the forward-auth header of every claim.
const HeaderPrefix = "X-Auth-Claim-"

// HeaderName returns the forward-auth header of a claim (SPEC §9):
// [HeaderPrefix] and the claim's name split on '_' and '-', each part
// capitalized (first letter upper case, the rest lower case), joined with
// '-': role → X-Auth-Claim-Role, is_admin → X-Auth-Claim-Is-Admin. The
// result is in Go's canonical header form, so it is also the key of
// http.Header. Names are checked by [CompileClaims]; any other byte a name
// might hold also separates parts, so the result is always a valid header
// name.
func HeaderName(claim string) string {
	var b strings.Builder
	b.Grow(len(HeaderPrefix) + len(claim))
	b.WriteString(HeaderPrefix)
	upper := true
	for i := 0; i < len(claim); i++ {
		c := claim[i]
		switch {
		case 'a' <= c && c <= 'z':
			if upper {
				c -= 'a' - 'A'
			}
			upper = false
		case 'A' <= c && c <= 'Z':
			if !upper {
				c += 'a' - 'A'
			}
			upper = false
		case '0' <= c && c <= '9':
			upper = false
		default:
			c, upper = '-', true
		}
		b.WriteByte(c)
	}
	return b.String()
}

// HeaderValue renders a claim's value as a header value (SPEC §9): a string
// as it is; numbers and booleans in their JSON form (3, 1.5, 1e+21, true);
// a list with its elements rendered by these same rules and joined with
// ", " (so a nested list is flattened: [[1, 2], [3]] → "1, 2, 3"; an empty
// list is ""); a map as compact JSON with sorted keys; nil as null. Then
// every byte that is not printable ASCII — control characters (CR, LF, tab),
// DEL and all of UTF-8 beyond ASCII — and '%' itself is percent-encoded
// with upper-case hex: "Zoë" → "Zo%C3%AB", "a\r\nX: 1" → "a%0D%0AX: 1",
// "100%" → "100%25". A header value can therefore never end the header or
// start another, and a reader decodes it with one percent-decoding.
func HeaderValue(v any) string {
	var b []byte
	b = appendValue(b, v, 0)
	return percentEncode(b)
}

func appendValue(b []byte, v any, depth int) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case string:
		return append(b, x...)
	case bool:
		return strconv.AppendBool(b, x)
	case int:
		return strconv.AppendInt(b, int64(x), 10)
	case int8:
		return strconv.AppendInt(b, int64(x), 10)
	case int16:
		return strconv.AppendInt(b, int64(x), 10)
	case int32:
		return strconv.AppendInt(b, int64(x), 10)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case uint:
		return strconv.AppendUint(b, uint64(x), 10)
	case uint8:
		return strconv.AppendUint(b, uint64(x), 10)
	case uint16:
		return strconv.AppendUint(b, uint64(x), 10)
	case uint32:
		return strconv.AppendUint(b, uint64(x), 10)
	case uint64:
		return strconv.AppendUint(b, x, 10)
	case float32:
		return appendFloat(b, float64(x), 32)
	case float64:
		return appendFloat(b, x, 64)
	case json.Number:
		return append(b, x...)
	case []any:
		for i, e := range x {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = appendElem(b, e, depth)
		}
		return b
	case []string:
		for i, e := range x {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = append(b, e...)
		}
		return b
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice || rv.Kind() == reflect.Array {
		if _, isBytes := v.([]byte); !isBytes {
			for i := range rv.Len() {
				if i > 0 {
					b = append(b, ", "...)
				}
				b = appendElem(b, rv.Index(i).Interface(), depth)
			}
			return b
		}
	}
	return appendJSON(b, v)
}

func appendElem(b []byte, v any, depth int) []byte {
	if depth >= maxDepth {
		return appendJSON(b, v)
	}
	return appendValue(b, v, depth+1)
}

// appendFloat writes f as encoding/json does.
func appendFloat(b []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.AppendFloat(b, f, 'g', -1, bits)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21)) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' {
		// clean up e-09 to e-9, as encoding/json does
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

func appendJSON(b []byte, v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Append(b, v)
	}
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

const upperHex = "0123456789ABCDEF"

func percentEncode(b []byte) string {
	n := 0
	for _, c := range b {
		if escapeByte(c) {
			n++
		}
	}
	if n == 0 {
		return string(b)
	}
	out := make([]byte, 0, len(b)+2*n)
	for _, c := range b {
		if escapeByte(c) {
			out = append(out, '%', upperHex[c>>4], upperHex[c&15])
		} else {
			out = append(out, c)
		}
	}
	return string(out)
}

func escapeByte(c byte) bool { return c < 0x20 || c >= 0x7f || c == '%' }
