package server_test

import (
	"context"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/rules"
)

// answerHeaders are the headers of a /auth answer that describe the user,
// without those that differ per answer (Date, X-Request-Id).
func answerHeaders(r *response) http.Header {
	h := r.Header.Clone()
	h.Del("Date")
	h.Del("X-Request-Id")
	h.Del("Content-Length") // not sent for HEAD
	return h
}

// metricValue returns the value of one series of /metrics ("" when absent).
func metricValue(t *testing.T, b *browser, series string) string {
	t.Helper()
	r := b.get("/metrics", map[string]string{"Accept": "text/plain"})
	for line := range strings.SplitSeq(r.Body(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// countingClaims compiles exprs into a server.Options.Claims that counts
// its evaluations in evals.
func countingClaims(t *testing.T, exprs map[string]string, evals *atomic.Int64) func(context.Context, *auth.Session) map[string]any {
	t.Helper()
	claims, err := rules.CompileClaims(exprs)
	if err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context, s *auth.Session) map[string]any {
		evals.Add(1)
		out, _ := claims.Eval(ctx, s.User, nil, s)
		return out
	}
}

// TestForwardAuthCached: with the session cache on, /auth answers a cached
// session exactly as it answers one read from the database, applies the
// access rules to every request, computes claims once per cached snapshot,
// and sees every change to the user or the session at once.
func TestForwardAuthCached(t *testing.T) {
	t.Parallel()
	var evals atomic.Int64
	h := newHarness(t, setup{
		GitHub:     &githubSetup{},
		CacheSize:  100,
		ClaimsFunc: countingClaims(t, map[string]string{"role": "user.attributes.role", "plan": `"pro"`}, &evals),
		Access:     []rules.Rule{{Host: "app.example.com", PathPrefix: "/admin", Allow: `claims.role == "admin"`}},
	})
	b := h.browser()
	b.login("github", "")
	uid := b.me()
	ctx := context.Background()
	if _, err := h.auth.UpdateUserAttributes(ctx, uid, map[string]any{"role": "admin"}); err != nil {
		t.Fatal(err)
	}
	at := func(uri string) *response { return b.get("/auth", proxied("https", "app.example.com", uri)) }

	first := at("/admin") // a miss: read from the database, then cached
	if first.StatusCode != http.StatusOK || first.Header.Get("X-Auth-User-Id") != uid ||
		first.Header.Get("X-Auth-Claim-Role") != "admin" || first.Header.Get("X-Auth-Claim-Plan") != "pro" ||
		first.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("first /auth: %d %v", first.StatusCode, first.Header)
	}
	evals.Store(0)
	for range 20 {
		r := at("/admin")
		if r.StatusCode != http.StatusOK {
			t.Fatalf("cached /auth: got %d (body %q)", r.StatusCode, r.body)
		}
		if got, want := answerHeaders(r), answerHeaders(first); !equalHeaders(got, want) {
			t.Fatalf("cached /auth headers:\n got %v\nwant %v", got, want)
		}
		// A 200 of a bodiless GET carries no request id (serveForwardAuth).
		if id, ok := r.Header["X-Request-Id"]; ok {
			t.Fatalf("cached /auth 200 sent X-Request-Id %q", id)
		}
	}
	// Once: the first hit builds the shared view of the snapshot (the miss
	// before it had a view of its own).
	if n := evals.Load(); n != 1 {
		t.Errorf("claims computed %d times for 20 cached answers of one snapshot; want 1", n)
	}

	// HEAD (the middleware's route) answers the same.
	if r := b.do(http.MethodHead, "/auth", nil, proxied("https", "app.example.com", "/admin")); r.StatusCode != http.StatusOK ||
		!equalHeaders(answerHeaders(r), answerHeaders(first)) {
		t.Errorf("HEAD /auth: %d %v", r.StatusCode, r.Header)
	}

	// A user change: new claims at once, and the access rule follows them
	// on the very next request.
	if _, err := h.auth.UpdateUserAttributes(ctx, uid, map[string]any{"role": "user"}); err != nil {
		t.Fatal(err)
	}
	r := at("/admin")
	wantError(t, r, http.StatusForbidden, "FORBIDDEN")
	if r.Header.Get("X-Auth-User-Id") != "" || r.Header.Get("X-Auth-Claim-Role") != "" {
		t.Errorf("refused /auth sent identity headers: %v", r.Header)
	}
	// Every answer but a 200 carries a new request id, to quote in a report.
	idShape := regexp.MustCompile(`^[0-9a-f]{16}$`)
	ids := map[string]bool{}
	for range 3 { // refused from the cache too, while other paths pass
		r := at("/admin")
		wantError(t, r, http.StatusForbidden, "FORBIDDEN")
		if id := r.Header.Get("X-Request-Id"); !idShape.MatchString(id) || ids[id] {
			t.Fatalf("403 from /auth: X-Request-Id %q; want 16 new hex digits", id)
		} else {
			ids[id] = true
		}
		if r := at("/public"); r.StatusCode != http.StatusOK || r.Header.Get("X-Auth-Claim-Role") != "user" {
			t.Fatalf("/auth for /public after the change: %d %v", r.StatusCode, r.Header)
		}
	}

	// Metrics count cached answers as the middleware counts the others
	// (HEAD included: its route is GET /auth).
	if got := metricValue(t, b, `broker_http_requests_total{route="GET /auth",status="403"}`); got != "4" {
		t.Errorf("403 answers of /auth in /metrics: %q; want 4", got)
	}
	if got := metricValue(t, b, `broker_http_requests_total{route="GET /auth",status="200"}`); got != "25" {
		t.Errorf("200 answers of /auth in /metrics: %q; want 25", got)
	}

	// Ending the session ends it at once, cache or not.
	if err := h.auth.InvalidateSession(ctx, b.session()); err != nil {
		t.Fatal(err)
	}
	wantError(t, at("/public"), http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
}

// TestForwardAuthClaimsPerRequest: with ClaimsPerRequest (claims that read
// keys), claims are computed for every answer, cached session or not.
func TestForwardAuthClaimsPerRequest(t *testing.T) {
	t.Parallel()
	var evals atomic.Int64
	h := newHarness(t, setup{
		GitHub:           &githubSetup{},
		CacheSize:        100,
		ClaimsPerRequest: true,
		ClaimsFunc: func(ctx context.Context, s *auth.Session) map[string]any {
			return map[string]any{"n": evals.Add(1)}
		},
	})
	b := h.browser()
	b.login("github", "")
	evals.Store(0)
	for i := 1; i <= 5; i++ {
		r := b.get("/auth", map[string]string{"Accept": ""})
		if r.StatusCode != http.StatusOK || r.Header.Get("X-Auth-Claim-N") != strconv.Itoa(i) {
			t.Fatalf("/auth %d: %d, claim n = %q; want %d", i, r.StatusCode, r.Header.Get("X-Auth-Claim-N"), i)
		}
	}
}

// TestForwardAuthCachedPanic: a claim that panics on the cached path is a
// 503 without the detail, and the broker goes on.
func TestForwardAuthCachedPanic(t *testing.T) {
	t.Parallel()
	var boom atomic.Bool
	h := newHarness(t, setup{
		GitHub:    &githubSetup{},
		CacheSize: 100,
		ClaimsFunc: func(ctx context.Context, s *auth.Session) map[string]any {
			if boom.Load() {
				panic("secret internal detail")
			}
			return nil
		},
		ClaimsPerRequest: true,
	})
	b := h.browser()
	b.login("github", "")
	if r := b.get("/auth", map[string]string{"Accept": ""}); r.StatusCode != http.StatusOK {
		t.Fatalf("/auth: %d", r.StatusCode)
	}
	boom.Store(true)
	r := b.get("/auth", map[string]string{"Accept": ""})
	wantError(t, r, http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE")
	if strings.Contains(string(r.body), "secret") || r.Header.Get("X-Auth-User-Id") != "" {
		t.Errorf("panic leaked: %q %v", r.body, r.Header)
	}
	boom.Store(false)
	if r := b.get("/auth", map[string]string{"Accept": ""}); r.StatusCode != http.StatusOK {
		t.Fatalf("/auth after a panic: %d", r.StatusCode)
	}
}

func equalHeaders(a, b http.Header) bool { return maps.EqualFunc(a, b, slices.Equal) }

// TestSessionCached: /session answers a cached session with the same body
// as an uncached one, computed once per snapshot, and shows a change to
// the user at once.
func TestSessionCached(t *testing.T) {
	t.Parallel()
	var evals atomic.Int64
	claimsFunc := countingClaims(t, map[string]string{"role": "user.attributes.role"}, &evals)
	cached := newHarness(t, setup{GitHub: &githubSetup{}, CacheSize: 100, ClaimsFunc: claimsFunc})
	b := cached.browser()
	b.login("github", "")
	uid := b.me()
	ctx := context.Background()
	if _, err := cached.auth.UpdateUserAttributes(ctx, uid, map[string]any{"role": "admin"}); err != nil {
		t.Fatal(err)
	}
	first := b.getJSON("/session") // a miss
	if first.StatusCode != http.StatusOK || !strings.Contains(first.Body(), `"role":"admin"`) {
		t.Fatalf("/session: %d %s", first.StatusCode, first.body)
	}
	b.getJSON("/session") // the first hit builds the view
	evals.Store(0)
	for range 10 {
		r := b.getJSON("/session")
		if r.StatusCode != http.StatusOK || r.Body() != first.Body() ||
			r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("cached /session: %d %v\n got %s\nwant %s", r.StatusCode, r.Header, r.body, first.body)
		}
		if r := b.get("/auth", map[string]string{"Accept": ""}); r.StatusCode != http.StatusOK || r.Header.Get("X-Auth-Claim-Role") != "admin" {
			t.Fatalf("/auth between cached /session: %d %v", r.StatusCode, r.Header)
		}
	}
	if n := evals.Load(); n != 0 {
		t.Errorf("claims computed %d times for 10 cached /session and /auth answers; want 0", n)
	}
	if _, err := cached.auth.UpdateUserAttributes(ctx, uid, map[string]any{"role": "viewer"}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if r := b.getJSON("/session"); !strings.Contains(r.Body(), `"role":"viewer"`) {
			t.Fatalf("/session after the change: %s", r.body)
		}
	}
	// A session that time made idle is reset, with a new cookie, cache or not.
	cached.clock.Advance(auth.DefaultActivePeriod + time.Minute)
	r := b.getJSON("/session")
	if c := r.cookie("auth_session"); r.StatusCode != http.StatusOK || c == nil || c.Value == "" ||
		!strings.Contains(r.Body(), `"fresh":true`) {
		t.Fatalf("/session of an idle cached session: %d, cookie %v, %s", r.StatusCode, c, r.body)
	}
	if r := b.getJSON("/session"); r.StatusCode != http.StatusOK || r.cookie("auth_session") != nil {
		t.Fatalf("/session after the reset: %d %v", r.StatusCode, r.Header.Values("Set-Cookie"))
	}

	// The same body as a broker without the cache gives.
	plain := newHarness(t, setup{GitHub: &githubSetup{}, ClaimsFunc: claimsFunc})
	pb := plain.browser()
	pb.login("github", "")
	if _, err := plain.auth.UpdateUserAttributes(ctx, pb.me(), map[string]any{"role": "viewer"}); err != nil {
		t.Fatal(err)
	}
	norm := regexp.MustCompile(`"(id|active_expires|idle_expires)":"[^"]*"`)
	got, want := norm.ReplaceAllString(b.getJSON("/session").Body(), ""), norm.ReplaceAllString(pb.getJSON("/session").Body(), "")
	if got != want {
		t.Errorf("cached /session body differs from the uncached one:\n got %s\nwant %s", got, want)
	}
}
