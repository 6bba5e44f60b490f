package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/providertest"
)

var formPost = map[string]string{"Accept": "text/html", "Content-Type": "application/x-www-form-urlencoded"}

func TestLogout(t *testing.T) {
	t.Parallel()
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, setup{GitHub: &githubSetup{}})
		b := h.browser()
		b.login("github", "")
		token := b.session()
		r := b.postJSON("/logout", nil)
		if r.StatusCode != http.StatusNoContent {
			t.Fatalf("POST /logout: got %d; want 204 (body %q)", r.StatusCode, r.body)
		}
		if c := r.cookie("auth_session"); c == nil || c.Value != "" || c.MaxAge >= 0 {
			t.Errorf("POST /logout: session cookie not expired: %q", r.Header.Values("Set-Cookie"))
		}
		if h.sessionValid(token) {
			t.Errorf("session still valid after logout")
		}
		// The old token is refused, by cookie and by bearer.
		plain := h.browser()
		wantError(t, plain.get("/session", map[string]string{"Authorization": "Bearer " + token, "Accept": "application/json"}),
			http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
		wantError(t, b.getJSON("/session"), http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
	})
	t.Run("bearer", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, setup{GitHub: &githubSetup{}})
		b := h.browser()
		b.login("github", "")
		token := b.session()
		r := h.browser().postJSON("/logout", map[string]string{"Authorization": "Bearer " + token, "Origin": "", "Sec-Fetch-Site": ""})
		if r.StatusCode != http.StatusNoContent {
			t.Fatalf("POST /logout with bearer: got %d (body %q)", r.StatusCode, r.body)
		}
		if h.sessionValid(token) {
			t.Errorf("session still valid after bearer logout")
		}
	})
	t.Run("form", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, setup{GitHub: &githubSetup{}, RedirectDefault: "/bye"})
		b := h.browser()
		b.login("github", "")
		token := b.session()
		r := b.do(http.MethodPost, "/logout", strings.NewReader(""), formPost)
		if r.StatusCode != http.StatusSeeOther || r.location(t).String() != h.url+"/bye" {
			t.Fatalf("form POST /logout: got %d to %q; want 303 to /bye", r.StatusCode, r.Header.Get("Location"))
		}
		if c := r.cookie("auth_session"); c == nil || c.Value != "" || c.MaxAge >= 0 {
			t.Errorf("form POST /logout: session cookie not expired")
		}
		if h.sessionValid(token) {
			t.Errorf("session still valid after logout")
		}
	})
	t.Run("cross-site", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, setup{GitHub: &githubSetup{}})
		b := h.browser()
		b.login("github", "")
		token := b.session()
		for _, hdr := range []map[string]string{
			{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
			{"Origin": "", "Sec-Fetch-Site": "cross-site"},
			{"Origin": "null", "Sec-Fetch-Site": "cross-site"},
		} {
			wantError(t, b.postJSON("/logout", hdr), http.StatusForbidden, "AUTH_INVALID_REQUEST")
		}
		r := b.do(http.MethodPost, "/logout", strings.NewReader(""), map[string]string{
			"Accept": "text/html", "Content-Type": "application/x-www-form-urlencoded",
			"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site",
		})
		wantErrorPage(t, r, http.StatusForbidden, "AUTH_INVALID_REQUEST")
		if !h.sessionValid(token) {
			t.Errorf("a cross-site logout ended the session")
		}
		// An allowed origin may log out (CORS apps).
		r = b.postJSON("/logout", map[string]string{"Origin": appOrigin, "Sec-Fetch-Site": "cross-site"})
		if r.StatusCode != http.StatusNoContent {
			t.Errorf("POST /logout from an allowed origin: got %d; want 204 (body %q)", r.StatusCode, r.body)
		}
		if h.sessionValid(token) {
			t.Errorf("session still valid after logout from an allowed origin")
		}
	})
	t.Run("no session", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, setup{})
		b := h.browser()
		if r := b.postJSON("/logout", nil); r.StatusCode != http.StatusNoContent {
			t.Errorf("POST /logout without a session: got %d; want 204 (body %q)", r.StatusCode, r.body)
		}
		if r := b.postJSON("/logout", map[string]string{"Cookie": "auth_session=" + strings.Repeat("q", 40)}); r.StatusCode != http.StatusNoContent {
			t.Errorf("POST /logout with an unknown session: got %d; want 204 (body %q)", r.StatusCode, r.body)
		}
	})
}

type sessionList struct {
	Sessions []struct {
		ID         string    `json:"id"`
		CreatedAt  time.Time `json:"created_at"`
		LastSeenAt time.Time `json:"last_seen_at"`
		UserAgent  string    `json:"user_agent"`
		IP         string    `json:"ip"`
		Current    bool      `json:"current"`
	} `json:"sessions"`
}

func listSessions(t *testing.T, b *browser) sessionList {
	t.Helper()
	r := b.getJSON("/sessions")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("GET /sessions: got %d (body %q)", r.StatusCode, r.body)
	}
	var raw map[string][]map[string]any
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatalf("GET /sessions: %v (body %q)", err, r.body)
	}
	if len(raw) != 1 || raw["sessions"] == nil {
		t.Errorf("GET /sessions: got keys of %q; want only sessions", r.body)
	}
	for _, s := range raw["sessions"] {
		wantKeys(t, "/sessions item", s, "id", "created_at", "last_seen_at", "user_agent", "ip", "current")
	}
	var l sessionList
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatalf("GET /sessions: %v", err)
	}
	if strings.Contains(string(r.body), b.session()) {
		t.Errorf("GET /sessions shows a session token")
	}
	return l
}

func TestSessions(t *testing.T) {
	t.Parallel()
	gh := &githubSetup{User: providertest.GitHubUser{ID: 5, Login: "sam"}}
	t.Run("list and delete", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, setup{GitHub: gh})
		b1, b2 := h.browser(), h.browser()
		b2.ua = "OtherBrowser/2.0"
		b1.login("github", "")
		b2.login("github", "")
		l := listSessions(t, b1)
		if len(l.Sessions) != 2 {
			t.Fatalf("GET /sessions: got %d sessions; want 2", len(l.Sessions))
		}
		current, other := -1, -1
		for i, s := range l.Sessions {
			if !hex64.MatchString(s.ID) {
				t.Errorf("session id %q is not 64 hex", s.ID)
			}
			if s.IP != "127.0.0.1" {
				t.Errorf("session ip: got %q; want 127.0.0.1", s.IP)
			}
			if s.CreatedAt.IsZero() || s.LastSeenAt.IsZero() {
				t.Errorf("session times missing: %+v", s)
			}
			if s.Current {
				if current >= 0 {
					t.Errorf("more than one current session")
				}
				current = i
			} else {
				other = i
			}
		}
		if current < 0 || other < 0 {
			t.Fatalf("want exactly one current session: %+v", l.Sessions)
		}
		if got, want := l.Sessions[current].ID, auth.SessionIDFromToken(b1.session()); got != want {
			t.Errorf("current session: got %s; want %s", got, want)
		}
		if l.Sessions[current].UserAgent != "TestBrowser/1.0" || l.Sessions[other].UserAgent != "OtherBrowser/2.0" {
			t.Errorf("user agents: got %q and %q", l.Sessions[current].UserAgent, l.Sessions[other].UserAgent)
		}

		// End the other session from the first browser.
		r := b1.do(http.MethodDelete, "/sessions/"+l.Sessions[other].ID, nil, jsonAccept)
		if r.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE /sessions/{other}: got %d; want 204 (body %q)", r.StatusCode, r.body)
		}
		if c := r.cookie("auth_session"); c != nil {
			t.Errorf("deleting another session touched this browser's cookie")
		}
		wantError(t, b2.getJSON("/session"), http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
		if got := listSessions(t, b1); len(got.Sessions) != 1 || !got.Sessions[0].Current {
			t.Errorf("after delete: got %+v; want only the current session", got.Sessions)
		}
		// Deleting it again: it is gone.
		wantError(t, b1.do(http.MethodDelete, "/sessions/"+l.Sessions[other].ID, nil, jsonAccept), http.StatusNotFound, "NOT_FOUND")
		// Deleting one's own current session signs out.
		r = b1.do(http.MethodDelete, "/sessions/"+l.Sessions[current].ID, nil, jsonAccept)
		if r.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE /sessions/{current}: got %d (body %q)", r.StatusCode, r.body)
		}
		if c := r.cookie("auth_session"); c == nil || c.Value != "" {
			t.Errorf("deleting the current session did not clear the cookie")
		}
	})
	t.Run("another user's session", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, setup{GitHub: gh})
		b := h.browser()
		b.login("github", "")
		h.github.SetUser(providertest.GitHubUser{ID: 6, Login: "eve"})
		eve := h.browser()
		eve.login("github", "")
		victim := auth.SessionIDFromToken(b.session())
		wantError(t, eve.do(http.MethodDelete, "/sessions/"+victim, nil, jsonAccept), http.StatusNotFound, "NOT_FOUND")
		if !h.sessionValid(b.session()) {
			t.Errorf("another user ended the session")
		}
		for _, id := range []string{"not-a-session", strings.Repeat("g", 64), strings.ToUpper(victim), b.session()} {
			wantError(t, eve.do(http.MethodDelete, "/sessions/"+id, nil, jsonAccept), http.StatusNotFound, "NOT_FOUND")
		}
		if !h.sessionValid(b.session()) {
			t.Errorf("a malformed id ended the session")
		}
		// Cross-site deletes are refused before anything else.
		wantError(t, eve.do(http.MethodDelete, "/sessions/"+auth.SessionIDFromToken(eve.session()), nil,
			map[string]string{"Accept": "application/json", "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}),
			http.StatusForbidden, "AUTH_INVALID_REQUEST")
		if !h.sessionValid(eve.session()) {
			t.Errorf("a cross-site DELETE ended the session")
		}
	})
	t.Run("revoke all", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, setup{GitHub: gh})
		b1, b2, b3 := h.browser(), h.browser(), h.browser()
		b1.login("github", "")
		b2.login("github", "")
		b3.login("github", "")
		tokens := []string{b1.session(), b2.session(), b3.session()}
		wantError(t, b1.postJSON("/sessions/revoke-all", map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}),
			http.StatusForbidden, "AUTH_INVALID_REQUEST")
		r := b1.postJSON("/sessions/revoke-all", nil)
		if r.StatusCode != http.StatusNoContent {
			t.Fatalf("POST /sessions/revoke-all: got %d; want 204 (body %q)", r.StatusCode, r.body)
		}
		if c := r.cookie("auth_session"); c == nil || c.Value != "" {
			t.Errorf("revoke-all did not clear the cookie")
		}
		for i, tok := range tokens {
			if h.sessionValid(tok) {
				t.Errorf("session %d still valid after revoke-all", i)
			}
		}
		// A form post lands on redirect.default.
		b4 := h.browser()
		b4.login("github", "")
		r = b4.do(http.MethodPost, "/sessions/revoke-all", strings.NewReader(""), formPost)
		if r.StatusCode != http.StatusSeeOther || r.location(t).Path != "/" {
			t.Errorf("form POST /sessions/revoke-all: got %d to %q; want 303 to /", r.StatusCode, r.Header.Get("Location"))
		}
	})
	t.Run("unauthenticated", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, setup{})
		b := h.browser()
		wantError(t, b.getJSON("/sessions"), http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
		wantError(t, b.get("/sessions", map[string]string{"Accept": ""}), http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
		wantError(t, b.do(http.MethodDelete, "/sessions/"+strings.Repeat("a", 64), nil, jsonAccept), http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
		wantError(t, b.postJSON("/sessions/revoke-all", nil), http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
	})
}

// TestAccountPage: the account page shows the user's sessions and linked
// providers, and sends anonymous browsers to the login page.
func TestAccountPage(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{GitHub: &githubSetup{}, OIDC: []oidcSetup{{Name: "dex"}}})
	b := h.browser()
	r := b.get("/account", nil)
	if r.StatusCode != http.StatusFound || r.location(t).Path != "/login" {
		t.Errorf("GET /account signed out: got %d to %q; want 302 to /login", r.StatusCode, r.Header.Get("Location"))
	}
	b.login("github", "")
	r = b.get("/account", nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("GET /account: got %d (body %q)", r.StatusCode, r.body)
	}
	wantSecurityHeaders(t, r)
	if !strings.Contains(r.Body(), "octocat@example.com") || !strings.Contains(r.Body(), "/link/dex") {
		t.Errorf("account page lacks the user or the dex link form: %s", r.body)
	}
	if strings.Contains(r.Body(), b.session()) {
		t.Errorf("account page shows the session token")
	}
}
