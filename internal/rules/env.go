package rules

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
)

// Kind is the kind of a broker expression: it decides the variables the
// expression sees and the type it must have.
type Kind int

// The kinds of expressions.
const (
	// KindClaims is a session claim (claims.<name>): user, keys and session;
	// any result.
	KindClaims Kind = iota
	// KindAccess is the allow of a forward-auth access rule
	// (access[i].allow): user, keys, session, claims and request; a bool.
	KindAccess
	// KindIdentity is a provider's sign-in restriction
	// (providers.<p>.allow): identity; a bool.
	KindIdentity
	// KindIdentityAttribute is one of a provider's user attributes
	// (providers.<p>.attributes.<name>): identity; any result.
	KindIdentityAttribute
)

// String names the kind: claims, access, identity, identity attribute.
func (k Kind) String() string {
	switch k {
	case KindClaims:
		return "claims"
	case KindAccess:
		return "access"
	case KindIdentity:
		return "identity"
	case KindIdentityAttribute:
		return "identity attribute"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// wantsBool reports whether expressions of kind k decide: they must give a
// bool.
func (k Kind) wantsBool() bool { return k == KindAccess || k == KindIdentity }

// DefaultCostLimit is the CEL runtime cost one evaluation of one expression
// may spend (cel.CostLimit; about one unit per operation, more for string
// and list work proportional to size). An ordinary claim or rule costs tens;
// a comprehension that blows up stops here, in milliseconds, with an error.
const DefaultCostLimit = 100_000

// interruptEvery is how many comprehension iterations run between checks of
// the context.
const interruptEvery = 100

// maxRange bounds lists.range(n): a larger n is an error at evaluation
// rather than a large allocation before the cost is counted.
const maxRange = 10_000

// libraries are the CEL extensions every expression may use, as
// internal/config declares them: strings (lowerAscii, split, …), lists and
// sets.
func libraries() []cel.EnvOption {
	return []cel.EnvOption{ext.Strings(), ext.Lists(ext.ListsMaxRangeSize(maxRange)), ext.Sets()}
}

// record is the declared type of the map variables: string keys, values of
// any type.
var recordType = cel.MapType(cel.StringType, cel.DynType)

var envs = [...]func() (*cel.Env, error){
	KindClaims: sync.OnceValues(func() (*cel.Env, error) {
		return cel.NewEnv(append(libraries(),
			cel.Variable("user", recordType),
			cel.Variable("keys", cel.ListType(recordType)),
			cel.Variable("session", recordType),
		)...)
	}),
	KindAccess: sync.OnceValues(func() (*cel.Env, error) {
		return cel.NewEnv(append(libraries(),
			cel.Variable("user", recordType),
			cel.Variable("keys", cel.ListType(recordType)),
			cel.Variable("session", recordType),
			cel.Variable("claims", recordType),
			cel.Variable("request", recordType),
		)...)
	}),
	KindIdentity:          identityEnv,
	KindIdentityAttribute: identityEnv,
}

// identityEnv is shared by both identity kinds.
var identityEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(append(libraries(), cel.Variable("identity", recordType))...)
})

// CompileError is an expression of the configuration that does not compile.
// Path is its configuration key ("claims.role", "access[0].allow",
// "providers.github.attributes.groups").
type CompileError struct {
	Path string
	Err  error
}

// Error is "<path>: <problem>".
func (e *CompileError) Error() string { return e.Path + ": " + e.Err.Error() }

// Unwrap returns the problem.
func (e *CompileError) Unwrap() error { return e.Err }

// EvalError is an expression that failed for one request or login: a
// missing key, a wrong type, the cost limit, a cancelled context. The claim,
// attribute or rule is left out or refuses; the server logs the error.
type EvalError struct {
	Path string
	Err  error
}

// Error is "<path>: <problem>".
func (e *EvalError) Error() string { return e.Path + ": " + e.Err.Error() }

// Unwrap returns the problem: errors.Is(err, context.Canceled) holds for
// an evaluation that ctx stopped.
func (e *EvalError) Unwrap() error { return e.Err }

// Check compiles expr as an expression of kind k and reports why it cannot
// run: empty, a syntax or type error, an undeclared variable, or (for the
// kinds that decide) a result that cannot be a bool. The configuration
// validator uses it so that what it accepts is what runs.
func Check(expr string, k Kind) error {
	_, err := compile(expr, k)
	return err
}

// compile turns src into a program with the cost limit and context checks.
func compile(src string, k Kind) (cel.Program, error) {
	if k < 0 || int(k) >= len(envs) {
		return nil, fmt.Errorf("unknown expression kind %d", int(k))
	}
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("empty expression")
	}
	env, err := envs[k]()
	if err != nil {
		return nil, fmt.Errorf("CEL environment: %w", err)
	}
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		msgs := make([]string, 0, len(iss.Errors()))
		for _, ce := range iss.Errors() {
			msg := strings.TrimSuffix(ce.Message, " (in container '')")
			msgs = append(msgs, fmt.Sprintf("%d:%d: %s", ce.Location.Line(), ce.Location.Column()+1, msg))
		}
		return nil, fmt.Errorf("CEL expression does not compile: %s", strings.Join(msgs, "; "))
	}
	if k.wantsBool() {
		switch out := ast.OutputType(); out.Kind() {
		case types.BoolKind, types.DynKind, types.AnyKind:
		default:
			return nil, fmt.Errorf("CEL expression must be true or false, but it gives %s", out)
		}
	}
	prg, err := env.Program(ast,
		cel.CostLimit(DefaultCostLimit),
		cel.InterruptCheckFrequency(interruptEvery),
		cel.EvalOptions(cel.OptOptimize),
	)
	if err != nil {
		return nil, fmt.Errorf("CEL program: %w", err)
	}
	return prg, nil
}

// eval runs prg over act under ctx (nil means context.Background()).
func eval(ctx context.Context, prg cel.Program, act *activation) (ref.Val, error) {
	var (
		out ref.Val
		err error
	)
	if ctx == nil || ctx.Done() == nil {
		// A context that never ends has nothing to interrupt: skip the
		// per-evaluation setup of ContextEval. The cost limit still holds.
		out, _, err = prg.Eval(act)
	} else {
		out, _, err = prg.ContextEval(ctx, act)
	}
	if err != nil {
		return nil, err
	}
	if e, ok := out.(*types.Err); ok {
		return nil, e
	}
	return out, nil
}

// decide runs an allow expression: only true allows. An error or a result
// that is not a bool refuses, with the reason.
func decide(ctx context.Context, prg cel.Program, act *activation) (bool, error) {
	out, err := eval(ctx, prg, act)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("gave %s, not a bool: refused", out.Type().TypeName())
	}
	return bool(b), nil
}
