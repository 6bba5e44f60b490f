package server_test

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/rules"
	"github.com/brokerauth/broker/internal/server"
	"github.com/brokerauth/broker/storage/sqlstore"
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

// TestForwardAuthClaimsOverKeys: claims that read the user's keys are kept
// with the cached session, and computed afresh on the very next request
// after a key is added or removed, through Auth or through the password
// route (which writes the key to the store itself). Claims that could not
// read the keys (ClaimsTransient) answer their own request only, for /auth
// and /session alike.
func TestForwardAuthClaimsOverKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var st atomic.Pointer[sqlstore.Store]
	var evals atomic.Int64
	var keysDown atomic.Bool
	h := newHarness(t, setup{
		GitHub:    &githubSetup{},
		CacheSize: 100,
		Passwords: true,
		ClaimsFunc: func(ctx context.Context, s *auth.Session) map[string]any {
			evals.Add(1)
			if keysDown.Load() {
				server.ClaimsTransient(ctx)
				return map[string]any{"providers": "unknown"}
			}
			ks, err := st.Load().ListUserKeys(ctx, s.UserID)
			if err != nil {
				t.Errorf("ListUserKeys: %v", err)
			}
			var ps []string
			for _, k := range ks {
				ps = append(ps, k.Provider)
			}
			slices.Sort(ps)
			return map[string]any{"providers": strings.Join(ps, " ")}
		},
	})
	st.Store(h.store)
	b := h.browser()
	b.login("github", "")
	uid := b.me()
	// Twice: after an eviction the first answer comes from the database
	// with claims of its own, the second from the cache's shared view,
	// whose claims are then kept.
	claimAt := func(step, want string) {
		t.Helper()
		for range 2 {
			r := b.get("/auth", map[string]string{"Accept": ""})
			if got := r.Header.Get("X-Auth-Claim-Providers"); r.StatusCode != http.StatusOK || got != want {
				t.Fatalf("%s: /auth %d, providers %q; want %q", step, r.StatusCode, got, want)
			}
		}
	}
	sessionClaimAt := func(step, want string) {
		t.Helper()
		r := b.getJSON("/session")
		var body struct {
			Claims map[string]any `json:"claims"`
		}
		if r.StatusCode != http.StatusOK || json.Unmarshal(r.body, &body) != nil || body.Claims["providers"] != want {
			t.Fatalf("%s: /session %d %s; want providers %q", step, r.StatusCode, r.body, want)
		}
	}
	claimAt("after login", "github")
	sessionClaimAt("after login", "github")
	n := evals.Load()
	for range 5 {
		claimAt("cached", "github")
		sessionClaimAt("cached", "github")
	}
	if got := evals.Load() - n; got != 0 {
		t.Fatalf("claims computed %d times for cached answers; want them kept", got)
	}

	if _, err := h.auth.CreateKey(ctx, uid, "gitlab", "gl-1", nil); err != nil {
		t.Fatal(err)
	}
	claimAt("after CreateKey", "github gitlab")
	// The user's first password makes the key email:<address>.
	if r := b.mlJSON("/account/password", mlBody{"new_password": "a password for the keys test"}, nil); r.StatusCode != http.StatusNoContent {
		t.Fatalf("set password: %d %s", r.StatusCode, r.body)
	}
	claimAt("after setting a password", "email github gitlab")
	sessionClaimAt("after setting a password", "email github gitlab")
	if err := h.auth.DeleteKey(ctx, "gitlab", "gl-1"); err != nil {
		t.Fatal(err)
	}
	claimAt("after DeleteKey", "email github")

	// Keys that cannot be read: every request computes its claims.
	keysDown.Store(true)
	if err := h.auth.KeysChanged(ctx, uid); err != nil {
		t.Fatal(err)
	}
	n = evals.Load()
	for range 3 {
		claimAt("keys unreadable", "unknown")
		sessionClaimAt("keys unreadable", "unknown")
	}
	if got := evals.Load() - n; got < 9 {
		t.Fatalf("claims computed %d times for 9 answers while the keys could not be read; want each answer to compute them", got)
	}
	keysDown.Store(false)
	claimAt("keys readable again", "email github")
	sessionClaimAt("keys readable again", "email github")
	n = evals.Load()
	claimAt("kept again", "email github")
	sessionClaimAt("kept again", "email github")
	if got := evals.Load() - n; got != 0 {
		t.Fatalf("claims computed %d times once readable; want them kept", got)
	}
}

// TestForwardAuthAccessOverKeys: access rules that read the user's keys
// get them once per cached session snapshot, follow an added or removed
// key on the very next request, and answer 503 (not 403, not 200) while
// the keys cannot be read, recovering when they can.
func TestForwardAuthAccessOverKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var down atomic.Bool
	h := newHarness(t, setup{
		GitHub:     &githubSetup{},
		CacheSize:  100,
		AccessKeys: true,
		KeysDown:   &down,
		Access:     []rules.Rule{{PathPrefix: "/ci", Allow: `keys.exists(k, k.provider_id == "gitlab")`}},
	})
	b := h.browser()
	b.login("github", "")
	uid := b.me()
	// Twice each: after an eviction the first answer comes from the
	// database, the second from the cache's shared view.
	statusAt := func(step string, want int) {
		t.Helper()
		for range 2 {
			if r := b.get("/auth", proxied("https", "app.example.com", "/ci/run")); r.StatusCode != want {
				t.Fatalf("%s: /auth for /ci: %d %s; want %d", step, r.StatusCode, r.body, want)
			}
		}
	}
	statusAt("without a gitlab key", http.StatusForbidden)
	if _, err := h.auth.CreateKey(ctx, uid, "gitlab", "gl-7", nil); err != nil {
		t.Fatal(err)
	}
	statusAt("with a gitlab key", http.StatusOK)
	if err := h.auth.DeleteKey(ctx, "gitlab", "gl-7"); err != nil {
		t.Fatal(err)
	}
	statusAt("after the key is deleted", http.StatusForbidden)
	if _, err := h.auth.CreateKey(ctx, uid, "gitlab", "gl-7", nil); err != nil {
		t.Fatal(err)
	}
	statusAt("with the key again", http.StatusOK)

	// Read once per snapshot: the cached answer does not read them again.
	down.Store(true)
	statusAt("keys unreadable, the snapshot's kept", http.StatusOK)
	// A new snapshot whose keys cannot be read: the rules cannot be decided.
	if err := h.auth.KeysChanged(ctx, uid); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		r := b.get("/auth", proxied("https", "app.example.com", "/ci/run"))
		wantError(t, r, http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE")
		if r.Header.Get("X-Auth-User-Id") != "" {
			t.Fatalf("503 from /auth sent identity headers: %v", r.Header)
		}
	}
	// Not kept: readable again, the next request is decided.
	down.Store(false)
	statusAt("keys readable again", http.StatusOK)
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
			server.ClaimsTransient(ctx) // computed again for every answer
			return nil
		},
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
