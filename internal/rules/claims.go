package rules

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"cel.dev/cel-go/cel"

	"github.com/brokerauth/broker/auth"
)

// Claims are the compiled session claims: the configuration's claims map,
// claim name → CEL expression (nuxt-auth's session callback). Safe for
// concurrent use. A nil *Claims has no claims.
type Claims struct {
	claims []claim // sorted by name
}

type claim struct {
	name, path string
	prg        cel.Program
}

// CompileClaims compiles every claim expression, at start. Each problem is a
// [*CompileError] whose Path is "claims.<name>", all of them joined with
// errors.Join: a claim name that is not [A-Za-z0-9_-]+, two names that give
// the same header (role and ROLE, is_admin and is-admin), an expression that
// does not compile.
func CompileClaims(exprs map[string]string) (*Claims, error) {
	c := &Claims{claims: make([]claim, 0, len(exprs))}
	var errs []error
	headers := make(map[string]string, len(exprs))
	for _, name := range slices.Sorted(maps.Keys(exprs)) {
		path := "claims." + name
		if !validName(name) {
			errs = append(errs, &CompileError{path, fmt.Errorf("claim name %q must be letters, digits, '_' and '-'", name)})
			continue
		}
		h := HeaderName(name)
		if other, dup := headers[h]; dup {
			errs = append(errs, &CompileError{path, fmt.Errorf("claim %q and claim %q would both be the header %s", other, name, h)})
			continue
		}
		headers[h] = name
		prg, err := compile(exprs[name], KindClaims)
		if err != nil {
			errs = append(errs, &CompileError{path, err})
			continue
		}
		c.claims = append(c.claims, claim{name, path, prg})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return false
		}
	}
	return true
}

func nameByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '_' || b == '-'
}

// Names returns the claim names, sorted.
func (c *Claims) Names() []string {
	if c == nil {
		return nil
	}
	out := make([]string, len(c.claims))
	for i, cl := range c.claims {
		out[i] = cl.name
	}
	return out
}

// Eval computes the claims of a signed-in user: u, its keys and its session
// s (nil for none: session is then an empty map). The result is never nil
// (no claims is an empty map) and holds plain Go values ready for JSON (see
// [HeaderValue] for headers): string, bool, int64, float64, []any,
// map[string]any; timestamps are RFC 3339 strings.
//
// A claim whose expression fails for this user (a missing attribute gives
// "no such key") is left out and its [*EvalError] returned, for the log; so
// is one that runs over [DefaultCostLimit] or past ctx's end. A claim that is
// null (user.name of a user without a name) is left out too, without error:
// JSON readers and header readers then see the same thing, no claim.
func (c *Claims) Eval(ctx context.Context, u auth.User, keys []auth.Key, s *auth.Session) (map[string]any, []error) {
	if c == nil || len(c.claims) == 0 {
		return map[string]any{}, nil
	}
	act := &activation{}
	act.setUser(&u, keys, s)
	out := make(map[string]any, len(c.claims))
	var errs []error
	for _, cl := range c.claims {
		v, err := eval(ctx, cl.prg, act)
		if err == nil {
			var g any
			g, err = toGo(v)
			if err == nil {
				out[cl.name] = g
				continue
			}
			if err == errNull {
				continue
			}
		}
		errs = append(errs, &EvalError{cl.path, err})
	}
	return out, errs
}
