package server_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/internal/providertest"
)

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

func keysOf(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func wantKeys(t *testing.T, what string, m map[string]any, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := keysOf(m); !slices.Equal(got, want) {
		t.Errorf("%s keys: got %v; want %v", what, got, want)
	}
}

func TestGitHubLoginEndToEnd(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, pg bool) {
		h := newHarness(t, setup{Postgres: pg, GitHub: &githubSetup{User: providertest.GitHubUser{
			ID: 4242, Login: "octo", Name: "The Octocat", AvatarURL: "https://avatars.example/octo.png",
		}}})
		b := h.browser()

		// The browser's journey: broker → GitHub → callback → redirect_to.
		start := b.get("/login/github?redirect_to=/after", nil)
		if start.StatusCode != http.StatusFound {
			t.Fatalf("GET /login/github: got status %d; want 302", start.StatusCode)
		}
		authz := start.location(t)
		if !strings.HasPrefix(authz.String(), h.github.AuthURL()) {
			t.Errorf("GET /login/github: redirected to %s; want the GitHub authorization endpoint", authz)
		}
		q := authz.Query()
		if q.Get("state") == "" || q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256" {
			t.Errorf("authorization URL %s lacks state or PKCE S256", authz)
		}
		if got, want := q.Get("redirect_uri"), h.url+"/login/github/callback"; got != want {
			t.Errorf("redirect_uri: got %q; want %q", got, want)
		}
		if len(b.flowCookies()) != 1 {
			t.Errorf("flow cookies after start: got %d; want 1", len(b.flowCookies()))
		}
		cb := b.toProvider(start)
		r := b.get(cb.String(), nil)
		if r.StatusCode != http.StatusFound {
			t.Fatalf("callback: got status %d; want 302 (body %q)", r.StatusCode, r.body)
		}
		if got := r.location(t).String(); got != h.url+"/after" {
			t.Errorf("callback Location: got %q; want %q", got, h.url+"/after")
		}
		c := r.cookie("auth_session")
		if c == nil {
			t.Fatalf("callback: no auth_session cookie in %q", r.Header.Values("Set-Cookie"))
		}
		if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure {
			t.Errorf("session cookie: got HttpOnly=%v SameSite=%v Path=%q Secure=%v; want HttpOnly, Lax, /, not Secure on http",
				c.HttpOnly, c.SameSite, c.Path, c.Secure)
		}
		if !regexp.MustCompile(`^[a-z0-9]{40}$`).MatchString(c.Value) {
			t.Errorf("session token %q is not 40 characters of [a-z0-9]", c.Value)
		}
		if len(b.flowCookies()) != 0 {
			t.Errorf("flow cookie not cleared after the callback")
		}
		h.wantUsers(1)

		// GET /session: the exact shape of SPEC §7 and §9.
		s := b.getJSON("/session")
		if s.StatusCode != http.StatusOK {
			t.Fatalf("GET /session: got status %d; want 200 (body %q)", s.StatusCode, s.body)
		}
		body := s.json(t)
		wantKeys(t, "/session", body, "user", "session", "claims")
		user, _ := body["user"].(map[string]any)
		sess, _ := body["session"].(map[string]any)
		claims, _ := body["claims"].(map[string]any)
		wantKeys(t, "user", user, "id", "username", "email", "email_verified", "name", "image", "attributes")
		wantKeys(t, "session", sess, "id", "state", "active_expires", "idle_expires", "fresh")
		if claims == nil || len(claims) != 0 {
			t.Errorf("claims: got %v; want {}", body["claims"])
		}
		if id, _ := user["id"].(string); !regexp.MustCompile(`^[a-z0-9]{15}$`).MatchString(id) {
			t.Errorf("user.id %q is not 15 characters of [a-z0-9]", id)
		}
		if user["username"] != nil {
			t.Errorf("user.username: got %v; want null", user["username"])
		}
		if user["email"] != "octo@example.com" || user["email_verified"] != true {
			t.Errorf("user email: got %v verified %v; want octo@example.com verified", user["email"], user["email_verified"])
		}
		if user["name"] != "The Octocat" || user["image"] != "https://avatars.example/octo.png" {
			t.Errorf("user name/image: got %v, %v", user["name"], user["image"])
		}
		if a, ok := user["attributes"].(map[string]any); !ok || a == nil {
			t.Errorf("user.attributes: got %v; want an object", user["attributes"])
		}
		sum := sha256.Sum256([]byte(c.Value))
		if id, _ := sess["id"].(string); !hex64.MatchString(id) || id != hex.EncodeToString(sum[:]) {
			t.Errorf("session.id: got %q; want the hex SHA-256 of the cookie, %s", id, hex.EncodeToString(sum[:]))
		}
		if sess["state"] != "active" || sess["fresh"] != false {
			t.Errorf("session state/fresh: got %v/%v; want active/false", sess["state"], sess["fresh"])
		}
		ae, err1 := time.Parse(time.RFC3339, sess["active_expires"].(string))
		ie, err2 := time.Parse(time.RFC3339, sess["idle_expires"].(string))
		if err1 != nil || err2 != nil {
			t.Fatalf("session expiries are not RFC 3339: %v, %v", err1, err2)
		}
		if d := ae.Sub(h.clock.Now()); d < 24*time.Hour-time.Second || d > 24*time.Hour+time.Second {
			t.Errorf("active_expires: %v after now; want 24h", d)
		}
		if d := ie.Sub(ae); d != 14*24*time.Hour {
			t.Errorf("idle_expires - active_expires: got %v; want 336h", d)
		}
		if cc := s.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("/session Cache-Control: got %q; want no-store", cc)
		}
		userID := user["id"].(string)
		if keys := h.keysOf(userID); !slices.Equal(keys, []string{"github:4242"}) {
			t.Errorf("keys: got %v; want [github:4242]", keys)
		}

		// Bearer clients (no cookie) get the same answer.
		plain := h.browser()
		br := plain.get("/session", map[string]string{"Authorization": "Bearer " + c.Value, "Accept": "application/json"})
		if br.StatusCode != http.StatusOK {
			t.Fatalf("GET /session with bearer: got status %d; want 200 (body %q)", br.StatusCode, br.body)
		}
		if got := br.json(t)["user"].(map[string]any)["id"]; got != userID {
			t.Errorf("GET /session with bearer: user %v; want %s", got, userID)
		}
		if br.cookie("auth_session") != nil {
			t.Errorf("GET /session with bearer set a cookie")
		}
		bad := plain.get("/session", map[string]string{"Authorization": "Bearer " + strings.Repeat("a", 40), "Accept": "application/json"})
		wantError(t, bad, http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")

		// A second login of the same GitHub user, from another browser, finds
		// the same user.
		// This one follows the redirects as a browser does.
		b2 := h.browser()
		landed := b2.navigate("/login/github?redirect_to=%2Fafter%3Fx%3D1")
		if got := landed.Request.URL.String(); got != h.url+"/after?x=1" {
			t.Errorf("second login landed on %s; want %s/after?x=1", got, h.url)
		}
		if got := b2.me(); got != userID {
			t.Errorf("second login: user %s; want %s", got, userID)
		}
		h.wantUsers(1)
		if b2.session() == b.session() {
			t.Errorf("second login reused the first session's token")
		}
	})
}

func TestSessionUnauthenticated(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{})
	b := h.browser()
	wantError(t, b.getJSON("/session"), http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
	// A cookie that is not a session clears itself.
	u, _ := url.Parse(h.url)
	b.jar.SetCookies(u, []*http.Cookie{{Name: "auth_session", Value: strings.Repeat("z", 40), Path: "/"}})
	r := b.getJSON("/session")
	wantError(t, r, http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
	if c := r.cookie("auth_session"); c == nil || c.Value != "" || c.MaxAge >= 0 {
		t.Errorf("invalid session cookie not cleared: %v", r.Header.Values("Set-Cookie"))
	}
}

func TestOIDCLoginClaimsAndForwardAuth(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, pg bool) {
		h := newHarness(t, setup{Postgres: pg,
			OIDC: []oidcSetup{{
				Name: "dex",
				Fake: providertest.OIDCOptions{User: providertest.OIDCUser{
					Subject: "dex-sub-1", Email: "Ada@Example.com", EmailVerified: true, Name: "Ada Lovelacé",
					Claims: map[string]any{"groups": []any{"eng", "ops"}, "role": "admin"},
				}},
				providerRules: providerRules{Attributes: map[string]string{
					"groups": "identity.claims.groups",
					"role":   "identity.claims.role",
				}},
			}},
			Claims: map[string]string{
				"role":     "user.attributes.role",
				"is_admin": `has(user.attributes.role) && user.attributes.role == "admin"`,
				"groups":   "user.attributes.groups",
				"uid":      "user.id",
				"display":  "user.name",
			},
		})
		b := h.browser()
		r := b.login("dex", "/welcome")
		if got := r.location(t).String(); got != h.url+"/welcome" {
			t.Errorf("callback Location: got %q; want %s/welcome", got, h.url)
		}
		s := b.getJSON("/session")
		if s.StatusCode != http.StatusOK {
			t.Fatalf("GET /session: got %d (body %q)", s.StatusCode, s.body)
		}
		body := s.json(t)
		user := body["user"].(map[string]any)
		userID := user["id"].(string)
		if user["email"] != "ada@example.com" || user["email_verified"] != true || user["name"] != "Ada Lovelacé" {
			t.Errorf("user: got %v; want ada@example.com (lower-cased), verified, Ada Lovelacé", user)
		}
		attrs := user["attributes"].(map[string]any)
		if attrs["role"] != "admin" || !slices.Equal(toStrings(attrs["groups"]), []string{"eng", "ops"}) {
			t.Errorf("user.attributes: got %v; want role admin and groups [eng ops] from the provider", attrs)
		}
		claims := body["claims"].(map[string]any)
		wantKeys(t, "claims", claims, "role", "is_admin", "groups", "uid", "display")
		if claims["role"] != "admin" || claims["is_admin"] != true || claims["uid"] != userID ||
			!slices.Equal(toStrings(claims["groups"]), []string{"eng", "ops"}) {
			t.Errorf("claims: got %v", claims)
		}
		if strings.Contains(strings.ToLower(string(s.body)), "token") {
			t.Errorf("/session body mentions tokens: %s", s.body)
		}
		if keys := h.keysOf(userID); !slices.Equal(keys, []string{"dex:dex-sub-1"}) {
			t.Errorf("keys: got %v; want [dex:dex-sub-1]", keys)
		}

		// Forward-auth headers.
		fa := b.get("/auth", map[string]string{"Accept": ""})
		if fa.StatusCode != http.StatusOK {
			t.Fatalf("GET /auth: got status %d; want 200 (body %q)", fa.StatusCode, fa.body)
		}
		for name, want := range map[string]string{
			"X-Auth-User-Id":        userID,
			"X-Auth-Email":          "ada@example.com",
			"X-Auth-Claim-Role":     "admin",
			"X-Auth-Claim-Is-Admin": "true",
			"X-Auth-Claim-Groups":   "eng, ops",
			"X-Auth-Claim-Uid":      userID,
			"X-Auth-Claim-Display":  "Ada Lovelac%C3%A9", // non-ASCII percent-encoded
		} {
			if got := fa.Header.Values(name); len(got) != 1 || got[0] != want {
				t.Errorf("/auth %s: got %q; want %q", name, got, want)
			}
		}
		for name := range fa.Header {
			if strings.Contains(strings.ToLower(name), "token") {
				t.Errorf("/auth sent header %s", name)
			}
		}

		// A user without an email gets no X-Auth-Email, and no role claim.
		h.oidc["dex"].SetUser(providertest.OIDCUser{Subject: "dex-sub-2", Name: "No Mail", Claims: map[string]any{"groups": []any{}}})
		b2 := h.browser()
		b2.login("dex", "/")
		fa2 := b2.get("/auth", map[string]string{"Accept": ""})
		if fa2.StatusCode != http.StatusOK {
			t.Fatalf("GET /auth (no email): got status %d (body %q)", fa2.StatusCode, fa2.body)
		}
		if v, ok := fa2.Header["X-Auth-Email"]; ok {
			t.Errorf("/auth for a user without email sent X-Auth-Email %q", v)
		}
		if v, ok := fa2.Header["X-Auth-Claim-Role"]; ok {
			t.Errorf("/auth for a user without role sent X-Auth-Claim-Role %q", v)
		}
		if got := fa2.Header.Get("X-Auth-Claim-Is-Admin"); got != "false" {
			t.Errorf("/auth X-Auth-Claim-Is-Admin: got %q; want false", got)
		}
		if got := fa2.Header.Get("X-Auth-User-Id"); got == "" || got == userID {
			t.Errorf("/auth X-Auth-User-Id for the second user: got %q", got)
		}
		h.wantUsers(2)
	})
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// TestOIDCIssParam: an issuer that sends RFC 9207's iss is accepted when
// it is the configured issuer.
func TestOIDCIssParam(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{OIDC: []oidcSetup{{Name: "dex", Fake: providertest.OIDCOptions{IssParam: true}}}})
	b := h.browser()
	cb := b.startLogin("/login/dex")
	if got := cb.Query().Get("iss"); got != h.oidc["dex"].Issuer() {
		t.Fatalf("callback iss: got %q; want %q", got, h.oidc["dex"].Issuer())
	}
	if r := b.get(cb.String(), nil); r.StatusCode != http.StatusFound || r.cookie("auth_session") == nil {
		t.Fatalf("callback with the right iss: got status %d (body %q); want 302 with a session", r.StatusCode, r.body)
	}
	h.wantUsers(1)
}

// TestOIDCUserinfo: with userinfo on, a consistent userinfo answer signs in.
func TestOIDCUserinfo(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{OIDC: []oidcSetup{{Name: "dex", Userinfo: true}}})
	b := h.browser()
	b.login("dex", "")
	h.wantUsers(1)
	var sawUserinfo bool
	for _, r := range h.oidc["dex"].Requests() {
		sawUserinfo = sawUserinfo || r.Path == "/userinfo"
	}
	if !sawUserinfo {
		t.Errorf("userinfo was not called")
	}
}

// TestOIDCDiscoveryDown: an issuer that is down gives a clear 502, and works
// once it is back, without a restart.
func TestOIDCDiscoveryDown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{OIDC: []oidcSetup{{Name: "dex"}}})
	h.oidc["dex"].SetDiscoveryDown(true)
	b := h.browser()
	wantError(t, b.getJSON("/login/dex"), http.StatusBadGateway, "PROVIDER_ERROR")
	wantErrorPage(t, b.get("/login/dex", nil), http.StatusBadGateway, "PROVIDER_ERROR")
	h.oidc["dex"].SetDiscoveryDown(false)
	h.clock.Advance(time.Minute) // past the retry back-off
	b.login("dex", "")
	h.wantUsers(1)
}

func TestLoginPage(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{GitHub: &githubSetup{}, OIDC: []oidcSetup{{Name: "dex"}}})
	b := h.browser()
	r := b.get("/login?redirect_to=%2Fafter", nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("GET /login: got %d", r.StatusCode)
	}
	wantSecurityHeaders(t, r)
	for _, want := range []string{`href="/login/github?redirect_to=%2Fafter"`, `href="/login/dex?redirect_to=%2Fafter"`} {
		if !strings.Contains(r.Body(), want) {
			t.Errorf("login page lacks %s", want)
		}
	}
	// An unsafe redirect_to is not carried through.
	r = b.get("/login?redirect_to="+url.QueryEscape("https://evil.example/"), nil)
	if strings.Contains(r.Body(), "evil.example") {
		t.Errorf("login page carries an unsafe redirect_to")
	}
	// The root sends browsers to the login page.
	if r := b.get("/", nil); r.StatusCode != http.StatusFound || r.location(t).Path != "/login" {
		t.Errorf("GET /: got %d to %v; want 302 to /login", r.StatusCode, r.Header.Get("Location"))
	}
}

// TestConcurrentFirstLogin: two first logins of the same identity at once
// end in one user, both signed in.
func TestConcurrentFirstLogin(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, pg bool) {
		for _, linking := range []bool{false, true} {
			t.Run(fmt.Sprintf("link_verified_email=%v", linking), func(t *testing.T) {
				t.Parallel()
				concurrentFirstLogin(t, pg, linking)
			})
		}
	})
}

// concurrentFirstLogin runs simultaneous first logins of one GitHub
// identity; with linking, its verified email belongs to a user already and
// link_verified_email is on.
func concurrentFirstLogin(t *testing.T, pg, linking bool) {
	h := newHarness(t, setup{Postgres: pg, GitHub: &githubSetup{providerRules: providerRules{LinkVerifiedEmail: linking}}})
	var owner string
	if linking {
		owner = passwordUser(t, h, "octocat@example.com")
	}
	const n = 6
	bs := make([]*browser, n)
	cbs := make([]string, n)
	for i := range bs {
		bs[i] = h.browser()
		cbs[i] = bs[i].startLogin("/login/github").String()
	}
	type result struct {
		status int
		cookie bool
	}
	results := make(chan result, n)
	for i := range bs {
		go func() {
			// t.Fatal may not be called off the test goroutine: send
			// the request by hand.
			req, _ := http.NewRequest(http.MethodGet, cbs[i], nil)
			req.Header.Set("Accept", "application/json")
			resp, err := bs[i].c.Do(req)
			if err != nil {
				results <- result{}
				return
			}
			resp.Body.Close()
			c := false
			for _, ck := range resp.Cookies() {
				c = c || (ck.Name == "auth_session" && ck.Value != "")
			}
			results <- result{resp.StatusCode, c}
		}()
	}
	for range n {
		if r := <-results; r.status != http.StatusFound || !r.cookie {
			t.Errorf("concurrent callback: got %d (cookie %v); want 302 with a session", r.status, r.cookie)
		}
	}
	h.wantUsers(1)
	ids := map[string]bool{}
	for _, b := range bs {
		ids[b.me()] = true
	}
	if len(ids) != 1 {
		t.Errorf("concurrent first logins signed in %d different users; want 1", len(ids))
	}
	if linking && !ids[owner] {
		t.Errorf("concurrent linking logins signed in %v; want the email's owner %s", ids, owner)
	}
}
