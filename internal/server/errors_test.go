package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/brokerauth/broker/auth"
)

func TestCORS(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{GitHub: &githubSetup{}})
	b := h.browser()
	b.login("github", "")

	preflight := func(origin, path, method string) *response {
		return b.do(http.MethodOptions, path, nil, map[string]string{
			"Origin": origin, "Sec-Fetch-Site": "cross-site", "Access-Control-Request-Method": method,
			"Access-Control-Request-Headers": "content-type",
		})
	}
	for _, p := range []struct{ path, method string }{
		{"/session", "GET"}, {"/logout", "POST"}, {"/sessions", "GET"}, {"/sessions/revoke-all", "POST"},
		{"/sessions/" + strings.Repeat("a", 64), "DELETE"},
	} {
		r := preflight(appOrigin, p.path, p.method)
		if r.StatusCode != http.StatusNoContent {
			t.Errorf("preflight %s from %s: got %d; want 204 (body %q)", p.path, appOrigin, r.StatusCode, r.body)
		}
		if got := r.Header.Get("Access-Control-Allow-Origin"); got != appOrigin {
			t.Errorf("preflight %s: Access-Control-Allow-Origin %q; want %q", p.path, got, appOrigin)
		}
		if got := r.Header.Get("Access-Control-Allow-Credentials"); got != "true" {
			t.Errorf("preflight %s: Access-Control-Allow-Credentials %q; want true", p.path, got)
		}
		if got := r.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(got, p.method) {
			t.Errorf("preflight %s: Access-Control-Allow-Methods %q lacks %s", p.path, got, p.method)
		}
		if got := strings.ToLower(r.Header.Get("Access-Control-Allow-Headers")); !strings.Contains(got, "content-type") {
			t.Errorf("preflight %s: Access-Control-Allow-Headers %q lacks Content-Type", p.path, got)
		}
		if !strings.Contains(strings.Join(r.Header.Values("Vary"), ","), "Origin") {
			t.Errorf("preflight %s: no Vary: Origin", p.path)
		}
	}
	for _, origin := range []string{"https://evil.example", "https://app.example.com.evil.example", "http://app.example.com", "null"} {
		r := preflight(origin, "/session", "GET")
		if r.StatusCode != http.StatusForbidden {
			t.Errorf("preflight from %s: got %d; want 403", origin, r.StatusCode)
		}
		if got := r.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("preflight from %s: Access-Control-Allow-Origin %q; want none", origin, got)
		}
	}

	// Actual requests.
	r := b.get("/session", map[string]string{"Origin": appOrigin, "Sec-Fetch-Site": "cross-site", "Accept": "application/json"})
	if r.StatusCode != http.StatusOK {
		t.Fatalf("GET /session from %s: got %d", appOrigin, r.StatusCode)
	}
	if got := r.Header.Get("Access-Control-Allow-Origin"); got != appOrigin {
		t.Errorf("GET /session from %s: Access-Control-Allow-Origin %q", appOrigin, got)
	}
	if got := r.Header.Get("Access-Control-Allow-Credentials"); got != "true" {
		t.Errorf("GET /session from %s: Access-Control-Allow-Credentials %q", appOrigin, got)
	}
	r = b.get("/session", map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site", "Accept": "application/json"})
	if got := r.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("GET /session from evil: Access-Control-Allow-Origin %q; want none", got)
	}
	// Routes outside the CORS list never answer CORS.
	r = b.get("/auth", map[string]string{"Origin": appOrigin, "Accept": ""})
	if got := r.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("GET /auth from %s: Access-Control-Allow-Origin %q; want none", appOrigin, got)
	}
	r = preflight(appOrigin, "/link/github", "POST")
	if got := r.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("preflight /link/github: Access-Control-Allow-Origin %q; want none", got)
	}
	// Never "*", whatever is asked.
	for _, origin := range []string{"*", appOrigin} {
		r := preflight(origin, "/session", "GET")
		if r.Header.Get("Access-Control-Allow-Origin") == "*" {
			t.Errorf("preflight from %q answered *", origin)
		}
	}
}

func TestErrorAnswers(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{GitHub: &githubSetup{}, MaxBodyBytes: 1024})
	b := h.browser()

	wantError(t, b.get("/no/such/route", map[string]string{"Accept": ""}), http.StatusNotFound, "NOT_FOUND")
	wantError(t, b.getJSON("/no/such/route"), http.StatusNotFound, "NOT_FOUND")
	wantErrorPage(t, b.get("/no/such/route", nil), http.StatusNotFound, "NOT_FOUND")

	r := b.postJSON("/session", nil)
	wantError(t, r, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")
	if allow := r.Header.Get("Allow"); !strings.Contains(allow, "GET") {
		t.Errorf("405 for POST /session: Allow %q; want GET", allow)
	}
	wantError(t, b.getJSON("/logout"), http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")
	wantError(t, b.do(http.MethodPut, "/sessions/revoke-all", nil, jsonAccept), http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")

	wantError(t, b.getJSON("/login/nope"), http.StatusNotFound, "NOT_FOUND")
	wantErrorPage(t, b.get("/login/nope", nil), http.StatusNotFound, "NOT_FOUND")
	wantError(t, b.getJSON("/login/nope/callback?state=x&code=y"), http.StatusNotFound, "NOT_FOUND")
	wantError(t, b.getJSON("/assets/nope.css"), http.StatusNotFound, "NOT_FOUND")
	if r := b.get("/assets/broker.css", nil); r.StatusCode != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/css") {
		t.Errorf("GET /assets/broker.css: got %d %q", r.StatusCode, r.Header.Get("Content-Type"))
	}

	big := strings.NewReader(strings.Repeat("x", 4096))
	wantError(t, b.do(http.MethodPost, "/logout", big, map[string]string{"Accept": "application/json", "Content-Type": "application/json"}),
		http.StatusRequestEntityTooLarge, "REQUEST_TOO_LARGE")

	if r := b.get("/healthz", nil); r.StatusCode != http.StatusOK {
		t.Errorf("/healthz: got %d", r.StatusCode)
	}
	if r := b.get("/readyz", nil); r.StatusCode != http.StatusOK {
		t.Errorf("/readyz: got %d", r.StatusCode)
	}
	if r := b.get("/healthz", nil); r.Header.Get("X-Request-Id") == "" {
		t.Errorf("no X-Request-Id")
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{GitHub: &githubSetup{}})
	b := h.browser()
	b.login("github", "")
	b.get("/auth", map[string]string{"Accept": ""})

	r := b.get("/metrics", map[string]string{"Accept": "text/plain"})
	if r.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics from loopback: got %d", r.StatusCode)
	}
	for _, want := range []string{
		"broker_http_requests_total{",
		`broker_logins_total{outcome="created",provider="github"} 1`,
		`broker_session_validations_total{result="valid"} 1`,
		`route="GET /login/{provider}/callback"`,
		"broker_http_request_duration_seconds_bucket{",
	} {
		if !strings.Contains(r.Body(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// Only loopback peers get /metrics on the main listener.
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.RemoteAddr = "192.0.2.7:5555"
	rec := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound || strings.Contains(rec.Body.String(), "broker_") {
		t.Errorf("GET /metrics from 192.0.2.7: got %d; want 404 without metrics", rec.Code)
	}
}

func TestReadyzDatabaseDown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{})
	b := h.browser()
	if r := b.get("/readyz", nil); r.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: got %d; want 200", r.StatusCode)
	}
	h.store.Close()
	wantError(t, b.get("/readyz", nil), http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE")
	if r := b.get("/healthz", nil); r.StatusCode != http.StatusOK {
		t.Errorf("/healthz: got %d; want 200", r.StatusCode)
	}
}

// TestPanicDoesNotLeak: a panic in a handler is a 503 without a stack
// trace, and the server keeps serving.
func TestPanicDoesNotLeak(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{GitHub: &githubSetup{}, ClaimsFunc: func(context.Context, *auth.Session) map[string]any {
		panic("secret internal detail")
	}})
	b := h.browser()
	b.login("github", "")
	for _, r := range []*response{b.getJSON("/session"), b.get("/auth", map[string]string{"Accept": ""})} {
		wantError(t, r, http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE")
		if strings.Contains(r.Body(), "secret") || strings.Contains(r.Body(), "goroutine") || strings.Contains(r.Body(), ".go:") {
			t.Errorf("%s: panic leaked: %q", r.Request.URL.Path, r.body)
		}
	}
	p := b.get("/session", nil)
	if p.StatusCode != http.StatusServiceUnavailable || strings.Contains(p.Body(), "secret") {
		t.Errorf("GET /session (page): got %d %q", p.StatusCode, p.body)
	}
	if r := b.get("/healthz", nil); r.StatusCode != http.StatusOK {
		t.Errorf("/healthz after a panic: got %d", r.StatusCode)
	}
}
