package rules

import (
	"fmt"
	"reflect"
	"time"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/interpreter"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/providers"
)

// The CEL variables are records: read-only CEL maps over a Go struct with a
// fixed set of keys (a shape, built once). A record is one small allocation
// (or none, when it sits inside the activation); a field is converted to a
// CEL value only when an expression reads it, so an expression that looks at
// user.email never pays for the session's timestamps.

// field is one key of a shape and how to read it from a *T. get returns a
// native Go value the CEL type adapter understands (nil is null).
type field[T any] struct {
	name string
	get  func(*T) any
}

// shape is the fixed key set of a record type.
type shape[T any] struct {
	fields []field[T]
	index  map[string]int
	keys   traits.Lister // the field names, for iteration
}

func newShape[T any](fields ...field[T]) *shape[T] {
	s := &shape[T]{fields: fields, index: make(map[string]int, len(fields))}
	names := make([]string, len(fields))
	for i, f := range fields {
		s.index[f.name] = i
		names[i] = f.name
	}
	s.keys = types.NewStringList(types.DefaultTypeAdapter, names)
	return s
}

// record is a CEL map (traits.Mapper) over a *T with the keys of its shape.
// A record over a nil *T is an empty map.
type record[T any] struct {
	s *shape[T]
	v *T
}

var (
	_ traits.Mapper = (*record[auth.User])(nil)
	_ traits.Zeroer = (*record[auth.User])(nil)
)

var emptyList = types.NewStringList(types.DefaultTypeAdapter, nil)

// FindStringKey is the interpreter's fast path for m.field: it skips the
// conversion of the key to a CEL string.
func (r *record[T]) FindStringKey(k string) (any, bool) {
	if r.v == nil {
		return nil, false
	}
	i, ok := r.s.index[k]
	if !ok {
		return nil, false
	}
	return r.s.fields[i].get(r.v), true
}

// Find implements traits.Mapper.
func (r *record[T]) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return nil, false
	}
	v, ok := r.FindStringKey(string(k))
	if !ok {
		return nil, false
	}
	return types.DefaultTypeAdapter.NativeToValue(v), true
}

// Get implements traits.Indexer.
func (r *record[T]) Get(key ref.Val) ref.Val {
	v, ok := r.Find(key)
	if !ok {
		return types.NewErr("no such key: %v", key)
	}
	return v
}

// Contains implements traits.Container.
func (r *record[T]) Contains(key ref.Val) ref.Val {
	_, ok := r.Find(key)
	return types.Bool(ok)
}

// Size implements traits.Sizer.
func (r *record[T]) Size() ref.Val {
	if r.v == nil {
		return types.IntZero
	}
	return types.Int(len(r.s.fields))
}

// IsZeroValue implements traits.Zeroer.
func (r *record[T]) IsZeroValue() bool { return r.v == nil }

// Iterator implements traits.Iterable: it visits the keys.
func (r *record[T]) Iterator() traits.Iterator {
	if r.v == nil {
		return emptyList.Iterator()
	}
	return r.s.keys.Iterator()
}

// Type implements ref.Val.
func (r *record[T]) Type() ref.Type { return types.MapType }

// Value implements ref.Val: the record as a map[string]any.
func (r *record[T]) Value() any { return r.native() }

// ConvertToNative implements ref.Val, as a map[string]any would convert.
func (r *record[T]) ConvertToNative(t reflect.Type) (any, error) {
	return types.NewStringInterfaceMap(types.DefaultTypeAdapter, r.native()).ConvertToNative(t)
}

// ConvertToType implements ref.Val.
func (r *record[T]) ConvertToType(t ref.Type) ref.Val {
	switch t {
	case types.MapType:
		return r
	case types.TypeType:
		return types.MapType
	}
	return types.NewErr("type conversion error from '%s' to '%s'", types.MapType, t)
}

// Equal implements ref.Val with CEL's map equality.
func (r *record[T]) Equal(other ref.Val) ref.Val {
	o, ok := other.(traits.Mapper)
	if !ok || r.Size() != o.Size() {
		return types.False
	}
	it := r.Iterator()
	for it.HasNext() == types.True {
		k := it.Next()
		mine, _ := r.Find(k)
		theirs, found := o.Find(k)
		if !found || types.Equal(mine, theirs) != types.True {
			return types.False
		}
	}
	return types.True
}

// String renders the record like a map, for error messages.
func (r *record[T]) String() string { return fmt.Sprint(r.native()) }

func (r *record[T]) native() map[string]any {
	if r.v == nil {
		return map[string]any{}
	}
	m := make(map[string]any, len(r.s.fields))
	for _, f := range r.s.fields {
		m[f.name] = f.get(r.v)
	}
	return m
}

// optString is a nullable string: nil is null.
func optString(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// orEmpty keeps a nil attribute map from being null: attributes are always
// a map.
func orEmpty(m map[string]any) any {
	if m == nil {
		return emptyMap
	}
	return m
}

var emptyMap = map[string]any{}

var userShape = newShape(
	field[auth.User]{"id", func(u *auth.User) any { return u.ID }},
	field[auth.User]{"username", func(u *auth.User) any { return optString(u.Username) }},
	field[auth.User]{"email", func(u *auth.User) any { return optString(u.Email) }},
	field[auth.User]{"email_verified", func(u *auth.User) any { return u.EmailVerified }},
	field[auth.User]{"name", func(u *auth.User) any { return optString(u.Name) }},
	field[auth.User]{"image", func(u *auth.User) any { return optString(u.Image) }},
	field[auth.User]{"attributes", func(u *auth.User) any { return orEmpty(u.Attributes) }},
	field[auth.User]{"created_at", func(u *auth.User) any { return u.CreatedAt }},
)

// keyShape leaves out everything secret about a key: no password hash, no
// provider tokens.
var keyShape = newShape(
	field[auth.Key]{"id", func(k *auth.Key) any { return k.ID }},
	field[auth.Key]{"provider_id", func(k *auth.Key) any { return k.ProviderID }},
	field[auth.Key]{"provider_user_id", func(k *auth.Key) any { return k.ProviderUserID }},
)

// sessionShape leaves out the session token.
var sessionShape = newShape(
	field[auth.Session]{"id", func(s *auth.Session) any { return s.ID }},
	field[auth.Session]{"state", func(s *auth.Session) any { return string(s.State) }},
	field[auth.Session]{"active_expires", func(s *auth.Session) any { return s.ActiveExpires }},
	field[auth.Session]{"idle_expires", func(s *auth.Session) any { return s.IdleExpires }},
	field[auth.Session]{"created_at", func(s *auth.Session) any { return s.CreatedAt }},
	field[auth.Session]{"authenticated_at", func(s *auth.Session) any { return s.AuthenticatedAt }},
	field[auth.Session]{"attributes", func(s *auth.Session) any { return orEmpty(s.Attributes) }},
	field[auth.Session]{"user_agent", func(s *auth.Session) any { return s.UserAgent }},
	field[auth.Session]{"ip", func(s *auth.Session) any { return s.IP }},
)

// request is the request variable of access rules: host and path as matched
// (normalized), method as given.
type request struct {
	host, path, method string
}

var requestShape = newShape(
	field[request]{"host", func(r *request) any { return r.host }},
	field[request]{"path", func(r *request) any { return r.path }},
	field[request]{"method", func(r *request) any { return r.method }},
)

// identityShape leaves out the provider tokens and the typed profile.
var identityShape = newShape(
	field[providers.Identity]{"subject", func(i *providers.Identity) any { return i.Subject }},
	field[providers.Identity]{"email", func(i *providers.Identity) any { return i.Email }},
	field[providers.Identity]{"email_verified", func(i *providers.Identity) any { return i.EmailVerified }},
	field[providers.Identity]{"name", func(i *providers.Identity) any { return i.Name }},
	field[providers.Identity]{"picture", func(i *providers.Identity) any { return i.Picture }},
	field[providers.Identity]{"username", func(i *providers.Identity) any { return i.Username }},
	field[providers.Identity]{"claims", func(i *providers.Identity) any { return orEmpty(i.Claims) }},
	field[providers.Identity]{"orgs", func(i *providers.Identity) any {
		if i.Orgs == nil {
			return emptyList
		}
		return i.Orgs
	}},
)

// activation supplies the variables of one evaluation. It is built once per
// Eval, Decide, Allow or Attributes call and shared by every expression that
// call runs; the keys list is built on first use.
type activation struct {
	user     record[auth.User]
	session  record[auth.Session]
	request  record[request]
	identity record[providers.Identity]
	req      request
	u        auth.User
	id       providers.Identity
	keys     []auth.Key
	keysVal  ref.Val
	claims   map[string]any
	hasUser  bool
	hasReq   bool
	hasIdent bool
}

// setUser copies u into the activation, so that the caller's copy does not
// escape: the activation is the one allocation.
func (a *activation) setUser(u *auth.User, keys []auth.Key, s *auth.Session) {
	a.u = *u
	a.user = record[auth.User]{userShape, &a.u}
	a.session = record[auth.Session]{sessionShape, s}
	a.keys = keys
	a.hasUser = true
}

// ResolveName implements interpreter.Activation.
func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "user":
		if a.hasUser {
			return &a.user, true
		}
	case "session":
		if a.hasUser {
			return &a.session, true
		}
	case "keys":
		if a.hasUser {
			if a.keysVal == nil {
				a.keysVal = keyList(a.keys)
			}
			return a.keysVal, true
		}
	case "claims":
		if a.hasReq {
			if a.claims == nil {
				return emptyMap, true
			}
			return a.claims, true
		}
	case "request":
		if a.hasReq {
			return &a.request, true
		}
	case "identity":
		if a.hasIdent {
			return &a.identity, true
		}
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (a *activation) Parent() interpreter.Activation { return nil }

func keyList(keys []auth.Key) ref.Val {
	if len(keys) == 0 {
		return emptyList
	}
	recs := make([]record[auth.Key], len(keys))
	vals := make([]ref.Val, len(keys))
	for i := range keys {
		recs[i] = record[auth.Key]{keyShape, &keys[i]}
		vals[i] = &recs[i]
	}
	return types.NewRefValList(types.DefaultTypeAdapter, vals)
}

// timeString is how timestamps leave CEL: RFC 3339 in UTC, as the broker's
// JSON writes them.
func timeString(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
