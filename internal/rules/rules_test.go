package rules

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/providers"
)

func ptr[T any](v T) *T { return &v }

var (
	t0 = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

	testUser = auth.User{
		ID:            "u1",
		Username:      ptr("zoe"),
		Email:         ptr("zoe@example.com"),
		EmailVerified: true,
		Name:          ptr("Zoë"),
		Image:         nil,
		Attributes: map[string]any{
			"role":   "admin",
			"groups": []any{"dev", "ops"},
			"level":  float64(3),
		},
		CreatedAt: t0,
	}
	testKeys = []auth.Key{
		{ID: "github:123", UserID: "u1", ProviderID: "github", ProviderUserID: "123", CreatedAt: t0},
		{ID: "email:zoe@example.com", UserID: "u1", ProviderID: "email", ProviderUserID: "zoe@example.com", PasswordDefined: true},
	}
	testSession = &auth.Session{
		ID:              "5e551017",
		Token:           "secret-token",
		UserID:          "u1",
		State:           auth.StateActive,
		ActiveExpires:   t0.Add(24 * time.Hour),
		IdleExpires:     t0.Add(15 * 24 * time.Hour),
		Attributes:      map[string]any{"mfa": true},
		CreatedAt:       t0,
		AuthenticatedAt: t0.Add(time.Minute),
		UserAgent:       "curl/8",
		IP:              "192.0.2.1",
	}
)

// blowup is a comprehension of 10^6 iterations building 10^6 lists: far
// over the cost limit.
const blowup = `[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, ` +
	`[1,2,3,4,5,6,7,8,9,10].map(c, [1,2,3,4,5,6,7,8,9,10].map(d, ` +
	`[1,2,3,4,5,6,7,8,9,10].map(e, [1,2,3,4,5,6,7,8,9,10].map(f, a+b+c+d+e+f))))))`

// errPaths returns the Path of every CompileError in a joined error.
func errPaths(t *testing.T, err error) []string {
	t.Helper()
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else if err != nil {
		errs = []error{err}
	}
	var paths []string
	for _, e := range errs {
		var ce *CompileError
		if !errors.As(e, &ce) {
			t.Fatalf("error %v is not a *CompileError", e)
		}
		if !strings.HasPrefix(e.Error(), ce.Path+": ") {
			t.Errorf("error %q does not start with its path %q", e, ce.Path)
		}
		paths = append(paths, ce.Path)
	}
	return paths
}

func TestClaimsEval(t *testing.T) {
	tests := []struct {
		name    string
		expr    string
		session *auth.Session // testSession unless noSession
		noSess  bool
		want    any    // the claim's value; nil: left out
		wantErr string // substring of the error; "": no error
	}{
		{name: "attribute", expr: `user.attributes.role`, want: "admin"},
		{name: "email domain", expr: `user.email.split("@")[1]`, want: "example.com"},
		{name: "email check", expr: `user.email.endsWith("@example.com") && user.email_verified`, want: true},
		{name: "providers", expr: `keys.map(k, k.provider_id)`, want: []any{"github", "email"}},
		{name: "key ids", expr: `keys.map(k, k.id)`, want: []any{"github:123", "email:zoe@example.com"}},
		{name: "session state", expr: `session.state`, want: "active"},
		{name: "session attributes", expr: `session.state == "active" && session.attributes.mfa`, want: true},
		{name: "session fields", expr: `[session.id, session.ip, session.user_agent]`, want: []any{"5e551017", "192.0.2.1", "curl/8"}},
		{name: "session times", expr: `session.active_expires - session.created_at`, want: "86400s"},
		{name: "recent", expr: `session.authenticated_at > session.created_at`, want: true},
		{name: "float attribute", expr: `user.attributes.level`, want: float64(3)},
		{name: "int", expr: `user.attributes.groups.size()`, want: int64(2)},
		{name: "uint", expr: `7u`, want: int64(7)},
		{name: "big uint", expr: `18446744073709551615u`, want: uint64(18446744073709551615)},
		{name: "list attribute", expr: `user.attributes.groups`, want: []any{"dev", "ops"}},
		{name: "timestamp", expr: `user.created_at`, want: "2024-01-02T03:04:05Z"},
		{name: "bytes", expr: `b"hi"`, want: "aGk="},
		{name: "map", expr: `{"a": 1, "b": [true, null], 3: "x"}`, want: map[string]any{"a": int64(1), "b": []any{true, nil}, "3": "x"}},
		{name: "user map", expr: `user.filter(k, k.startsWith("e"))`, want: []any{"email", "email_verified"}},
		{name: "name", expr: `user.name`, want: "Zoë"},
		{name: "whole key", expr: `keys[0]`, want: map[string]any{"id": "github:123", "provider_id": "github", "provider_user_id": "123"}},
		{name: "whole session", expr: `session`, want: map[string]any{
			"id": "5e551017", "state": "active",
			"active_expires": "2024-01-03T03:04:05Z", "idle_expires": "2024-01-17T03:04:05Z",
			"created_at": "2024-01-02T03:04:05Z", "authenticated_at": "2024-01-02T03:05:05Z",
			"attributes": map[string]any{"mfa": true}, "user_agent": "curl/8", "ip": "192.0.2.1",
		}},
		{name: "record equality", expr: `keys[0] == {"id": "github:123", "provider_id": "github", "provider_user_id": "123"} && user == user && keys[0] != keys[1]`, want: true},
		{name: "null left out", expr: `user.image`},
		{name: "null literal left out", expr: `null`},
		{name: "no token in session", expr: `has(session.token) || "token" in session`, want: false},
		{name: "keys have three fields", expr: `keys.all(k, k.size() == 3) && !has(keys[0].password_defined)`, want: true},
		{name: "missing attribute", expr: `user.attributes.missing`, wantErr: "no such key: missing"},
		{name: "wrong type", expr: `user.id + 1`, wantErr: "no such overload"},
		{name: "NaN", expr: `0.0 / 0.0`, wantErr: "not a JSON number"},
		{name: "type value", expr: `type(1)`, wantErr: "has no JSON form"},
		{name: "cost limit", expr: blowup, wantErr: "cost limit exceeded"},
		{name: "no session", expr: `has(session.id)`, noSess: true, want: false},
		{name: "no session state", expr: `session.state`, noSess: true, wantErr: "no such key: state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := CompileClaims(map[string]string{"x": tt.expr})
			if err != nil {
				t.Fatalf("CompileClaims: %v", err)
			}
			s := testSession
			if tt.noSess {
				s = nil
			}
			got, errs := c.Eval(context.Background(), testUser, testKeys, s)
			if tt.wantErr != "" {
				if len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.wantErr) || !strings.HasPrefix(errs[0].Error(), "claims.x: ") {
					t.Fatalf("errors = %v, want one with %q", errs, tt.wantErr)
				}
				var ee *EvalError
				if !errors.As(errs[0], &ee) || ee.Path != "claims.x" {
					t.Errorf("error %v is not an *EvalError for claims.x", errs[0])
				}
			} else if len(errs) != 0 {
				t.Fatalf("errors = %v", errs)
			}
			want := map[string]any{}
			if tt.want != nil {
				want["x"] = tt.want
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("claims = %#v, want %#v", got, want)
			}
		})
	}
}

func TestClaimsEvalSeveral(t *testing.T) {
	c, err := CompileClaims(map[string]string{
		"role":      `user.attributes.role`,
		"team":      `user.attributes.team`, // absent
		"domain":    `user.email.split("@")[1]`,
		"providers": `keys.map(k, k.provider_id)`,
		"is_admin":  `user.attributes.role == "admin"`,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Names(), []string{"domain", "is_admin", "providers", "role", "team"}; !slices.Equal(got, want) {
		t.Errorf("Names = %v, want %v", got, want)
	}
	got, errs := c.Eval(context.Background(), testUser, testKeys, testSession)
	want := map[string]any{
		"role":      "admin",
		"domain":    "example.com",
		"providers": []any{"github", "email"},
		"is_admin":  true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("claims = %#v, want %#v", got, want)
	}
	if len(errs) != 1 || errs[0].Error() != "claims.team: no such key: team" {
		t.Errorf("errors = %v", errs)
	}

	// A user without the attributes gets fewer claims, not a failure.
	bare := auth.User{ID: "u2"}
	got, errs = c.Eval(context.Background(), bare, nil, nil)
	if want := map[string]any{"providers": []any{}}; !reflect.DeepEqual(got, want) {
		t.Errorf("bare claims = %#v, want %#v", got, want)
	}
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	if want := []string{
		"claims.domain: no such overload: split(null_type, string)",
		"claims.is_admin: no such key: role",
		"claims.role: no such key: role",
		"claims.team: no such key: team",
	}; !slices.Equal(msgs, want) {
		t.Errorf("bare errors = %q, want %q", msgs, want)
	}
}

func TestClaimsEmpty(t *testing.T) {
	for _, c := range []*Claims{nil, mustClaims(t, nil)} {
		got, errs := c.Eval(context.Background(), testUser, testKeys, testSession)
		if got == nil || len(got) != 0 || errs != nil {
			t.Errorf("Eval = %#v, %v; want an empty map", got, errs)
		}
	}
}

func mustClaims(t testing.TB, m map[string]string) *Claims {
	t.Helper()
	c, err := CompileClaims(m)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCompileClaimsErrors(t *testing.T) {
	_, err := CompileClaims(map[string]string{
		"ok":       `user.id`,
		"Role":     `1`,
		"role":     `user.attributes.role`, // X-Auth-Claim-Role again
		"is_admin": `true`,
		"is-admin": `false`, // X-Auth-Claim-Is-Admin again
		"bad name": `1`,
		"":         `1`,
		"syntax":   `user.`,
		"unknown":  `request.path`, // not a claims variable
		"empty":    `  `,
	})
	if err == nil {
		t.Fatal("no error")
	}
	got := errPaths(t, err)
	want := []string{"claims.", "claims.bad name", "claims.empty", "claims.is_admin", "claims.role", "claims.syntax", "claims.unknown"}
	if !slices.Equal(got, want) {
		t.Errorf("paths = %q, want %q", got, want)
	}
	for _, frag := range []string{
		`claims.role: claim "Role" and claim "role" would both be the header X-Auth-Claim-Role`,
		`claims.is_admin: claim "is-admin" and claim "is_admin" would both be the header X-Auth-Claim-Is-Admin`,
		`claims.bad name: claim name "bad name" must be letters, digits, '_' and '-'`,
		`claims.syntax: CEL expression does not compile: 1:6: `,
		`claims.unknown: CEL expression does not compile: 1:1: undeclared reference to 'request'`,
		`claims.empty: empty expression`,
	} {
		if !strings.Contains(err.Error(), frag) {
			t.Errorf("error lacks %q:\n%v", frag, err)
		}
	}
}

func TestHeaderName(t *testing.T) {
	tests := []struct{ claim, want string }{
		{"role", "X-Auth-Claim-Role"},
		{"is_admin", "X-Auth-Claim-Is-Admin"},
		{"is-admin", "X-Auth-Claim-Is-Admin"},
		{"IS_ADMIN", "X-Auth-Claim-Is-Admin"},
		{"isAdmin", "X-Auth-Claim-Isadmin"},
		{"groups2", "X-Auth-Claim-Groups2"},
		{"2fa_method", "X-Auth-Claim-2fa-Method"},
		{"a__b", "X-Auth-Claim-A--B"},
		{"x y\r\n", "X-Auth-Claim-X-Y--"},
	}
	for _, tt := range tests {
		if got := HeaderName(tt.claim); got != tt.want {
			t.Errorf("HeaderName(%q) = %q, want %q", tt.claim, got, tt.want)
		}
	}
}

func TestHeaderValue(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"string", "admin", "admin"},
		{"string with spaces and quotes", `a "b", c`, `a "b", c`},
		{"empty string", "", ""},
		{"int64", int64(42), "42"},
		{"negative int", -7, "-7"},
		{"uint64", uint64(18446744073709551615), "18446744073709551615"},
		{"float", 1.5, "1.5"},
		{"whole float", float64(3), "3"},
		{"big float", 1e21, "1e+21"},
		{"small float", 1e-7, "1e-7"},
		{"float32", float32(0.1), "0.1"},
		{"true", true, "true"},
		{"false", false, "false"},
		{"nil", nil, "null"},
		{"list", []any{"dev", "ops"}, "dev, ops"},
		{"mixed list", []any{"a", int64(1), true, 2.5, nil}, "a, 1, true, 2.5, null"},
		{"nested list", []any{[]any{int64(1), int64(2)}, []any{int64(3)}, "x"}, "1, 2, 3, x"},
		{"empty list", []any{}, ""},
		{"string slice", []string{"a", "b"}, "a, b"},
		{"int slice", []int{1, 2}, "1, 2"},
		{"map", map[string]any{"b": int64(1), "a": []any{"x"}, "c": "<&>"}, `{"a":["x"],"b":1,"c":"<&>"}`},
		{"map in list", []any{map[string]any{"k": "v"}, "z"}, `{"k":"v"}, z`},
		{"non-ASCII", "Zoë", "Zo%C3%AB"},
		{"non-ASCII in map", map[string]any{"n": "Zoë"}, `{"n":"Zo%C3%AB"}`},
		{"CRLF injection", "a\r\nX-Evil: 1", "a%0D%0AX-Evil: 1"},
		{"tab, NUL and DEL", "a\tb\x00c\x7f", "a%09b%00c%7F"},
		{"percent", "100%", "100%25"},
		{"already encoded", "Zo%C3%AB", "Zo%25C3%25AB"},
		{"list of non-ASCII", []any{"Zoë", "Ålesund"}, "Zo%C3%AB, %C3%85lesund"},
		{"emoji", "👍", "%F0%9F%91%8D"},
	}
	for _, tt := range tests {
		if got := HeaderValue(tt.v); got != tt.want {
			t.Errorf("%s: HeaderValue(%#v) = %q, want %q", tt.name, tt.v, got, tt.want)
		}
	}
}

// TestHeaderValueOfClaims runs claims through Eval and HeaderValue, as
// /auth does.
func TestHeaderValueOfClaims(t *testing.T) {
	c := mustClaims(t, map[string]string{
		"name":      `user.name`,
		"providers": `keys.map(k, k.provider_id)`,
		"level":     `user.attributes.level`,
		"count":     `size(keys)`,
		"admin":     `user.attributes.role == "admin"`,
		"since":     `user.created_at`,
	})
	got, errs := c.Eval(context.Background(), testUser, testKeys, testSession)
	if errs != nil {
		t.Fatal(errs)
	}
	headers := map[string]string{}
	for k, v := range got {
		headers[HeaderName(k)] = HeaderValue(v)
	}
	want := map[string]string{
		"X-Auth-Claim-Name":      "Zo%C3%AB",
		"X-Auth-Claim-Providers": "github, email",
		"X-Auth-Claim-Level":     "3",
		"X-Auth-Claim-Count":     "2",
		"X-Auth-Claim-Admin":     "true",
		"X-Auth-Claim-Since":     "2024-01-02T03:04:05Z",
	}
	if !reflect.DeepEqual(headers, want) {
		t.Errorf("headers = %v, want %v", headers, want)
	}
}

var testRules = []Rule{
	{Host: "App.Example.com", PathPrefix: "/admin", Allow: `claims.role == "admin"`},                                                                                 // 0
	{Host: "app.example.com", PathPrefix: "/admin", Allow: `true`},                                                                                                   // 1: shadowed by 0
	{Host: "app.example.com", PathPrefix: "/staff/", Allow: `user.email.endsWith("@example.com")`},                                                                   // 2
	{Host: "app.example.com", PathPrefix: "/boom", Allow: `user.attributes.nope == "x"`},                                                                             // 3
	{Host: "app.example.com", PathPrefix: "/str", Allow: `user.id`},                                                                                                  // 4
	{Host: "app.example.com", PathPrefix: "/echo", Allow: `request == {"host": "app.example.com", "path": "/echo/a", "method": "PUT"}`},                              // 5
	{Host: "app.example.com", PathPrefix: "/caf%C3%A9", Allow: `false`},                                                                                              // 6
	{Host: "app.example.com", PathPrefix: "/cost", Allow: blowup + `.size() > 0`},                                                                                    // 7
	{Host: "app.example.com", PathPrefix: "/fresh", Allow: `session.authenticated_at > timestamp("2024-01-02T03:00:00Z") && "github" in keys.map(k, k.provider_id)`}, // 8
	{PathPrefix: "/api/private", Allow: `request.method == "GET"`},                                                                                                   // 9: any host
	{Host: "other.example.com:8080", Allow: `"ops" in user.attributes.groups`},                                                                                       // 10: any path
}

func TestAccessDecide(t *testing.T) {
	a, err := CompileAccess(testRules)
	if err != nil {
		t.Fatal(err)
	}
	admin := map[string]any{"role": "admin"}
	viewer := map[string]any{"role": "viewer"}
	outsider := testUser
	outsider.Email = ptr("eve@else.test")
	noEmail := testUser
	noEmail.Email = nil
	noGroups := testUser
	noGroups.Attributes = map[string]any{}

	tests := []struct {
		name         string
		user         *auth.User // testUser when nil
		claims       map[string]any
		host, path   string
		method       string
		allowed, hit bool
		wantErr      string
	}{
		{name: "admin", claims: admin, host: "app.example.com", path: "/admin", allowed: true, hit: true},
		{name: "viewer", claims: viewer, host: "app.example.com", path: "/admin", hit: true},
		{name: "no claims", host: "app.example.com", path: "/admin", hit: true, wantErr: "access[0].allow: no such key: role"},
		{name: "host case and port", claims: viewer, host: "APP.Example.COM:8443", path: "/admin", hit: true},
		{name: "host trailing dot", claims: viewer, host: "app.example.com.", path: "/admin", hit: true},
		{name: "admin/", claims: viewer, host: "app.example.com", path: "/admin/", hit: true},
		{name: "admin/x", claims: viewer, host: "app.example.com", path: "/admin/x/y", hit: true},
		{name: "encoded", claims: viewer, host: "app.example.com", path: "/%61dmin", hit: true},
		{name: "encoded slash", claims: viewer, host: "app.example.com", path: "/admin%2Fx", hit: true},
		{name: "dot-dot", claims: viewer, host: "app.example.com", path: "/x/../admin", hit: true},
		{name: "encoded dot-dot", claims: viewer, host: "app.example.com", path: "/x/%2e%2e/admin", hit: true},
		{name: "double slash", claims: viewer, host: "app.example.com", path: "//admin", hit: true},
		{name: "dot segment", claims: viewer, host: "app.example.com", path: "/admin/./x", hit: true},
		{name: "query", claims: viewer, host: "app.example.com", path: "/admin?next=/", hit: true},
		{name: "fragment", claims: viewer, host: "app.example.com", path: "/admin#x", hit: true},
		{name: "path params", claims: viewer, host: "app.example.com", path: "/admin;jsessionid=1/x", hit: true},
		{name: "dot-dot params", claims: viewer, host: "app.example.com", path: "/x/..;/admin", hit: true},
		{name: "backslash", claims: viewer, host: "app.example.com", path: `\admin`, hit: true},
		{name: "no leading slash", claims: viewer, host: "app.example.com", path: "admin", hit: true},
		{name: "bad escape is under every prefix", claims: viewer, host: "app.example.com", path: "/public/%zz", hit: true},
		{name: "administrator", claims: viewer, host: "app.example.com", path: "/administrator", allowed: true},
		{name: "case-sensitive", claims: viewer, host: "app.example.com", path: "/ADMIN", allowed: true},
		{name: "double encoding is decoded once", claims: viewer, host: "app.example.com", path: "/%2561dmin", allowed: true},
		{name: "root", claims: viewer, host: "app.example.com", path: "/", allowed: true},
		{name: "empty path", claims: viewer, host: "app.example.com", path: "", allowed: true},
		{name: "other host", claims: viewer, host: "evil.example.com", path: "/admin", allowed: true},
		{name: "host suffix", claims: viewer, host: "xapp.example.com", path: "/admin", allowed: true},
		{name: "staff", host: "app.example.com", path: "/staff", allowed: true, hit: true},
		{name: "staff outsider", user: &outsider, host: "app.example.com", path: "/staff/list", hit: true},
		{name: "staff without email", user: &noEmail, host: "app.example.com", path: "/staff", hit: true, wantErr: "access[2].allow: no such overload"},
		{name: "eval error", host: "app.example.com", path: "/boom", hit: true, wantErr: "access[3].allow: no such key: nope"},
		{name: "not a bool", host: "app.example.com", path: "/str", hit: true, wantErr: "access[4].allow: gave string, not a bool"},
		{name: "request", host: "App.Example.com:443", path: "/echo/b/../a?x=1", method: "PUT", allowed: true, hit: true},
		{name: "request method", host: "app.example.com", path: "/echo/a", method: "GET", hit: true},
		{name: "decoded prefix", host: "app.example.com", path: "/caf%C3%A9/menu", hit: true},
		{name: "cost limit", host: "app.example.com", path: "/cost", hit: true, wantErr: "cost limit exceeded"},
		{name: "session and keys", host: "app.example.com", path: "/fresh", allowed: true, hit: true},
		{name: "any host GET", host: "x.test", path: "/api/private/data", method: "GET", allowed: true, hit: true},
		{name: "any host POST", host: "x.test", path: "/api/private/data", method: "POST", hit: true},
		{name: "any host other path", host: "x.test", path: "/api/public", method: "POST", allowed: true},
		{name: "any path", host: "other.example.com", path: "/anything", allowed: true, hit: true},
		{name: "any path refused", user: &noGroups, host: "other.example.com", path: "/", hit: true, wantErr: "no such key: groups"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := testUser
			if tt.user != nil {
				u = *tt.user
			}
			in := AccessInput{User: u, Keys: testKeys, Session: testSession, Claims: tt.claims, Host: tt.host, Path: tt.path, Method: tt.method}
			allowed, hit, err := a.Decide(context.Background(), in)
			if allowed != tt.allowed || hit != tt.hit {
				t.Errorf("Decide = allowed %v, matched %v (err %v); want %v, %v", allowed, hit, err, tt.allowed, tt.hit)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("error %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want one with %q", err, tt.wantErr)
			}
		})
	}
}

func TestAccessNoRules(t *testing.T) {
	empty, err := CompileAccess(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []*Access{nil, empty} {
		allowed, hit, err := a.Decide(context.Background(), AccessInput{Host: "x", Path: "/admin"})
		if !allowed || hit || err != nil {
			t.Errorf("Decide = %v, %v, %v; want allowed, unmatched", allowed, hit, err)
		}
	}
}

func TestCompileAccessErrors(t *testing.T) {
	_, err := CompileAccess([]Rule{
		{Allow: ``},
		{PathPrefix: "admin", Allow: `true`},
		{Allow: `1`},
		{Host: "*.example.com", Allow: `true`},
		{Allow: `user.`},
		{PathPrefix: "/a%zz", Allow: `true`},
		{Host: "app.example.com", PathPrefix: "/ok", Allow: `claims.role == "admin"`},
		{Allow: `identity.email == ""`},
		{PathPrefix: "/a?b", Allow: `true`},
	})
	got := errPaths(t, err)
	want := []string{"access[0].allow", "access[1].path_prefix", "access[2].allow", "access[3].host", "access[4].allow", "access[5].path_prefix", "access[7].allow", "access[8].path_prefix"}
	if !slices.Equal(got, want) {
		t.Errorf("paths = %q, want %q", got, want)
	}
	for _, frag := range []string{
		"access[0].allow: empty expression",
		`access[1].path_prefix: "admin" must start with /`,
		"access[2].allow: CEL expression must be true or false, but it gives int",
		`access[3].host: "*.example.com" is not a host name`,
		"access[7].allow: CEL expression does not compile: 1:1: undeclared reference to 'identity'",
	} {
		if !strings.Contains(err.Error(), frag) {
			t.Errorf("error lacks %q:\n%v", frag, err)
		}
	}
}

func TestNormalizePath(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"/", "/", true},
		{"", "/", true},
		{"/admin/", "/admin", true},
		{"/%61dmin", "/admin", true},
		{"//admin//x/", "/admin/x", true},
		{"/a/b/../../admin", "/admin", true},
		{"/../../admin", "/admin", true},
		{"/admin;a=1;b=2/x;y", "/admin/x", true},
		{`/a\..\admin`, "/admin", true},
		{"/caf%C3%A9", "/café", true},
		{"/a b", "/a b", true},
		{"/x%zz?q", "/x%zz", false},
		{"/x%", "/x%", false},
	}
	for _, tt := range tests {
		got, ok := normalizePath(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("normalizePath(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

var testIdentity = providers.Identity{
	Subject:       "42",
	Email:         "zoe@example.com",
	EmailVerified: true,
	Name:          "Zoë",
	Username:      "zoe",
	Claims:        map[string]any{"groups": []any{"admins", "dev"}, "hd": "example.com", "exp": float64(1700000000)},
	Orgs:          []string{"acme", "other"},
	Tokens:        &oauth2.Token{AccessToken: "secret-access-token"},
}

func TestIdentityAllow(t *testing.T) {
	other := testIdentity
	other.Email = "eve@else.test"
	other.Claims = map[string]any{"hd": "else.test"}
	other.Orgs = nil

	tests := []struct {
		name    string
		allow   string
		id      providers.Identity
		want    bool
		wantErr string
	}{
		{name: "empty", allow: "", id: testIdentity, want: true},
		{name: "blank", allow: "  ", id: other, want: true},
		{name: "email", allow: `identity.email.endsWith("@example.com")`, id: testIdentity, want: true},
		{name: "email refused", allow: `identity.email.endsWith("@example.com")`, id: other},
		{name: "group", allow: `"admins" in identity.claims.groups`, id: testIdentity, want: true},
		{name: "group absent", allow: `"admins" in identity.claims.groups`, id: other, wantErr: "providers.test.allow: no such key: groups"},
		{name: "group absent guarded", allow: `has(identity.claims.groups) && "admins" in identity.claims.groups`, id: other},
		{name: "org", allow: `identity.orgs.exists(o, o == "acme")`, id: testIdentity, want: true},
		{name: "no orgs", allow: `identity.orgs.exists(o, o == "acme")`, id: other},
		{name: "verified domain", allow: `identity.email_verified && identity.claims.hd == "example.com"`, id: testIdentity, want: true},
		{name: "fields", allow: `identity.subject == "42" && identity.username == "zoe" && identity.name == "Zoë" && identity.picture == ""`, id: testIdentity, want: true},
		{name: "no tokens", allow: `!has(identity.tokens) && !has(identity.profile) && identity.size() == 8`, id: testIdentity, want: true},
		{name: "not a bool", allow: `identity.email`, id: testIdentity, wantErr: "gave string, not a bool"},
		{name: "cost limit", allow: blowup + `.size() > 0`, id: testIdentity, wantErr: "cost limit exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := CompileIdentity(tt.allow, nil, "providers.test")
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.Allow(context.Background(), tt.id)
			if got != tt.want {
				t.Errorf("Allow = %v (err %v), want %v", got, err, tt.want)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("error %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want one with %q", err, tt.wantErr)
			}
		})
	}
}

func TestIdentityAttributes(t *testing.T) {
	r, err := CompileIdentity(`identity.email_verified`, map[string]string{
		"groups":  `identity.claims.groups`,
		"login":   `identity.username`,
		"orgs":    `identity.orgs`,
		"missing": `identity.claims.nope`,
		"nothing": `null`,
		"n":       `identity.claims.groups.size()`,
		"exp":     `int(identity.claims.exp)`,
	}, "providers.github")
	if err != nil {
		t.Fatal(err)
	}
	got, errs := r.Attributes(context.Background(), testIdentity)
	want := map[string]any{
		"groups": []any{"admins", "dev"},
		"login":  "zoe",
		"orgs":   []any{"acme", "other"},
		"n":      int64(2),
		"exp":    int64(1700000000),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("attributes = %#v, want %#v", got, want)
	}
	if len(errs) != 1 || errs[0].Error() != "providers.github.attributes.missing: no such key: nope" {
		t.Errorf("errors = %v", errs)
	}

	var none *IdentityRules
	if ok, err := none.Allow(context.Background(), testIdentity); !ok || err != nil {
		t.Errorf("nil rules: Allow = %v, %v", ok, err)
	}
	if got, errs := none.Attributes(context.Background(), testIdentity); got == nil || len(got) != 0 || errs != nil {
		t.Errorf("nil rules: Attributes = %v, %v", got, errs)
	}
}

func TestCompileIdentityErrors(t *testing.T) {
	_, err := CompileIdentity(`1`, map[string]string{
		"groups": `identity.`,
		"":       `1`,
		"ok":     `identity.claims`,
		"user":   `user.id`,
	}, "providers.oidc.dex")
	got := errPaths(t, err)
	want := []string{"providers.oidc.dex.allow", "providers.oidc.dex.attributes.", "providers.oidc.dex.attributes.groups", "providers.oidc.dex.attributes.user"}
	if !slices.Equal(got, want) {
		t.Errorf("paths = %q, want %q", got, want)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		expr    string
		kind    Kind
		wantErr string
	}{
		{`user.attributes.role`, KindClaims, ""},
		{`keys.map(k, k.provider_id)`, KindClaims, ""},
		{`session.state`, KindClaims, ""},
		{`claims.role`, KindClaims, "undeclared reference to 'claims'"},
		{`request.path`, KindClaims, "undeclared reference to 'request'"},
		{`claims.role == "admin" && request.path.startsWith("/") && user.id != "" && size(keys) > 0 && session.id != ""`, KindAccess, ""},
		{`1`, KindAccess, "must be true or false, but it gives int"},
		{`user.id`, KindAccess, ""}, // dyn: may be a bool
		{`identity.email.endsWith("@example.com")`, KindIdentity, ""},
		{`identity.email`, KindIdentity, ""},
		{`"x"`, KindIdentity, "must be true or false, but it gives string"},
		{`user.id == ""`, KindIdentity, "undeclared reference to 'user'"},
		{`identity.claims.groups`, KindIdentityAttribute, ""},
		{`"x".lowerAscii() in ["a"].map(s, s.upperAscii())`, KindIdentityAttribute, ""},
		{`sets.contains([1], [1])`, KindClaims, ""},
		{`lists.range(3)`, KindClaims, ""},
		{``, KindClaims, "empty expression"},
		{`1 +`, KindClaims, "does not compile"},
		{`true`, Kind(99), "unknown expression kind"},
	}
	for _, tt := range tests {
		err := Check(tt.expr, tt.kind)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("Check(%q, %v) = %v", tt.expr, tt.kind, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("Check(%q, %v) = %v, want an error with %q", tt.expr, tt.kind, err, tt.wantErr)
		}
	}
}

// TestCostLimitBoundsTime checks that the pathological expressions stop
// quickly, with an error.
func TestCostLimitBoundsTime(t *testing.T) {
	for _, expr := range []string{
		blowup,
		`lists.range(10000).map(x, lists.range(10000).map(y, x * y))`,
		`lists.range(1000000)`,
		`["aaaaaaaaaa"].map(s, s.replace("", s).replace("", s).replace("", s).replace("", s).replace("", s))`,
	} {
		c := mustClaims(t, map[string]string{"x": expr})
		start := time.Now()
		got, errs := c.Eval(context.Background(), testUser, testKeys, testSession)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%.40s…: took %v", expr, d)
		}
		if len(got) != 0 || len(errs) != 1 {
			t.Errorf("%.40s…: claims %v, errors %v; want one error", expr, got, errs)
		}
	}
}

func TestContextCancel(t *testing.T) {
	const expr = `lists.range(5000).all(x, x >= 0)`
	c := mustClaims(t, map[string]string{"x": expr})
	got, errs := c.Eval(context.Background(), testUser, nil, nil)
	if !reflect.DeepEqual(got, map[string]any{"x": true}) || errs != nil {
		t.Fatalf("live context: %v, %v", got, errs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got, errs = c.Eval(ctx, testUser, nil, nil)
	if len(got) != 0 || len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
		t.Errorf("cancelled context: %v, %v; want a context.Canceled error", got, errs)
	}
	a, err := CompileAccess([]Rule{{Allow: expr}})
	if err != nil {
		t.Fatal(err)
	}
	if ok, hit, err := a.Decide(ctx, AccessInput{Path: "/"}); ok || !hit || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: Decide = %v, %v, %v; want refused", ok, hit, err)
	}
}

func TestConcurrent(t *testing.T) {
	c := mustClaims(t, map[string]string{"role": `user.attributes.role`, "p": `keys.map(k, k.provider_id)`})
	a, err := CompileAccess(testRules)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				got, errs := c.Eval(context.Background(), testUser, testKeys, testSession)
				if errs != nil || got["role"] != "admin" {
					t.Errorf("Eval = %v, %v", got, errs)
					return
				}
				ok, hit, err := a.Decide(context.Background(), AccessInput{User: testUser, Keys: testKeys, Session: testSession, Claims: got, Host: "app.example.com", Path: "/admin/x"})
				if !ok || !hit || err != nil {
					t.Errorf("Decide = %v, %v, %v", ok, hit, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkClaimsEval(b *testing.B) {
	c := mustClaims(b, map[string]string{
		"role":      `user.attributes.role`,
		"domain":    `user.email.split("@")[1]`,
		"verified":  `user.email_verified`,
		"providers": `keys.map(k, k.provider_id)`,
	})
	// A request's context, as the server passes it: cancellable, so the
	// evaluation checks it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		if _, errs := c.Eval(ctx, testUser, testKeys, testSession); errs != nil {
			b.Fatal(errs)
		}
	}
}

func BenchmarkAccessDecide(b *testing.B) {
	a, err := CompileAccess(testRules)
	if err != nil {
		b.Fatal(err)
	}
	in := AccessInput{
		User: testUser, Keys: testKeys, Session: testSession,
		Claims: map[string]any{"role": "admin"},
		Host:   "app.example.com:443", Path: "/admin/users?page=2", Method: "GET",
	}
	// A request's context, as the server passes it: cancellable, so the
	// evaluation checks it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		if ok, _, err := a.Decide(ctx, in); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkAccessDecideNoMatch(b *testing.B) {
	a, err := CompileAccess(testRules)
	if err != nil {
		b.Fatal(err)
	}
	in := AccessInput{User: testUser, Host: "app.example.com", Path: "/public/index.html", Method: "GET"}
	// A request's context, as the server passes it: cancellable, so the
	// evaluation checks it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		if ok, _, _ := a.Decide(ctx, in); !ok {
			b.Fatal("refused")
		}
	}
}
