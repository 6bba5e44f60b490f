package config

import (
	"fmt"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/ext"
)

// celLibraries are the CEL extensions every broker expression may use:
// strings (lowerAscii, split, …), lists and sets.
func celLibraries() []cel.EnvOption {
	return []cel.EnvOption{ext.Strings(), ext.Lists(), ext.Sets()}
}

// NewRequestEnv returns the CEL environment of session claims and access rules
// (SPEC §7, §9): user, keys, session, claims and request, all dynamically
// typed. Code that evaluates these expressions should compile them here, so
// that what [Config.Validate] accepts is what runs.
func NewRequestEnv() (*cel.Env, error) {
	return cel.NewEnv(append(celLibraries(),
		cel.Variable("user", cel.DynType),
		cel.Variable("keys", cel.DynType),
		cel.Variable("session", cel.DynType),
		cel.Variable("claims", cel.DynType),
		cel.Variable("request", cel.DynType),
	)...)
}

// NewIdentityEnv returns the CEL environment of providers' allow and
// attributes expressions (SPEC §4): identity, a map from string to dyn
// (email, email_verified, name, claims, orgs).
func NewIdentityEnv() (*cel.Env, error) {
	return cel.NewEnv(append(celLibraries(),
		cel.Variable("identity", cel.MapType(cel.StringType, cel.DynType)),
	)...)
}

// celEnvs builds each environment once per Validate, and only when needed.
type celEnvs struct {
	req, id       *cel.Env
	reqErr, idErr error
	reqOK, idOK   bool
}

func (e *celEnvs) request() (*cel.Env, error) {
	if !e.reqOK {
		e.req, e.reqErr = NewRequestEnv()
		e.reqOK = true
	}
	return e.req, e.reqErr
}

func (e *celEnvs) identity() (*cel.Env, error) {
	if !e.idOK {
		e.id, e.idErr = NewIdentityEnv()
		e.idOK = true
	}
	return e.id, e.idErr
}

// expr compiles src in the environment env returns; wantBool also requires a
// result that can be a bool.
func (ck *checker) expr(path, src string, env func() (*cel.Env, error), wantBool bool) {
	if strings.TrimSpace(src) == "" {
		ck.add(path, "empty expression")
		return
	}
	e, err := env()
	if err != nil {
		ck.add(path, "CEL environment: %v", err)
		return
	}
	ast, iss := e.Compile(src)
	if iss.Err() != nil {
		var msgs []string
		for _, ce := range iss.Errors() {
			msg := strings.TrimSuffix(ce.Message, " (in container '')")
			msgs = append(msgs, fmt.Sprintf("%d:%d: %s", ce.Location.Line(), ce.Location.Column()+1, msg))
		}
		ck.add(path, "CEL expression does not compile: %s", strings.Join(msgs, "; "))
		return
	}
	if wantBool {
		switch out := ast.OutputType(); out.Kind() {
		case types.BoolKind, types.DynKind, types.AnyKind:
		default:
			ck.add(path, "CEL expression must be true or false, but it gives %s", out)
		}
	}
}
