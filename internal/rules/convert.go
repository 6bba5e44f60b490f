package rules

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// errNull marks a result that is null: the claim or attribute is left out.
var errNull = errors.New("null")

// maxDepth bounds the nesting of a converted value.
const maxDepth = 32

// toGo converts a CEL result into a plain Go value that encoding/json
// writes: string, bool, int64, uint64 (only above math.MaxInt64), float64,
// []any, map[string]any, or nil for a null inside a list or map. A null
// result gives errNull. Timestamps become RFC 3339 strings (UTC), durations
// seconds with an "s" ("90s", "1.5s", as protobuf's JSON), bytes standard
// base64; map keys that are ints, uints or bools become their decimal or
// true/false strings. NaN and infinities, which JSON cannot hold, and CEL
// types or other values are errors.
func toGo(v ref.Val) (any, error) {
	if v == types.NullValue {
		return nil, errNull
	}
	return convert(v, 0)
}

func convert(v ref.Val, depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("value nested too deep")
	}
	switch x := v.(type) {
	case types.Null:
		return nil, nil
	case types.String:
		return string(x), nil
	case types.Bool:
		return bool(x), nil
	case types.Int:
		return int64(x), nil
	case types.Uint:
		if x <= math.MaxInt64 {
			return int64(x), nil
		}
		return uint64(x), nil
	case types.Double:
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%v is not a JSON number", f)
		}
		return f, nil
	case types.Bytes:
		return base64.StdEncoding.EncodeToString(x), nil
	case types.Timestamp:
		return timeString(x.Time), nil
	case types.Duration:
		return strconv.FormatFloat(x.Seconds(), 'f', -1, 64) + "s", nil
	case *types.Err:
		return nil, x
	case traits.Lister:
		n, ok := x.Size().(types.Int)
		if !ok {
			return nil, errors.New("list without a size")
		}
		out := make([]any, 0, int(n))
		it := x.Iterator()
		for it.HasNext() == types.True {
			e, err := convert(it.Next(), depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		return out, nil
	case traits.Mapper:
		n, _ := x.Size().(types.Int)
		out := make(map[string]any, int(n))
		it := x.Iterator()
		for it.HasNext() == types.True {
			k := it.Next()
			ks, err := mapKey(k)
			if err != nil {
				return nil, err
			}
			e, err := convert(x.Get(k), depth+1)
			if err != nil {
				return nil, err
			}
			out[ks] = e
		}
		return out, nil
	}
	return nil, fmt.Errorf("a value of type %s has no JSON form", v.Type().TypeName())
}

func mapKey(k ref.Val) (string, error) {
	switch x := k.(type) {
	case types.String:
		return string(x), nil
	case types.Int:
		return strconv.FormatInt(int64(x), 10), nil
	case types.Uint:
		return strconv.FormatUint(uint64(x), 10), nil
	case types.Bool:
		return strconv.FormatBool(bool(x)), nil
	}
	return "", fmt.Errorf("a map key of type %s has no JSON form", k.Type().TypeName())
}
