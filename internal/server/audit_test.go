package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/providertest"
	"github.com/brokerauth/broker/internal/server"
	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/storagetest"
	"github.com/brokerauth/broker/webauthn"
	"github.com/brokerauth/broker/webauthn/webauthntest"
)

// auditLog returns every audit event in the store, oldest first.
func (h *harness) auditLog() []storage.AuditEvent {
	h.t.Helper()
	es, err := h.store.ListAudit(context.Background(), storage.AuditFilter{Limit: 10000})
	if err != nil {
		h.t.Fatalf("ListAudit: %v", err)
	}
	return es
}

// auditMark returns the id of the last audit event, so that a step can
// look at the events it added.
func (h *harness) auditMark() int64 {
	h.t.Helper()
	es := h.auditLog()
	if len(es) == 0 {
		return 0
	}
	return es[len(es)-1].ID
}

// auditSince returns the events after the mark.
func (h *harness) auditSince(mark int64) []storage.AuditEvent {
	h.t.Helper()
	es, err := h.store.ListAudit(context.Background(), storage.AuditFilter{AfterID: mark, Limit: 10000})
	if err != nil {
		h.t.Fatalf("ListAudit: %v", err)
	}
	return es
}

// wantAudit checks that events are exactly want, in order: event, user,
// provider and reason always; Data keys that want names (a value of nil
// only asks for the key); and that each carries the harness's time, the
// client address 127.0.0.1 and the browser's user agent ua.
func wantAudit(t *testing.T, h *harness, what string, got []storage.AuditEvent, ua string, want ...storage.AuditEvent) {
	t.Helper()
	show := func(es []storage.AuditEvent) string {
		var b strings.Builder
		for _, e := range es {
			fmt.Fprintf(&b, "\n  %s user=%q provider=%q reason=%q data=%v", e.Event, e.UserID, e.Provider, e.Reason, e.Data)
		}
		return b.String()
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d audit events; want %d\ngot:%s\nwant:%s", what, len(got), len(want), show(got), show(want))
		return
	}
	now := h.clock.Now().UTC().Truncate(time.Microsecond)
	for i, w := range want {
		g := got[i]
		if g.Event != w.Event || g.UserID != w.UserID || g.Provider != w.Provider || g.Reason != w.Reason {
			t.Errorf("%s: event %d = %s; want %s", what, i, show(got[i:i+1]), show(want[i:i+1]))
		}
		for k, v := range w.Data {
			gv, ok := g.Data[k]
			if !ok || (v != nil && fmt.Sprint(gv) != fmt.Sprint(v)) {
				t.Errorf("%s: event %d (%s) data %v; want %s = %v", what, i, g.Event, g.Data, k, v)
			}
		}
		if !g.Time.Equal(now) || g.IP != "127.0.0.1" || g.UserAgent != ua {
			t.Errorf("%s: event %d (%s) at %v from %q (%q); want %v from 127.0.0.1 (%q)", what, i, g.Event, g.Time, g.IP, g.UserAgent, now, ua)
		}
	}
}

// wantNoAuditSecrets checks that no audit event holds any of secrets.
func wantNoAuditSecrets(t *testing.T, h *harness, secrets ...string) {
	t.Helper()
	for _, e := range h.auditLog() {
		b, _ := json.Marshal(e)
		for _, s := range secrets {
			if s != "" && strings.Contains(strings.ToLower(string(b)), strings.ToLower(s)) {
				t.Errorf("audit event %s holds %q: %s", e.Event, s, b)
			}
		}
	}
}

const auditUA = "TestBrowser/1.0"

// auditMetricValue returns the value of one series of m, or "".
func auditMetricValue(t *testing.T, m *server.Metrics, series string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for line := range strings.SplitSeq(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// TestAuditProviderLogin: provider sign-ins, a refused callback, logout and
// revoked sessions each leave exactly their audit events, counted in
// broker_audit_events_total.
func TestAuditProviderLogin(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, pg bool) {
		h := newHarness(t, setup{Postgres: pg, GitHub: &githubSetup{User: providertest.GitHubUser{ID: 77, Login: "octo"}}})
		b := h.browser()

		m := h.auditMark()
		b.login("github", "")
		id := b.me()
		wantAudit(t, h, "first login", h.auditSince(m), auditUA,
			storage.AuditEvent{Event: storage.AuditLoginSuccess, UserID: id, Provider: "github", Reason: "created"})

		m = h.auditMark()
		b2 := h.browser()
		b2.ua = "OtherBrowser/2.0"
		b2.login("github", "")
		wantAudit(t, h, "second login", h.auditSince(m), "OtherBrowser/2.0",
			storage.AuditEvent{Event: storage.AuditLoginSuccess, UserID: id, Provider: "github", Reason: "existing"})

		// A callback whose state does not match its flow.
		m = h.auditMark()
		cb := h.browser().startLogin("/login/github")
		bad := withQuery(cb, func(q url.Values) { q.Set("state", q.Get("state")+"x") })
		if r := h.browser().get(bad, jsonAccept); r.StatusCode != http.StatusBadRequest {
			t.Fatalf("bad callback: got %d; want 400", r.StatusCode)
		}
		wantAudit(t, h, "refused callback", h.auditSince(m), auditUA,
			storage.AuditEvent{Event: storage.AuditLoginFailure, Provider: "github", Reason: "invalid_state"})

		// b2 ends b's session, then all of its own.
		m = h.auditMark()
		bID := auth.SessionIDFromToken(b.session())
		if r := b2.do(http.MethodDelete, "/sessions/"+bID, nil, jsonAccept); r.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE /sessions/{id}: %d %q", r.StatusCode, r.body)
		}
		wantAudit(t, h, "delete a session", h.auditSince(m), "OtherBrowser/2.0",
			storage.AuditEvent{Event: storage.AuditSessionRevoked, UserID: id, Data: map[string]any{"session_id": bID, "current": false}})
		// Deleting it again is a 404 and no event.
		m = h.auditMark()
		if r := b2.do(http.MethodDelete, "/sessions/"+bID, nil, jsonAccept); r.StatusCode != http.StatusNotFound {
			t.Fatalf("DELETE /sessions/{id} again: %d", r.StatusCode)
		}
		b.login("github", "")
		wantAudit(t, h, "delete again, log in again", h.auditSince(m), auditUA,
			storage.AuditEvent{Event: storage.AuditLoginSuccess, UserID: id, Provider: "github", Reason: "existing"})

		m = h.auditMark()
		if r := b2.postJSON("/sessions/revoke-all", nil); r.StatusCode != http.StatusNoContent {
			t.Fatalf("revoke-all: %d %q", r.StatusCode, r.body)
		}
		wantAudit(t, h, "revoke all", h.auditSince(m), "OtherBrowser/2.0",
			storage.AuditEvent{Event: storage.AuditSessionRevoked, UserID: id, Reason: "all", Data: map[string]any{"sessions": 2}})

		// Log out: the session's user and id. A second logout (no session)
		// records nothing.
		b.login("github", "")
		m = h.auditMark()
		sid := auth.SessionIDFromToken(b.session())
		if r := b.postJSON("/logout", nil); r.StatusCode != http.StatusNoContent {
			t.Fatalf("logout: %d", r.StatusCode)
		}
		if r := b.postJSON("/logout", nil); r.StatusCode != http.StatusNoContent {
			t.Fatalf("second logout: %d", r.StatusCode)
		}
		wantAudit(t, h, "logout", h.auditSince(m), auditUA,
			storage.AuditEvent{Event: storage.AuditLogout, UserID: id, Data: map[string]any{"session_id": sid}})

		// /session and /auth record nothing.
		b.login("github", "")
		m = h.auditMark()
		for range 3 {
			b.getJSON("/session")
			b.get("/auth", map[string]string{"X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/"})
		}
		if es := h.auditSince(m); len(es) != 0 {
			t.Errorf("/session and /auth recorded %d audit events", len(es))
		}

		for series, want := range map[string]string{
			`broker_audit_events_total{event="login.success"}`:   "5",
			`broker_audit_events_total{event="login.failure"}`:   "1",
			`broker_audit_events_total{event="session.revoked"}`: "2",
			`broker_audit_events_total{event="logout"}`:          "1",
			`broker_audit_write_failures_total`:                  "0",
		} {
			if got := pkMetric(t, h, series); got != want {
				t.Errorf("%s = %q; want %s", series, got, want)
			}
		}
	})
}

// TestAuditProviderRefusals: the callback's refusals are recorded with
// their outcome as reason; a refused link names the user and its purpose.
func TestAuditProviderRefusals(t *testing.T) {
	t.Parallel()
	t.Run("allow rule", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, setup{GitHub: &githubSetup{providerRules: providerRules{Allow: `identity.email.endsWith("@corp.example")`}}})
		cb := h.browser().startLogin("/login/github")
		if r := h.browser().get(cb.String(), jsonAccept); r.StatusCode != http.StatusBadRequest {
			// Another browser: no flow cookie.
			t.Fatalf("callback in another browser: %d", r.StatusCode)
		}
		b := h.browser()
		cb = b.startLogin("/login/github")
		if r := b.get(cb.String(), jsonAccept); r.StatusCode != http.StatusForbidden {
			t.Fatalf("refused callback: %d %q", r.StatusCode, r.body)
		}
		wantAudit(t, h, "refusals", h.auditLog(), auditUA,
			storage.AuditEvent{Event: storage.AuditLoginFailure, Provider: "github", Reason: "invalid_state"},
			storage.AuditEvent{Event: storage.AuditLoginFailure, Provider: "github", Reason: "forbidden"})
	})
	t.Run("provider denied", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, setup{GitHub: &githubSetup{}})
		b := h.browser()
		cb := b.startLogin("/login/github")
		r := b.get(withQuery(cb, func(q url.Values) { q.Del("code"); q.Set("error", "access_denied") }), jsonAccept)
		if r.StatusCode != http.StatusForbidden {
			t.Fatalf("denied callback: %d", r.StatusCode)
		}
		wantAudit(t, h, "denied", h.auditLog(), auditUA,
			storage.AuditEvent{Event: storage.AuditLoginFailure, Provider: "github", Reason: "denied"})
	})
}

// TestAuditLinkAndReauth: linking a provider to a signed-in user and
// re-authenticating through one are recorded with the user.
func TestAuditLinkAndReauth(t *testing.T) {
	t.Parallel()
	h := newHarness(t, linkSetup())
	b := h.browser()
	b.login("github", "")
	id := b.me()

	m := h.auditMark()
	link := b.postJSON("/link/dex", nil)
	if link.StatusCode != http.StatusOK {
		t.Fatalf("POST /link/dex: %d %q", link.StatusCode, link.body)
	}
	target, _ := link.json(t)["redirect"].(string)
	cb := b.get(target, nil).location(t)
	if r := b.get(cb.String(), nil); r.StatusCode != http.StatusFound {
		t.Fatalf("link callback: %d %q", r.StatusCode, r.body)
	}
	wantAudit(t, h, "link", h.auditSince(m), auditUA, storage.AuditEvent{Event: storage.AuditKeyLinked, UserID: id, Provider: "dex"})

	m = h.auditMark()
	cb = b.startLogin("/login/dex?reauth=1")
	if r := b.get(cb.String(), nil); r.StatusCode != http.StatusFound {
		t.Fatalf("reauth callback: %d %q", r.StatusCode, r.body)
	}
	wantAudit(t, h, "reauth", h.auditSince(m), auditUA,
		storage.AuditEvent{Event: storage.AuditLoginSuccess, UserID: id, Provider: "dex", Reason: "reauthenticated"})
}

// TestAuditPassword: password sign-up, failures (wrong password, unknown
// address, too many), success and a password change. Failures keep a hash
// of the key, never the address or the password typed.
func TestAuditPassword(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{})
	b := h.browser()

	m := h.auditMark()
	id := b.mlSignup("ann@example.com", mlPassword)
	wantAudit(t, h.harness, "sign-up", h.auditSince(m), auditUA,
		storage.AuditEvent{Event: storage.AuditLoginSuccess, UserID: id, Provider: "password", Reason: "signup"})

	m = h.auditMark()
	wantError(t, h.browser().mlLogin("ann@example.com", "wrong password 1", nil), http.StatusBadRequest, "AUTH_INVALID_PASSWORD")
	wantError(t, h.browser().mlLogin("nobody@example.com", "wrong password 2", nil), http.StatusBadRequest, "AUTH_INVALID_PASSWORD")
	if r := h.browser().mlLogin("Ann@Example.com", mlPassword, nil); r.StatusCode != http.StatusOK {
		t.Fatalf("login: %d %q", r.StatusCode, r.body)
	}
	events := h.auditSince(m)
	wantAudit(t, h.harness, "logins", events, auditUA,
		storage.AuditEvent{Event: storage.AuditLoginFailure, UserID: id, Provider: "password", Reason: "invalid_password", Data: map[string]any{"key": nil}},
		storage.AuditEvent{Event: storage.AuditLoginFailure, Provider: "password", Reason: "invalid_password", Data: map[string]any{"key": nil}},
		storage.AuditEvent{Event: storage.AuditLoginSuccess, UserID: id, Provider: "password"})
	if len(events) == 3 {
		k1, k2 := events[0].Data["key"], events[1].Data["key"]
		if s, _ := k1.(string); len(s) != 16 || k1 == k2 {
			t.Errorf("failure keys %v, %v; want 16 hex digits, different per address", k1, k2)
		}
	}

	// A change: a wrong current password, then the change, which ends
	// the other session.
	m = h.auditMark()
	wantError(t, b.mlJSON("/account/password", mlBody{"current_password": "not it at all", "new_password": "a brand new passphrase"}, nil),
		http.StatusBadRequest, "AUTH_INVALID_PASSWORD")
	if r := b.mlJSON("/account/password", mlBody{"current_password": mlPassword, "new_password": "a brand new passphrase"}, nil); r.StatusCode != http.StatusNoContent {
		t.Fatalf("change: %d %q", r.StatusCode, r.body)
	}
	wantAudit(t, h.harness, "change", h.auditSince(m), auditUA,
		storage.AuditEvent{Event: storage.AuditLoginFailure, UserID: id, Provider: "password", Reason: "invalid_password", Data: map[string]any{"during": "password_change"}},
		storage.AuditEvent{Event: storage.AuditPasswordChanged, UserID: id, Provider: "password", Data: map[string]any{"other_sessions_ended": 1}})

	wantNoAuditSecrets(t, h.harness, "ann@example.com", "nobody@example.com", mlPassword, "wrong password", "not it at all", "a brand new passphrase")
	if got := auditMetricValue(t, h.metrics, `broker_audit_events_total{event="login.failure"}`); got != "3" {
		t.Errorf("login.failure count = %q; want 3", got)
	}
}

// TestAuditPasswordRateLimited: past the failure limit a login is
// recorded as rate_limited (before any password check).
func TestAuditPasswordRateLimited(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{MaxFailures: 2})
	for i := range 3 {
		h.browser().mlLogin("bob@example.com", fmt.Sprint("guess ", i), nil)
	}
	wantAudit(t, h.harness, "too many", h.auditLog(), auditUA,
		storage.AuditEvent{Event: storage.AuditLoginFailure, Provider: "password", Reason: "invalid_password"},
		storage.AuditEvent{Event: storage.AuditLoginFailure, Provider: "password", Reason: "invalid_password"},
		storage.AuditEvent{Event: storage.AuditLoginFailure, Provider: "password", Reason: "rate_limited", Data: map[string]any{"key": nil}})
	wantNoAuditSecrets(t, h.harness, "bob@example.com", "guess ")
}

// TestAuditEmail: email-link sign-in, a bad link, the sign-up address
// confirmation and a password reset.
func TestAuditEmail(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{Email: true, MaxSends: 50})

	m := h.auditMark()
	b := h.browser()
	b.mlFollow(h.askLink("carol@example.com", ""))
	carol := b.me()
	r := h.browser().get("/login/email/callback?email=carol%40example.com&token="+strings.Repeat("A", 43), nil)
	if r.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad link: %d", r.StatusCode)
	}
	wantAudit(t, h.harness, "email links", h.auditSince(m), auditUA,
		storage.AuditEvent{Event: storage.AuditLoginSuccess, UserID: carol, Provider: "email", Reason: "created"},
		storage.AuditEvent{Event: storage.AuditLoginFailure, Provider: "email", Reason: "invalid_token"})

	// A password sign-up confirms its address through the mailed link.
	d := h.browser()
	dan := d.mlSignup("dan@example.com", mlPassword)
	verify := mlURL(t, h.nextLink("dan@example.com", "/signup/password/verify")).Query()
	m = h.auditMark()
	if r := h.browser().mlJSON("/signup/password/verify", mlBody{"token": verify.Get("token"), "email": verify.Get("email")}, nil); r.StatusCode != http.StatusNoContent {
		t.Fatalf("verify: %d %q", r.StatusCode, r.body)
	}
	wantAudit(t, h.harness, "verify", h.auditSince(m), auditUA,
		storage.AuditEvent{Event: storage.AuditEmailVerified, UserID: dan, Provider: "email", Reason: "signup"})

	// A reset ends dan's sessions and signs this browser in.
	if r := h.browser().mlJSON("/account/password/reset", mlBody{"email": "dan@example.com"}, nil); r.StatusCode != http.StatusAccepted {
		t.Fatalf("reset request: %d", r.StatusCode)
	}
	reset := mlURL(t, h.nextLink("dan@example.com", "/account/password/reset")).Query()
	m = h.auditMark()
	r = h.browser().mlJSON("/account/password/reset/confirm", mlBody{"token": reset.Get("token"), "email": reset.Get("email"), "new_password": "my new reset passphrase"}, nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("reset confirm: %d %q", r.StatusCode, r.body)
	}
	wantAudit(t, h.harness, "reset", h.auditSince(m), auditUA,
		storage.AuditEvent{Event: storage.AuditPasswordReset, UserID: dan, Provider: "email", Data: map[string]any{"sessions_ended": 1}},
		storage.AuditEvent{Event: storage.AuditLoginSuccess, UserID: dan, Provider: "email", Reason: "password_reset"})
	wantNoAuditSecrets(t, h.harness, verify.Get("token"), reset.Get("token"), "my new reset passphrase", mlPassword)
}

// TestAuditPasskeys: passkey sign-up, login, a failed login, adding and
// removing a passkey.
func TestAuditPasskeys(t *testing.T) {
	t.Parallel()
	h := passkeyHarness(t, false)
	phone, laptop := webauthntest.New(h.url), webauthntest.New(h.url)
	b := h.browser()

	m := h.auditMark()
	r := b.pkSignUp(phone, "erin", nil)
	if r.StatusCode != http.StatusCreated {
		t.Fatalf("sign-up: %d %q", r.StatusCode, r.body)
	}
	erin := pkDecode[pkAnswer](t, r).User.ID
	phoneID := webauthn.EncodeID(phone.Credentials()[0].ID)
	wantAudit(t, h, "sign-up", h.auditSince(m), auditUA,
		storage.AuditEvent{Event: storage.AuditPasskeyAdded, UserID: erin, Provider: "webauthn", Data: map[string]any{"credential_id": phoneID, "name": "Passkey"}},
		storage.AuditEvent{Event: storage.AuditLoginSuccess, UserID: erin, Provider: "webauthn", Reason: "signup"})

	m = h.auditMark()
	if r := h.browser().pkLogin(phone, map[string]any{}, nil, nil); r.StatusCode != http.StatusOK {
		t.Fatalf("login: %d %q", r.StatusCode, r.body)
	}
	wantAudit(t, h, "login", h.auditSince(m), auditUA,
		storage.AuditEvent{Event: storage.AuditLoginSuccess, UserID: erin, Provider: "webauthn"})

	m = h.auditMark()
	_, opts, state := b.pkOptions("/webauthn/register/options", map[string]any{})
	cred, _, err := laptop.Create(opts)
	if err != nil {
		t.Fatal(err)
	}
	if r := b.pkSend(http.MethodPost, "/webauthn/register/verify", pkWithState(t, cred, state, map[string]any{"name": "Laptop"}), nil); r.StatusCode != http.StatusCreated {
		t.Fatalf("add: %d %q", r.StatusCode, r.body)
	}
	if r := b.pkSend(http.MethodDelete, "/webauthn/credentials/"+phoneID, []byte(""), nil); r.StatusCode != http.StatusNoContent {
		t.Fatalf("remove: %d %q", r.StatusCode, r.body)
	}
	// The last one cannot be removed: no event.
	last := webauthn.EncodeID(laptop.Credentials()[0].ID)
	wantError(t, b.pkSend(http.MethodDelete, "/webauthn/credentials/"+last, []byte(""), nil), http.StatusConflict, "CONFLICT")
	// The removed passkey no longer signs in.
	wantError(t, h.browser().pkLogin(phone, map[string]any{}, nil, nil), http.StatusBadRequest, "AUTH_INVALID_KEY_ID")
	wantAudit(t, h, "add and remove", h.auditSince(m), auditUA,
		storage.AuditEvent{Event: storage.AuditPasskeyAdded, UserID: erin, Provider: "webauthn", Data: map[string]any{"credential_id": last, "name": "Laptop"}},
		storage.AuditEvent{Event: storage.AuditPasskeyRemoved, UserID: erin, Provider: "webauthn", Data: map[string]any{"credential_id": phoneID}},
		storage.AuditEvent{Event: storage.AuditLoginFailure, Provider: "webauthn", Reason: "unknown_credential"})

	if got := pkMetric(t, h, `broker_audit_events_total{event="passkey.added"}`); got != "2" {
		t.Errorf("passkey.added count = %q; want 2", got)
	}
}

// TestAuditUserAgentCleaned: a long user agent is cut to 256 bytes on a
// character boundary.
func TestAuditUserAgentCleaned(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{GitHub: &githubSetup{}})
	b := h.browser()
	b.ua = strings.Repeat("ü", 300) // 600 bytes
	b.login("github", "")
	es := h.auditLog()
	if len(es) != 1 {
		t.Fatalf("%d events; want 1", len(es))
	}
	if got := es[0].UserAgent; len(got) > 256 || len(got) < 250 || !utf8.ValidString(got) || strings.Trim(got, "ü") != "" {
		t.Errorf("user agent %q (%d bytes); want at most 256 bytes of whole characters", got, len(got))
	}
}

// TestAuditWriteFailure: when the audit log cannot be written the request
// still succeeds; the failure is counted.
func TestAuditWriteFailure(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{GitHub: &githubSetup{}})
	if _, err := h.store.DB().ExecContext(context.Background(), "DROP TABLE audit_log"); err != nil {
		t.Fatal(err)
	}
	b := h.browser()
	b.login("github", "")
	if b.me() == "" {
		t.Fatal("not signed in")
	}
	if got := pkMetric(t, h, `broker_audit_write_failures_total`); got != "1" {
		t.Errorf("write failures = %q; want 1", got)
	}
	if got := pkMetric(t, h, `broker_audit_events_total{event="login.success"}`); got != "1" {
		t.Errorf("login.success count = %q; want 1", got)
	}
}

// TestAuditMetricsShared: two servers on one Metrics (as two handlers of
// one process) share the audit counters instead of failing to register.
func TestAuditMetricsShared(t *testing.T) {
	t.Parallel()
	st := storagetest.OpenSQLite(t)
	a, err := auth.New(st, auth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := server.NewMetrics()
	for range 2 {
		if _, err := server.New(server.Options{Auth: a, Store: st, Metrics: m}); err != nil {
			t.Fatalf("server.New: %v", err)
		}
	}
}

// TestSweepAuditRetention: the sweeper deletes audit events older than
// the retention, in batches, and keeps the rest; without a retention it
// keeps them all.
func TestSweepAuditRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storagetest.OpenSQLite(t)
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	retention := 90 * 24 * time.Hour
	for i, age := range []time.Duration{retention + 3*time.Hour, retention + 2*time.Hour, retention + time.Second, retention + time.Microsecond, retention, retention - time.Second, time.Minute} {
		e := storage.AuditEvent{Time: now.Add(-age), Event: storage.AuditLogout, UserID: fmt.Sprint("u", i)}
		if err := st.AppendAudit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	clock := func() time.Time { return now }
	if n := server.SweepOnce(ctx, st, log, server.SweepOptions{BatchSize: 3, Now: clock}); n != 0 {
		t.Errorf("sweep without a retention deleted %d rows; want 0", n)
	}
	if n := server.SweepOnce(ctx, st, log, server.SweepOptions{BatchSize: 3, Now: clock, AuditRetention: retention}); n != 4 {
		t.Errorf("sweep deleted %d rows; want the 4 older than the retention", n)
	}
	es, err := st.ListAudit(ctx, storage.AuditFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for _, e := range es {
		users = append(users, e.UserID)
	}
	if strings.Join(users, ",") != "u4,u5,u6" {
		t.Errorf("events left: %v; want u4 (exactly the retention old), u5, u6", users)
	}
}
