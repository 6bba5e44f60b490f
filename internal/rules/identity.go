package rules

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"

	"github.com/brokerauth/broker/providers"
)

// IdentityRules are a provider's compiled allow and attributes expressions
// (SPEC §4), over the variable identity. Safe for concurrent use. A nil
// *IdentityRules allows everyone and sets no attributes.
type IdentityRules struct {
	allow     cel.Program // nil: everyone
	allowPath string
	attrs     []claim // sorted by name
}

// CompileIdentity compiles a provider's allow expression (empty: everyone
// may sign in) and attributes (user attribute name → expression). prefix is
// the provider's configuration key, e.g. "providers.github" or
// "providers.oidc.dex": each problem is a [*CompileError] with the path
// <prefix>.allow or <prefix>.attributes.<name>, all joined with
// errors.Join. allow must give a bool.
func CompileIdentity(allow string, attributes map[string]string, prefix string) (*IdentityRules, error) {
	r := &IdentityRules{allowPath: prefix + ".allow"}
	var errs []error
	if strings.TrimSpace(allow) != "" {
		prg, err := compile(allow, KindIdentity)
		if err != nil {
			errs = append(errs, &CompileError{r.allowPath, err})
		}
		r.allow = prg
	}
	for _, name := range slices.Sorted(maps.Keys(attributes)) {
		path := prefix + ".attributes." + name
		if name == "" {
			errs = append(errs, &CompileError{path, errors.New("empty attribute name")})
			continue
		}
		prg, err := compile(attributes[name], KindIdentityAttribute)
		if err != nil {
			errs = append(errs, &CompileError{path, err})
			continue
		}
		r.attrs = append(r.attrs, claim{name, path, prg})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

func identityActivation(id *providers.Identity) *activation {
	act := &activation{hasIdent: true, id: *id}
	act.identity = record[providers.Identity]{identityShape, &act.id}
	return act
}

// Allow reports whether the identity may sign in: true without an allow
// expression; otherwise the expression's result. An expression that fails
// (a claim the provider did not send, the cost limit) or does not give a
// bool refuses, and the [*EvalError] says why, for the log.
func (r *IdentityRules) Allow(ctx context.Context, id providers.Identity) (bool, error) {
	if r == nil || r.allow == nil {
		return true, nil
	}
	ok, err := decide(ctx, r.allow, identityActivation(&id))
	if err != nil {
		return false, &EvalError{r.allowPath, err}
	}
	return ok, nil
}

// Attributes evaluates the attribute expressions for the identity, into
// plain Go values as [Claims.Eval] gives them. The result is never nil. An
// attribute whose expression fails is left out and its [*EvalError]
// returned; one that is null is left out without error.
//
// Left out means absent from the result, not removed: when a provider stops
// sending a claim (an IdP that omits groups when there are none), an
// expression such as identity.claims.groups fails, and a caller that merges
// the result into the stored attributes keeps the old value. Write
// `has(identity.claims.groups) ? identity.claims.groups : []` where a stale
// value would grant too much.
func (r *IdentityRules) Attributes(ctx context.Context, id providers.Identity) (map[string]any, []error) {
	if r == nil || len(r.attrs) == 0 {
		return map[string]any{}, nil
	}
	act := identityActivation(&id)
	out := make(map[string]any, len(r.attrs))
	var errs []error
	for _, a := range r.attrs {
		v, err := eval(ctx, a.prg, act)
		if err == nil {
			var g any
			g, err = toGo(v)
			if err == nil {
				out[a.name] = g
				continue
			}
			if err == errNull {
				continue
			}
		}
		errs = append(errs, &EvalError{a.path, err})
	}
	return out, errs
}
