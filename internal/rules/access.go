package rules

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"

	"cel.dev/cel-go/cel"

	"github.com/brokerauth/broker/auth"
)

// Rule is one forward-auth access rule of the configuration (access[i]).
type Rule struct {
	// Host is the request host the rule is for, matched case-insensitively
	// and without the port; empty matches every host. No wildcards.
	Host string
	// PathPrefix is matched on whole path segments: /admin covers /admin,
	// /admin/ and /admin/x but not /administrator. Empty or / covers every
	// path.
	PathPrefix string
	// Allow is a CEL expression that must be true for the request to pass.
	Allow string
}

// Access are the compiled access rules, in order. Safe for concurrent use.
// A nil *Access has no rules: every signed-in user is allowed.
type Access struct {
	rules []accessRule
}

type accessRule struct {
	host   string // normalized; "" is any
	prefix string // cleaned; "/" is any
	path   string // access[i].allow
	prg    cel.Program
}

// AccessInput is what an access rule decides on: the signed-in user, its
// keys and session, its claims (from [Claims.Eval]) and the original
// request from the proxy (X-Forwarded-Host, X-Forwarded-Uri or
// X-Original-URI, X-Forwarded-Method).
type AccessInput struct {
	User    auth.User
	Keys    []auth.Key
	Session *auth.Session
	Claims  map[string]any
	// Host may carry a port; Path may carry a query, which is ignored.
	Host, Path, Method string
}

// CompileAccess compiles the rules, at start. Each problem is a
// [*CompileError] with the key path access[i].host, access[i].path_prefix
// or access[i].allow, all joined with errors.Join.
func CompileAccess(rules []Rule) (*Access, error) {
	a := &Access{rules: make([]accessRule, 0, len(rules))}
	var errs []error
	for i, r := range rules {
		base := fmt.Sprintf("access[%d].", i)
		ar := accessRule{path: base + "allow"}
		ok := true
		if strings.ContainsAny(r.Host, "/*?#@ \t\r\n") {
			errs = append(errs, &CompileError{base + "host", fmt.Errorf("%q is not a host name (no scheme, path or wildcard)", r.Host)})
			ok = false
		}
		ar.host = normalizeHost(r.Host)
		switch p := r.PathPrefix; {
		case p == "":
			ar.prefix = "/"
		case p[0] != '/':
			errs = append(errs, &CompileError{base + "path_prefix", fmt.Errorf("%q must start with /", p)})
			ok = false
		case strings.ContainsAny(p, "?#"):
			errs = append(errs, &CompileError{base + "path_prefix", fmt.Errorf("%q must be a path, without query or fragment", p)})
			ok = false
		default:
			clean, decoded := normalizePath(p)
			if !decoded {
				errs = append(errs, &CompileError{base + "path_prefix", fmt.Errorf("%q has a bad %%-escape", p)})
				ok = false
			}
			ar.prefix = clean
		}
		prg, err := compile(r.Allow, KindAccess)
		if err != nil {
			errs = append(errs, &CompileError{ar.path, err})
			ok = false
		}
		if ok {
			ar.prg = prg
			a.rules = append(a.rules, ar)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return a, nil
}

// Decide applies the first rule whose host and path prefix match the
// request. matched reports whether one did; when none does, allowed is true:
// any signed-in user may pass. When one does, allowed is its allow
// expression's result; an expression that fails or does not give a bool
// refuses (fails closed), and err says why, for the log.
//
// The path is matched as the application will likely see it: the query
// and fragment are cut, the rest percent-decoded once (/%61dmin is /admin,
// /a%2Fb is /a/b), backslashes taken as slashes, ";params" cut from each
// segment (/admin;x=1 is /admin, as servlet containers read it), and the
// result cleaned (//admin, /x/../admin and /admin/./ are /admin). Matching
// is case-sensitive: /ADMIN is not under /admin. A path that cannot be
// decoded (a bad %-escape) is taken to be under every prefix, so the first
// rule for its host decides rather than none.
func (a *Access) Decide(ctx context.Context, in AccessInput) (allowed bool, matched bool, err error) {
	if a == nil || len(a.rules) == 0 {
		return true, false, nil
	}
	host := normalizeHost(in.Host)
	p, decoded := normalizePath(in.Path)
	for i := range a.rules {
		r := &a.rules[i]
		if r.host != "" && r.host != host {
			continue
		}
		if decoded && !underPrefix(p, r.prefix) {
			continue
		}
		act := &activation{claims: in.Claims, hasReq: true}
		act.setUser(&in.User, in.Keys, in.Session)
		act.req = request{host: host, path: p, method: in.Method}
		act.request = record[request]{requestShape, &act.req}
		ok, err := decide(ctx, r.prg, act)
		if err != nil {
			return false, true, &EvalError{r.path, err}
		}
		return ok, true, nil
	}
	return true, false, nil
}

// underPrefix reports whether the clean path p is prefix or below it.
func underPrefix(p, prefix string) bool {
	if prefix == "/" || p == prefix {
		return true
	}
	return len(p) > len(prefix) && p[len(prefix)] == '/' && p[:len(prefix)] == prefix
}

// normalizeHost lower-cases h and drops its port, the brackets of an IPv6
// literal and a final dot.
func normalizeHost(h string) string {
	if strings.IndexByte(h, ':') >= 0 { // only then: SplitHostPort's error allocates
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		} else if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
			h = h[1 : len(h)-1]
		}
	}
	h = strings.TrimSuffix(h, ".")
	return strings.ToLower(h)
}

// normalizePath turns a request target's path into the clean, decoded path
// rules match (see [Access.Decide]). decoded is false when it holds a bad
// %-escape; the path is then returned with only its query cut.
func normalizePath(raw string) (p string, decoded bool) {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	p, err := url.PathUnescape(raw)
	if err != nil {
		return raw, false
	}
	if strings.IndexByte(p, '\\') >= 0 {
		p = strings.ReplaceAll(p, "\\", "/")
	}
	if strings.IndexByte(p, ';') >= 0 {
		p = cutParams(p)
	}
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	return path.Clean(p), true
}

// cutParams removes ";params" from every segment of p.
func cutParams(p string) string {
	var b strings.Builder
	b.Grow(len(p))
	for i, seg := range strings.Split(p, "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		if j := strings.IndexByte(seg, ';'); j >= 0 {
			seg = seg[:j]
		}
		b.WriteString(seg)
	}
	return b.String()
}
