package server_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/internal/providertest"
)

// withQuery returns u with its query changed by f.
func withQuery(u *url.URL, f func(url.Values)) string {
	c := *u
	q := c.Query()
	f(q)
	c.RawQuery = q.Encode()
	return c.String()
}

// wantNoSession checks that an answer did not sign anyone in.
func wantNoSession(t *testing.T, r *response) {
	t.Helper()
	if c := r.cookie("auth_session"); c != nil && c.Value != "" {
		t.Errorf("%s: refused callback set a session cookie", r.Request.URL.Path)
	}
}

var jsonAccept = map[string]string{"Accept": "application/json"}

// TestCallbackRefusals: a callback that does not finish the flow this
// browser started is refused with AUTH_INVALID_REQUEST, and nothing is
// created.
func TestCallbackRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// run starts a github flow in b and sends a bad callback.
		run func(t *testing.T, h *harness, b *browser) *response
	}{
		{"state mismatch", func(t *testing.T, h *harness, b *browser) *response {
			cb := b.startLogin("/login/github")
			return b.get(withQuery(cb, func(q url.Values) { q.Set("state", q.Get("state")+"x") }), jsonAccept)
		}},
		{"missing state", func(t *testing.T, h *harness, b *browser) *response {
			cb := b.startLogin("/login/github")
			return b.get(withQuery(cb, func(q url.Values) { q.Del("state") }), jsonAccept)
		}},
		{"empty state", func(t *testing.T, h *harness, b *browser) *response {
			cb := b.startLogin("/login/github")
			return b.get(withQuery(cb, func(q url.Values) { q.Set("state", "") }), jsonAccept)
		}},
		{"flow cookie missing", func(t *testing.T, h *harness, b *browser) *response {
			cb := b.startLogin("/login/github")
			return h.browser().get(cb.String(), jsonAccept) // another browser
		}},
		{"expired flow", func(t *testing.T, h *harness, b *browser) *response {
			cb := b.startLogin("/login/github")
			h.clock.Advance(10*time.Minute + time.Second)
			return b.get(cb.String(), jsonAccept)
		}},
		{"tampered flow cookie", func(t *testing.T, h *harness, b *browser) *response {
			cb := b.startLogin("/login/github")
			fc := b.flowCookies()
			if len(fc) != 1 {
				t.Fatalf("flow cookies: got %d; want 1", len(fc))
			}
			v := []byte(fc[0].Value)
			i := len(v) / 2
			if v[i] == 'A' {
				v[i] = 'B'
			} else {
				v[i] = 'A'
			}
			u, _ := url.Parse(h.url)
			b.jar.SetCookies(u, []*http.Cookie{{Name: fc[0].Name, Value: string(v), Path: "/"}})
			return b.get(cb.String(), jsonAccept)
		}},
		{"flow cookie under another state's name", func(t *testing.T, h *harness, b *browser) *response {
			// Two flows; the cookie of the first is moved to the name of the
			// second (authenticated with its name, so it does not open).
			cb1 := b.startLogin("/login/github")
			first := b.flowCookies()[0]
			cb2 := b.startLogin("/login/github")
			var second *http.Cookie
			for _, c := range b.flowCookies() {
				if c.Name != first.Name {
					second = c
				}
			}
			_ = cb1
			u, _ := url.Parse(h.url)
			b.jar.SetCookies(u, []*http.Cookie{{Name: second.Name, Value: first.Value, Path: "/"}})
			return b.get(cb2.String(), jsonAccept)
		}},
		{"mix-up: github flow finished at dex", func(t *testing.T, h *harness, b *browser) *response {
			cb := b.startLogin("/login/github")
			mixed := *cb
			mixed.Path = "/login/dex/callback"
			return b.get(mixed.String(), jsonAccept)
		}},
		{"RFC 9207 iss of another issuer", func(t *testing.T, h *harness, b *browser) *response {
			cb := b.startLogin("/login/dex")
			return b.get(withQuery(cb, func(q url.Values) { q.Set("iss", "https://evil.example") }), jsonAccept)
		}},
		{"RFC 9207 iss at a provider without an issuer", func(t *testing.T, h *harness, b *browser) *response {
			cb := b.startLogin("/login/github")
			return b.get(withQuery(cb, func(q url.Values) { q.Set("iss", "https://github.com") }), jsonAccept)
		}},
		{"RFC 9207 iss given twice", func(t *testing.T, h *harness, b *browser) *response {
			cb := b.startLogin("/login/dex")
			return b.get(withQuery(cb, func(q url.Values) { q["iss"] = []string{h.oidc["dex"].Issuer(), "https://evil.example"} }), jsonAccept)
		}},
		{"missing code", func(t *testing.T, h *harness, b *browser) *response {
			cb := b.startLogin("/login/github")
			return b.get(withQuery(cb, func(q url.Values) { q.Del("code") }), jsonAccept)
		}},
		{"forged code", func(t *testing.T, h *harness, b *browser) *response {
			cb := b.startLogin("/login/github")
			return b.get(withQuery(cb, func(q url.Values) { q.Set("code", "forged") }), jsonAccept)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, setup{GitHub: &githubSetup{}, OIDC: []oidcSetup{{Name: "dex"}}})
			b := h.browser()
			r := tc.run(t, h, b)
			wantError(t, r, http.StatusBadRequest, "AUTH_INVALID_REQUEST")
			wantNoSession(t, r)
			h.wantUsers(0)
			// Refused before any code was redeemed (but a forged code,
			// which only the provider can refuse).
			if n := h.tokenRequests(); n != 0 && tc.name != "forged code" {
				t.Errorf("the provider got %d token requests; want the callback refused before the code exchange", n)
			}
		})
	}
}

// TestCallbackReplay: the same callback (URL and flow cookie, copied) can
// finish only once.
func TestCallbackReplay(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, pg bool) {
		h := newHarness(t, setup{Postgres: pg, GitHub: &githubSetup{}})
		b := h.browser()
		cb := b.startLogin("/login/github")
		fc := b.flowCookies()
		if len(fc) != 1 {
			t.Fatalf("flow cookies: got %d; want 1", len(fc))
		}
		first := b.get(cb.String(), nil)
		if first.StatusCode != http.StatusFound || first.cookie("auth_session") == nil {
			t.Fatalf("first callback: got %d (body %q); want 302 with a session", first.StatusCode, first.body)
		}
		userID := b.me()
		// An attacker who copied the cookie and the URL replays them.
		attacker := h.browser()
		u, _ := url.Parse(h.url)
		attacker.jar.SetCookies(u, []*http.Cookie{{Name: fc[0].Name, Value: fc[0].Value, Path: "/"}})
		second := attacker.get(cb.String(), jsonAccept)
		wantError(t, second, http.StatusBadRequest, "AUTH_INVALID_REQUEST")
		wantNoSession(t, second)
		h.wantUsers(1)
		if n := h.tokenRequests(); n != 1 {
			t.Errorf("GitHub got %d code exchanges; want 1 (the replay refused before the exchange)", n)
		}
		ss, err := h.auth.GetAllUserSessions(t.Context(), userID)
		if err != nil || len(ss) != 1 {
			t.Errorf("sessions after replay: got %d (%v); want 1", len(ss), err)
		}
	})
}

// TestCallbackProviderRefusals: the provider refused, failed or answered
// something hostile; the broker answers a clear error and creates nothing.
func TestCallbackProviderRefusals(t *testing.T) {
	t.Parallel()
	type tcase struct {
		name   string
		setup  setup
		prep   func(h *harness)
		start  string
		status int
		code   string
	}
	dex := func(o oidcSetup) setup {
		if o.Name == "" {
			o.Name = "dex"
		}
		return setup{OIDC: []oidcSetup{o}}
	}
	tests := []tcase{
		{name: "github access_denied", setup: setup{GitHub: &githubSetup{}}, prep: func(h *harness) { h.github.Deny("access_denied") },
			start: "/login/github", status: http.StatusForbidden, code: "FORBIDDEN"},
		{name: "oidc access_denied", setup: dex(oidcSetup{}), prep: func(h *harness) { h.oidc["dex"].Deny("access_denied") },
			start: "/login/dex", status: http.StatusForbidden, code: "FORBIDDEN"},
		{name: "github token endpoint 500", setup: setup{GitHub: &githubSetup{}},
			prep:  func(h *harness) { h.github.SetFault(providertest.Token, providertest.Fault{Status: 500}) },
			start: "/login/github", status: http.StatusBadGateway, code: "PROVIDER_ERROR"},
		{name: "github API 500", setup: setup{GitHub: &githubSetup{}},
			prep:  func(h *harness) { h.github.SetFault(providertest.API, providertest.Fault{Status: 500}) },
			start: "/login/github", status: http.StatusBadGateway, code: "PROVIDER_ERROR"},
		{name: "oidc token endpoint 500", setup: dex(oidcSetup{}),
			prep:  func(h *harness) { h.oidc["dex"].SetFault(providertest.Token, providertest.Fault{Status: 500}) },
			start: "/login/dex", status: http.StatusBadGateway, code: "PROVIDER_ERROR"},
		{name: "oidc token endpoint rate limit", setup: dex(oidcSetup{}),
			prep: func(h *harness) {
				h.oidc["dex"].SetFault(providertest.Token, providertest.Fault{RateLimit: time.Minute})
			},
			start: "/login/dex", status: http.StatusBadGateway, code: "PROVIDER_ERROR"},
		{name: "oidc jwks down", setup: dex(oidcSetup{}),
			prep:  func(h *harness) { h.oidc["dex"].SetFault(providertest.JWKS, providertest.Fault{Status: 503}) },
			start: "/login/dex", status: http.StatusBadGateway, code: "PROVIDER_ERROR"},
		{name: "github without verified email", setup: setup{GitHub: &githubSetup{User: providertest.GitHubUser{
			Emails: []providertest.GitHubEmail{{Email: "unverified@example.com", Primary: true, Verified: false}},
		}}}, start: "/login/github", status: http.StatusForbidden, code: "FORBIDDEN"},
		{name: "github allow rule refuses", setup: setup{GitHub: &githubSetup{
			providerRules: providerRules{Allow: `identity.email.endsWith("@corp.example")`},
		}}, start: "/login/github", status: http.StatusForbidden, code: "FORBIDDEN"},
		{name: "oidc allow rule refuses", setup: dex(oidcSetup{
			providerRules: providerRules{Allow: `"admins" in identity.claims.groups`},
			Fake:          providertest.OIDCOptions{User: providertest.OIDCUser{Subject: "s", Email: "a@example.com", EmailVerified: true, Claims: map[string]any{"groups": []any{"users"}}}},
		}), start: "/login/dex", status: http.StatusForbidden, code: "FORBIDDEN"},
		{name: "oidc allow rule over a missing claim", setup: dex(oidcSetup{
			providerRules: providerRules{Allow: `"admins" in identity.claims.groups`},
		}), start: "/login/dex", status: http.StatusForbidden, code: "FORBIDDEN"},
	}
	for _, m := range []struct {
		name string
		m    providertest.Misbehavior
	}{
		{"AlgNone", providertest.AlgNone},
		{"HS256", providertest.HS256},
		{"BadSignature", providertest.BadSignature},
		{"WrongIssuer", providertest.WrongIssuer},
		{"WrongAudience", providertest.WrongAudience},
		{"WrongAZP", providertest.WrongAZP},
		{"Expired", providertest.Expired},
		{"MissingIat", providertest.MissingIat},
		{"FutureIat", providertest.FutureIat},
		{"MissingSub", providertest.MissingSub},
		{"WrongNonce", providertest.WrongNonce},
		{"MissingNonce", providertest.MissingNonce},
		{"BadAtHash", providertest.BadAtHash},
		{"NoIDToken", providertest.NoIDToken},
		{"UserinfoSubMismatch", providertest.UserinfoSubMismatch},
	} {
		tests = append(tests, tcase{
			name:   "oidc " + m.name,
			setup:  dex(oidcSetup{Userinfo: m.m == providertest.UserinfoSubMismatch}),
			prep:   func(h *harness) { h.oidc["dex"].SetMisbehavior(m.m) },
			start:  "/login/dex",
			status: http.StatusBadGateway, code: "PROVIDER_ERROR",
		})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, tc.setup)
			if tc.prep != nil {
				tc.prep(h)
			}
			b := h.browser()
			cb := b.startLogin(tc.start)
			r := b.get(cb.String(), jsonAccept)
			wantError(t, r, tc.status, tc.code)
			wantNoSession(t, r)
			h.wantUsers(0)
		})
	}
}

// TestCallbackProviderHang: a token endpoint that never answers gives 502
// after ProviderTimeout, not a hung browser.
func TestCallbackProviderHang(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"github", "dex"} {
		t.Run(p, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, setup{GitHub: &githubSetup{}, OIDC: []oidcSetup{{Name: "dex"}}, ProviderTimeout: 300 * time.Millisecond})
			h.github.SetFault(providertest.Token, providertest.Fault{Hang: true})
			h.oidc["dex"].SetFault(providertest.Token, providertest.Fault{Hang: true})
			b := h.browser()
			cb := b.startLogin("/login/" + p)
			start := time.Now()
			r := b.get(cb.String(), jsonAccept)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("callback took %v; want about ProviderTimeout (300ms)", d)
			}
			wantError(t, r, http.StatusBadGateway, "PROVIDER_ERROR")
			h.wantUsers(0)
		})
	}
}

// TestCallbackErrorPages: the same refusal is JSON for scripts and a page
// for browsers.
func TestCallbackErrorPages(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{GitHub: &githubSetup{}})
	b := h.browser()

	cb := b.startLogin("/login/github")
	bad := withQuery(cb, func(q url.Values) { q.Set("state", "nope") })
	j := b.get(bad, jsonAccept)
	wantError(t, j, http.StatusBadRequest, "AUTH_INVALID_REQUEST")

	p := b.get(bad, nil) // a browser navigation
	wantErrorPage(t, p, http.StatusBadRequest, "AUTH_INVALID_REQUEST")
	if strings.Contains(p.Body(), "providersession") || strings.Contains(p.Body(), "goroutine") {
		t.Errorf("error page leaks internals: %q", p.body)
	}

	h.github.Deny("access_denied")
	cb = b.startLogin("/login/github")
	p = b.get(cb.String(), nil)
	wantErrorPage(t, p, http.StatusForbidden, "FORBIDDEN")
	h.wantUsers(0)
}
