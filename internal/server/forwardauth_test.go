package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/providertest"
	"github.com/brokerauth/broker/internal/rules"
	"github.com/brokerauth/broker/internal/server"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// proxied returns the headers a reverse proxy sends to /auth for the
// original request proto://host uri.
func proxied(proto, host, uri string) map[string]string {
	return map[string]string{
		"Accept": "", "X-Forwarded-Proto": proto, "X-Forwarded-Host": host, "X-Forwarded-Uri": uri,
		"X-Forwarded-Method": "GET",
	}
}

func TestForwardAuthAnonymous(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{})
	b := h.browser()

	r := b.get("/auth", proxied("https", "app.example.com", "/x"))
	wantError(t, r, http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
	for _, k := range []string{"X-Auth-User-Id", "X-Auth-Email"} {
		if v := r.Header.Get(k); v != "" {
			t.Errorf("anonymous /auth sent %s: %q", k, v)
		}
	}
	// An unknown or malformed token is anonymous too.
	wantError(t, b.get("/auth", map[string]string{"Accept": "", "Authorization": "Bearer " + "0123456789abcdefghij0123456789abcdefghij"}),
		http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
	wantError(t, b.get("/auth", map[string]string{"Accept": "", "Cookie": "auth_session=../../etc"}),
		http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")

	tests := []struct {
		name string
		hdr  map[string]string
		want string
	}{
		{"allowed origin", proxied("https", "app.example.com", "/reports?id=7&x=%2F"),
			h.url + "/login?redirect_to=" + url.QueryEscape("https://app.example.com/reports?id=7&x=%2F")},
		{"X-Original-URI", map[string]string{"Accept": "", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.com", "X-Original-URI": "/y"},
			h.url + "/login?redirect_to=" + url.QueryEscape("https://app.example.com/y")},
		{"origin not allowed", proxied("https", "evil.example", "/x"), h.url + "/login"},
		{"allowed host with another scheme", proxied("http", "app.example.com", "/x"), h.url + "/login"},
		{"lookalike host", proxied("https", "app.example.com.evil.example", "/x"), h.url + "/login"},
		{"no forwarded headers", map[string]string{"Accept": ""}, h.url + "/login"},
	}
	for _, tc := range tests {
		r := b.get("/auth?redirect=1", tc.hdr)
		if r.StatusCode != http.StatusFound {
			t.Errorf("%s: /auth?redirect=1: got %d; want 302 (body %q)", tc.name, r.StatusCode, r.body)
			continue
		}
		if got := r.Header.Get("Location"); got != tc.want {
			t.Errorf("%s: /auth?redirect=1 Location: got %q; want %q", tc.name, got, tc.want)
		}
		if sc := r.Header.Values("Set-Cookie"); len(sc) != 0 {
			t.Errorf("%s: /auth?redirect=1 without a cookie set cookies: %q", tc.name, sc)
		}
	}

	// A dead session's cookie is dropped with the redirect, as with the 401.
	for _, path := range []string{"/auth?redirect=1", "/auth"} {
		r := b.get(path, merge(proxied("https", "app.example.com", "/x"),
			map[string]string{"Cookie": "auth_session=" + auth.GenerateSessionToken()}))
		var dropped bool
		for _, c := range r.Cookies() {
			dropped = dropped || (c.Name == "auth_session" && c.Value == "" && c.MaxAge < 0)
		}
		if !dropped {
			t.Errorf("%s with an unknown session cookie: %d, Set-Cookie %q; want the cookie dropped",
				path, r.StatusCode, r.Header.Values("Set-Cookie"))
		}
	}
}

func TestForwardAuthAccessRules(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{
		GitHub: &githubSetup{},
		Claims: map[string]string{"role": "user.attributes.role"},
		Access: []rules.Rule{
			{Host: "app.example.com", PathPrefix: "/admin", Allow: `claims.role == "admin"`},
			{Host: "app.example.com", PathPrefix: "/ops", Allow: `request.method == "GET"`},
		},
	})
	user := h.browser()
	user.login("github", "")
	uid := user.me()
	if _, err := h.auth.UpdateUserAttributes(context.Background(), uid, map[string]any{"role": "user"}); err != nil {
		t.Fatal(err)
	}
	h.github.SetUser(providertest.GitHubUser{ID: 2, Login: "boss"})
	admin := h.browser()
	admin.login("github", "")
	if _, err := h.auth.UpdateUserAttributes(context.Background(), admin.me(), map[string]any{"role": "admin"}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		host, uri  string
		user, boss int
	}{
		{"app.example.com", "/admin", 403, 200},
		{"app.example.com", "/admin/", 403, 200},
		{"app.example.com", "/admin/users?x=1", 403, 200},
		{"app.example.com", "/%61dmin", 403, 200},
		{"app.example.com", "/x/../admin", 403, 200},
		{"app.example.com", "//admin", 403, 200},
		{"app.example.com", "/./admin/", 403, 200},
		{"APP.Example.COM:8443", "/admin", 403, 200},
		{"app.example.com", "/admin;jsessionid=1", 403, 200},
		{"app.example.com", "/%zz", 403, 200}, // undecodable: the host's first rule decides
		{"app.example.com", "/public", 200, 200},
		{"app.example.com", "/administrator", 200, 200},
		{"other.example.com", "/admin", 200, 200},
	} {
		for _, who := range []struct {
			name string
			b    *browser
			want int
		}{{"user", user, tc.user}, {"admin", admin, tc.boss}} {
			r := who.b.get("/auth", proxied("https", tc.host, tc.uri))
			if r.StatusCode != who.want {
				t.Errorf("/auth for %s at %s%s: got %d; want %d (body %q)", who.name, tc.host, tc.uri, r.StatusCode, who.want, r.body)
				continue
			}
			if who.want == http.StatusForbidden {
				wantError(t, r, http.StatusForbidden, "FORBIDDEN")
				if r.Header.Get("X-Auth-User-Id") != "" {
					t.Errorf("refused /auth sent X-Auth-User-Id")
				}
			} else if r.Header.Get("X-Auth-User-Id") == "" {
				t.Errorf("/auth for %s at %s%s: no X-Auth-User-Id", who.name, tc.host, tc.uri)
			}
		}
	}
	// request.method comes from X-Forwarded-Method.
	hdr := proxied("https", "app.example.com", "/ops")
	hdr["X-Forwarded-Method"] = "DELETE"
	wantError(t, user.get("/auth", hdr), http.StatusForbidden, "FORBIDDEN")
	hdr["X-Forwarded-Method"] = "GET"
	if r := user.get("/auth", hdr); r.StatusCode != http.StatusOK {
		t.Errorf("/auth GET /ops: got %d; want 200", r.StatusCode)
	}
}

func TestForwardAuthIdleSessionRefreshed(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, pg bool) {
		h := newHarness(t, setup{Postgres: pg, GitHub: &githubSetup{}})
		b := h.browser()
		b.login("github", "")
		token := b.session()
		before, err := h.auth.GetSession(context.Background(), token)
		if err != nil {
			t.Fatal(err)
		}
		h.clock.Advance(auth.DefaultActivePeriod + time.Hour) // idle now
		r := b.get("/auth", map[string]string{"Accept": ""})
		if r.StatusCode != http.StatusOK {
			t.Fatalf("/auth with an idle session: got %d; want 200 (body %q)", r.StatusCode, r.body)
		}
		c := r.cookie("auth_session")
		if c == nil || c.Value != token {
			t.Fatalf("/auth with an idle session: Set-Cookie %q; want the same token renewed", r.Header.Values("Set-Cookie"))
		}
		after, err := h.auth.GetSession(context.Background(), token)
		if err != nil {
			t.Fatal(err)
		}
		if !after.ActiveExpires.After(before.ActiveExpires) || after.State != auth.StateActive {
			t.Errorf("session not reset: active_expires %v → %v, state %s", before.ActiveExpires, after.ActiveExpires, after.State)
		}
		if !c.Expires.Truncate(time.Second).Equal(after.IdleExpires.Truncate(time.Second)) {
			t.Errorf("renewed cookie expires %v; want the new idle_expires %v", c.Expires, after.IdleExpires)
		}
		// Now active again: no cookie.
		if r := b.get("/auth", map[string]string{"Accept": ""}); r.cookie("auth_session") != nil {
			t.Errorf("/auth with an active session sent a cookie")
		}

		// /session reports the reset too.
		h.clock.Advance(auth.DefaultActivePeriod + time.Hour)
		s := b.getJSON("/session")
		if s.StatusCode != http.StatusOK || s.cookie("auth_session") == nil {
			t.Fatalf("/session with an idle session: got %d, cookies %q", s.StatusCode, s.Header.Values("Set-Cookie"))
		}
		if sess := s.json(t)["session"].(map[string]any); sess["fresh"] != true || sess["state"] != "active" {
			t.Errorf("/session after reset: got %v; want fresh, active", sess)
		}

		// A bearer client's idle session is reset without a cookie.
		h.clock.Advance(auth.DefaultActivePeriod + time.Hour)
		br := h.browser().get("/auth", map[string]string{"Accept": "", "Authorization": "Bearer " + token})
		if br.StatusCode != http.StatusOK || br.cookie("auth_session") != nil {
			t.Errorf("/auth with an idle bearer token: got %d, cookies %q; want 200 without a cookie", br.StatusCode, br.Header.Values("Set-Cookie"))
		}
		if s, err := h.auth.GetSession(context.Background(), token); err != nil || s.State != auth.StateActive {
			t.Errorf("bearer /auth did not reset the idle session: %v %v", s.State, err)
		}

		// Dead: past the idle period.
		h.clock.Advance(auth.DefaultActivePeriod + auth.DefaultIdlePeriod + time.Hour)
		r = b.get("/auth", map[string]string{"Accept": ""})
		wantError(t, r, http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
	})
}

func TestForwardAuthDatabaseDown(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, pg bool) {
		h := newHarness(t, setup{Postgres: pg, GitHub: &githubSetup{}})
		b := h.browser()
		b.login("github", "")
		if r := b.get("/readyz", jsonAccept); r.StatusCode != http.StatusOK {
			t.Errorf("/readyz: got %d; want 200", r.StatusCode)
		}
		h.store.Close()
		r := b.get("/auth", map[string]string{"Accept": ""})
		wantError(t, r, http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE")
		if c := r.cookie("auth_session"); c != nil {
			t.Errorf("/auth with the database down touched the cookie: %v", c)
		}
		wantError(t, b.getJSON("/session"), http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE")
		wantError(t, b.get("/readyz", nil), http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE")
		if r := b.get("/healthz", nil); r.StatusCode != http.StatusOK {
			t.Errorf("/healthz with the database down: got %d; want 200", r.StatusCode)
		}
		// Starting a login needs no database; finishing one does.
		cb := b.startLogin("/login/github")
		wantError(t, b.get(cb.String(), jsonAccept), http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE")
	})
}

// benchServer is a broker over a with one claim, role: user.attributes.role.
func benchServer(b *testing.B, a *auth.Auth, store *sqlstore.Store, m *server.Metrics) *server.Server {
	b.Helper()
	claims, err := rules.CompileClaims(map[string]string{"role": "user.attributes.role"})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.New(server.Options{
		Auth: a, Store: store, PublicURL: "http://127.0.0.1:8080", Metrics: m,
		Claims: func(ctx context.Context, s *auth.Session) map[string]any {
			out, _ := claims.Eval(ctx, s.User, nil, s)
			return out
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	return srv
}

// BenchmarkForwardAuth measures /auth with a valid session cookie through
// the whole handler (middleware included), on both databases.
func BenchmarkForwardAuth(b *testing.B) {
	for _, db := range []string{"sqlite", "postgres"} {
		b.Run(db, func(b *testing.B) {
			var store *sqlstore.Store
			if db == "postgres" {
				store = storagetest.OpenPostgres(b)
			} else {
				store = storagetest.OpenSQLite(b)
			}
			a, err := auth.New(store, auth.Options{Origin: "http://127.0.0.1:8080"})
			if err != nil {
				b.Fatal(err)
			}
			srv := benchServer(b, a, store, nil)
			ctx := context.Background()
			u, err := a.CreateUser(ctx, auth.CreateUserOptions{Attributes: map[string]any{
				"email": "bench@example.com", "email_verified": true, "role": "admin",
			}})
			if err != nil {
				b.Fatal(err)
			}
			sess, err := a.CreateSession(ctx, u.ID, auth.SessionOptions{})
			if err != nil {
				b.Fatal(err)
			}
			h := srv.Handler()
			cookie := a.CreateSessionCookie(&sess).Name + "=" + sess.Token
			req := func() *http.Request {
				r, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:8080/auth", nil)
				r.RemoteAddr = "127.0.0.1:40000"
				r.Header.Set("Cookie", cookie)
				r.Header.Set("X-Forwarded-Host", "app.example.com")
				r.Header.Set("X-Forwarded-Uri", "/dashboard")
				return r
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req())
			if rec.Code != http.StatusOK || rec.Header().Get("X-Auth-Claim-Role") != "admin" {
				b.Fatalf("/auth: got %d %v", rec.Code, rec.Header())
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req())
				if rec.Code != http.StatusOK {
					b.Fatalf("/auth: got %d", rec.Code)
				}
			}
		})
	}
}

// headerWriter is the least a ResponseWriter does: a header map per
// answer (as net/http allocates one per request) and the status.
type headerWriter struct {
	h      http.Header
	status int
}

func (w *headerWriter) Header() http.Header         { return w.h }
func (w *headerWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *headerWriter) WriteHeader(code int)        { w.status = code }

// BenchmarkForwardAuthCached measures what the broker adds to an HTTP
// request for /auth of a session in the session cache (with one claim),
// against a handler that only answers 200: the difference is the broker's
// cost on every request of every app behind it. The sessions sub-benchmarks
// spread the requests over that many cached sessions (a working set that
// does not fit the CPU caches). The wrk harness (bench/authbench) measures
// the same through real connections.
func BenchmarkForwardAuthCached(b *testing.B) {
	store := storagetest.OpenSQLite(b)
	a, err := auth.New(store, auth.Options{Origin: "http://127.0.0.1:8080", CacheSize: 32768, CacheTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	srv := benchServer(b, a, store, server.NewMetrics())
	ctx := context.Background()
	const most = 10000
	cookies := make([]string, most)
	for i := range cookies {
		u, err := a.CreateUser(ctx, auth.CreateUserOptions{Attributes: map[string]any{
			"email": fmt.Sprintf("bench%d@example.com", i), "email_verified": true, "role": "admin",
		}})
		if err != nil {
			b.Fatal(err)
		}
		sess, err := a.CreateSession(ctx, u.ID, auth.SessionOptions{})
		if err != nil {
			b.Fatal(err)
		}
		cookies[i] = a.CreateSessionCookie(&sess).Name + "=" + sess.Token
	}
	// One request, its cookie swapped per iteration: a server parses each
	// request afresh, so only the session's own data is cold memory.
	r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8080/auth", nil)
	r.RemoteAddr = "127.0.0.1:40000"
	r.Header.Set("Cookie", cookies[0])
	r.Header.Set("X-Forwarded-Host", "app.example.com")
	r.Header.Set("X-Forwarded-Uri", "/dashboard")
	cookie := r.Header["Cookie"]
	h := srv.Handler()
	for _, c := range cookies { // fill the cache and build the views
		cookie[0] = c
		for range 2 {
			w := &headerWriter{h: http.Header{}}
			h.ServeHTTP(w, r)
			if w.status != http.StatusOK || w.h.Get("X-Auth-Claim-Role") != "admin" {
				b.Fatalf("/auth: got %d %v", w.status, w.h)
			}
		}
	}
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	for _, bc := range []struct {
		name     string
		h        http.Handler
		sessions int
	}{
		{"bare", bare, 1},
		{"sessions=1", h, 1},
		{"sessions=1000", h, 1000},
		{"sessions=10000", h, most},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i = (i + 7919) % bc.sessions // a stride that visits them all
				cookie[0] = cookies[i]
				w := &headerWriter{h: make(http.Header)}
				bc.h.ServeHTTP(w, r)
				if w.status != http.StatusOK {
					b.Fatalf("/auth: got %d", w.status)
				}
			}
		})
	}
}
