package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brokerauth/broker/internal/mail"
	"github.com/brokerauth/broker/internal/mail/mailtest"
)

func mlTLS(s *mailtest.Server) *tls.Config {
	return &tls.Config{RootCAs: s.Roots, ServerName: s.Host, MinVersion: tls.VersionTLS12}
}

// askLink posts /login/email as a script and returns the link mailed to
// email (relative to the broker).
func (h *mailHarness) askLink(email, redirectTo string) string {
	h.t.Helper()
	r := h.browser().mlJSON("/login/email", mlBody{"email": email, "redirect_to": redirectTo}, nil)
	if r.StatusCode != http.StatusAccepted {
		h.t.Fatalf("POST /login/email: got %d; want 202 (body %q)", r.StatusCode, r.body)
	}
	return h.nextLink(strings.ToLower(strings.TrimSpace(email)), "/login/email/callback")
}

// mlFollow opens a mailed link in b: it must answer 302 with a session cookie.
func (b *browser) mlFollow(link string) *response {
	b.t.Helper()
	r := b.get(link, nil)
	if r.StatusCode != http.StatusFound {
		b.t.Fatalf("GET %s: got %d; want 302 (body %q)", link, r.StatusCode, r.body)
	}
	if c := r.cookie("auth_session"); c == nil || c.Value == "" {
		b.t.Fatalf("GET %s: no session cookie", link)
	}
	return r
}

// TestEmailLinkLogin asks for a link, receives it on a real SMTP server
// (STARTTLS) inside the test, and signs in with it.
func TestEmailLinkLogin(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{Email: true})
	b := h.browser()
	r := b.mlJSON("/login/email", mlBody{"email": " Ann@Example.com", "redirect_to": "/app?x=1"}, nil)
	if r.StatusCode != http.StatusAccepted || r.json(t)["status"] != "sent" {
		t.Fatalf("POST /login/email: got %d (body %q); want 202", r.StatusCode, r.body)
	}
	m := h.smtp.Next(t, 30*time.Second)
	if !m.TLS || m.From != "login@example.com" || m.To[0] != "ann@example.com" {
		t.Errorf("mail: TLS %v, from %q, to %v", m.TLS, m.From, m.To)
	}
	if !strings.Contains(m.Subject, "sign-in link") || m.HTML == "" {
		t.Errorf("mail: subject %q, HTML %d bytes", m.Subject, len(m.HTML))
	}
	link := strings.TrimPrefix(m.Link(t, h.url+"/login/email/callback?"), h.url)
	lu := mlURL(t, link)
	if lu.Query().Get("email") != "ann@example.com" || len(lu.Query().Get("token")) != 43 {
		t.Errorf("link %s: want email and a 43-character token", link)
	}

	r = b.mlFollow(link)
	if loc := r.Header.Get("Location"); loc != "/app?x=1" {
		t.Errorf("redirect to %q; want the redirect_to stored with the token", loc)
	}
	s := b.getJSON("/session").json(t)
	user := s["user"].(map[string]any)
	if user["email"] != "ann@example.com" || user["email_verified"] != true {
		t.Errorf("user = %v; want ann@example.com, verified", user)
	}
	id := user["id"].(string)
	if got := h.keysOf(id); len(got) != 1 || got[0] != "email:ann@example.com" {
		t.Errorf("keys = %v; want email:ann@example.com", got)
	}
	if k := h.key("email:ann@example.com"); k.HashedPassword != nil {
		t.Errorf("the email key of a link user has a password")
	}
	// No hash of the token is in the link, and no token in the database.
	var n int
	if err := h.store.DB().Get(&n, `SELECT count(*) FROM verification_tokens`); err != nil || n != 0 {
		t.Errorf("verification tokens left: %d (%v)", n, err)
	}

	// Again, from another browser, as a form post: the same user.
	b2 := h.browser()
	r = b2.mlForm("/login/email", url.Values{"email": {"ann@example.com"}}, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/login?sent=1" {
		t.Fatalf("form POST /login/email: got %d → %q; want 303 → /login?sent=1", r.StatusCode, r.Header.Get("Location"))
	}
	if p := b2.get("/login?sent=1", nil); !strings.Contains(p.Body(), "Check your email") {
		t.Errorf("login page does not say the link is on its way")
	}
	r = b2.mlFollow(h.nextLink("ann@example.com", "/login/email/callback"))
	if r.Header.Get("Location") != "/" || b2.me() != id {
		t.Errorf("second link login: to %q as %s; want / as %s", r.Header.Get("Location"), b2.me(), id)
	}
	h.wantUsers(1)

	// An unsafe redirect_to is never stored.
	r = h.browser().mlFollow(h.askLink("ann@example.com", "https://evil.example/steal"))
	if r.Header.Get("Location") != "/" {
		t.Errorf("redirect to %q; want the default", r.Header.Get("Location"))
	}
}

// TestEmailLinkNoEnumeration: known and unknown addresses get the same
// answer (and both a link: the unknown one signs up).
func TestEmailLinkNoEnumeration(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{Email: true})
	h.createUser("ann@example.com", true, nil)
	known := h.browser().mlJSON("/login/email", mlBody{"email": "ann@example.com"}, nil)
	unknown := h.browser().mlJSON("/login/email", mlBody{"email": "nobody@example.com"}, nil)
	if known.StatusCode != http.StatusAccepted || known.StatusCode != unknown.StatusCode || known.Body() != unknown.Body() {
		t.Errorf("known: %d %q; unknown: %d %q", known.StatusCode, known.body, unknown.StatusCode, unknown.body)
	}
	got := map[string]bool{}
	for range 2 {
		got[h.smtp.Next(t, 30*time.Second).To[0]] = true
	}
	if !got["ann@example.com"] || !got["nobody@example.com"] {
		t.Errorf("mail went to %v; want both addresses", got)
	}
	// Bad requests.
	wantError(t, h.browser().mlJSON("/login/email", mlBody{"email": "not an address"}, nil), http.StatusBadRequest, "AUTH_INVALID_REQUEST")
	wantError(t, h.browser().mlJSON("/login/email", mlBody{"email": "ann@example.com"},
		map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}), http.StatusForbidden, "AUTH_INVALID_REQUEST")
	wantError(t, h.browser().do(http.MethodPost, "/login/email", strings.NewReader("x"), map[string]string{"Content-Type": "text/plain", "Accept": "application/json"}),
		http.StatusUnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE")
	h.flush()
	h.smtp.NoMail(t, 100*time.Millisecond)
}

// TestEmailLinkRefused: replayed, expired, tampered, mis-purposed and
// concurrently used links sign nobody in.
func TestEmailLinkRefused(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{Email: true, MaxSends: 100})
	link := h.askLink("ann@example.com", "")
	h.browser().mlFollow(link)

	t.Run("replayed", func(t *testing.T) {
		r := h.browser().get(link, nil)
		wantErrorPage(t, r, http.StatusBadRequest, "AUTH_INVALID_REQUEST")
		wantNoSession(t, r)
		wantError(t, h.browser().get(link, jsonAccept), http.StatusBadRequest, "AUTH_INVALID_REQUEST")
	})
	t.Run("expired", func(t *testing.T) {
		onTime := h.askLink("ann@example.com", "")
		late := h.askLink("ann@example.com", "")
		h.clock.Advance(10*time.Minute - time.Second)
		h.browser().mlFollow(onTime)
		h.clock.Advance(time.Second)
		r := h.browser().get(late, nil)
		wantErrorPage(t, r, http.StatusBadRequest, "AUTH_INVALID_REQUEST")
		wantNoSession(t, r)
	})
	t.Run("tampered", func(t *testing.T) {
		l := mlURL(t, h.askLink("ann@example.com", ""))
		q := l.Query()
		tok := q.Get("token")
		flipped := string(tok[0]^1) + tok[1:]
		for name, v := range map[string]url.Values{
			"token changed":  {"token": {flipped}, "email": {"ann@example.com"}},
			"other address":  {"token": {tok}, "email": {"bob@example.com"}},
			"no token":       {"email": {"ann@example.com"}},
			"no address":     {"token": {tok}},
			"junk token":     {"token": {"' OR 1=1 --"}, "email": {"ann@example.com"}},
			"hash for token": {"token": {strings.Repeat("a", 64)}, "email": {"ann@example.com"}},
		} {
			r := h.browser().get("/login/email/callback?"+v.Encode(), nil)
			if r.StatusCode != http.StatusBadRequest || r.cookie("auth_session") != nil {
				t.Errorf("%s: got %d; want 400 without a session", name, r.StatusCode)
			}
		}
		// The real link still works.
		h.browser().mlFollow(l.String())
	})
	t.Run("a reset link is not a login link", func(t *testing.T) {
		h.browser().mlSignup("reset@example.com", mlPassword)
		h.nextLink("reset@example.com", "/signup/password/verify")
		if r := h.browser().mlJSON("/account/password/reset", mlBody{"email": "reset@example.com"}, nil); r.StatusCode != http.StatusAccepted {
			t.Fatalf("reset request: got %d", r.StatusCode)
		}
		reset := mlURL(t, h.nextLink("reset@example.com", "/account/password/reset"))
		r := h.browser().get("/login/email/callback?"+reset.RawQuery, nil)
		wantErrorPage(t, r, http.StatusBadRequest, "AUTH_INVALID_REQUEST")
	})
	t.Run("concurrent", func(t *testing.T) {
		l := h.askLink("bob@example.com", "")
		const n = 8
		var wg sync.WaitGroup
		var mu sync.Mutex
		statuses := map[int]int{}
		cookies := 0
		for range n {
			wg.Go(func() {
				r := h.browser().get(l, nil)
				mu.Lock()
				defer mu.Unlock()
				statuses[r.StatusCode]++
				if c := r.cookie("auth_session"); c != nil && c.Value != "" {
					cookies++
				}
			})
		}
		wg.Wait()
		if statuses[http.StatusFound] != 1 || statuses[http.StatusBadRequest] != n-1 || cookies != 1 {
			t.Errorf("statuses %v, %d cookies; want exactly one 302 with a cookie and %d × 400", statuses, cookies, n-1)
		}
	})
}

// TestEmailLinkVerifiedEmailRule covers whom a link signs in.
func TestEmailLinkVerifiedEmailRule(t *testing.T) {
	t.Parallel()
	t.Run("the verified owner, never an unverified holder", func(t *testing.T) {
		t.Parallel()
		h := newMailHarness(t, mailSetup{Email: true})
		owner := h.createUser("ann@example.com", true, nil)
		squatter := h.createUser("ann@example.com", false, h.hash("squatter's password"))
		b := h.browser()
		b.mlFollow(h.askLink("ann@example.com", ""))
		if got := b.me(); got != owner {
			t.Errorf("signed in as %s; want the verified owner %s", got, owner)
		}
		if u := h.user(squatter); u.EmailVerifiedAt != nil {
			t.Errorf("the unverified holder became verified")
		}
		if k := h.key("email:ann@example.com"); k.UserID != squatter || k.HashedPassword == nil {
			t.Errorf("the link changed the other account's key")
		}
		h.wantUsers(2)
	})
	t.Run("an unverified holder without a key is another account", func(t *testing.T) {
		t.Parallel()
		h := newMailHarness(t, mailSetup{Email: true})
		other := h.createUser("ann@example.com", false, nil)
		b := h.browser()
		b.mlFollow(h.askLink("ann@example.com", ""))
		if got := b.me(); got == other {
			t.Errorf("the link signed in a user that never proved the address")
		}
		if u := h.user(other); u.EmailVerifiedAt != nil {
			t.Errorf("the other user became verified")
		}
		h.wantUsers(2)
	})
	t.Run("an unconfirmed password sign-up is claimed by the mailbox owner", func(t *testing.T) {
		t.Parallel()
		h := newMailHarness(t, mailSetup{Email: true})
		signer := h.browser()
		id := signer.mlSignup("ann@example.com", mlPassword)
		h.nextLink("ann@example.com", "/signup/password/verify") // not followed
		b := h.browser()
		b.mlFollow(h.askLink("ann@example.com", ""))
		if got := b.me(); got != id {
			t.Fatalf("signed in as %s; want the sign-up's account %s", got, id)
		}
		if u := h.user(id); u.EmailVerifiedAt == nil {
			t.Errorf("the address is not verified after the link")
		}
		// Whoever signed up may not own the mailbox: their password and
		// sessions are gone.
		if h.sessionValid(signer.session()) {
			t.Errorf("the sign-up's session survived")
		}
		wantError(t, h.browser().mlLogin("ann@example.com", mlPassword, nil), http.StatusBadRequest, "AUTH_INVALID_PASSWORD")
		// The mailbox owner sets a password at once (the link's session is recent).
		r := b.mlJSON("/account/password", mlBody{"new_password": "the mailbox owner's passphrase"}, nil)
		if r.StatusCode != http.StatusNoContent {
			t.Fatalf("set password: got %d (body %q)", r.StatusCode, r.body)
		}
		if r := h.browser().mlLogin("ann@example.com", "the mailbox owner's passphrase", nil); r.StatusCode != http.StatusOK || mlUserOf(t, r) != id {
			t.Errorf("login with the new password: got %d", r.StatusCode)
		}
		h.wantUsers(1)
	})
	t.Run("concurrent first links make one user", func(t *testing.T) {
		t.Parallel()
		h := newMailHarness(t, mailSetup{Email: true})
		links := []string{h.askLink("new@example.com", ""), h.askLink("new@example.com", ""), h.askLink("new@example.com", "")}
		var wg sync.WaitGroup
		ids := make([]string, len(links))
		for i, l := range links {
			wg.Go(func() {
				b := h.browser()
				b.mlFollow(l)
				ids[i] = b.me()
			})
		}
		wg.Wait()
		if ids[0] != ids[1] || ids[1] != ids[2] {
			t.Errorf("links signed in %v; want one user", ids)
		}
		h.wantUsers(1)
	})
}

// TestSignupConfirmation: the sign-up's mail confirms the address through
// a page whose button (not the GET) uses the token.
func TestSignupConfirmation(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{Email: true})
	b := h.browser()
	id := b.mlSignup("ann@example.com", mlPassword)
	link := h.nextLink("ann@example.com", "/signup/password/verify")
	m := mlURL(t, link).Query()

	page := h.browser().get(link, nil)
	if page.StatusCode != http.StatusOK || !strings.Contains(page.Body(), `action="/signup/password/verify"`) {
		t.Fatalf("GET the link: got %d (body %q)", page.StatusCode, page.body)
	}
	wantSecurityHeaders(t, page)
	_ = h.browser().get(link, nil) // a mail scanner opened it too
	if h.user(id).EmailVerifiedAt != nil {
		t.Fatalf("opening the link verified the address")
	}
	c := h.browser()
	r := c.mlForm("/signup/password/verify", url.Values{"token": {m.Get("token")}, "email": {m.Get("email")}}, nil)
	if r.StatusCode != http.StatusOK || !strings.Contains(r.Body(), "is confirmed") {
		t.Fatalf("confirm: got %d (body %q)", r.StatusCode, r.body)
	}
	if r.cookie("auth_session") != nil {
		t.Errorf("confirming the address signed in")
	}
	if h.user(id).EmailVerifiedAt == nil {
		t.Errorf("the address is not verified")
	}
	if r := h.browser().mlLogin("ann@example.com", mlPassword, nil); r.StatusCode != http.StatusOK {
		t.Errorf("password after confirmation: got %d", r.StatusCode)
	}
	r = c.mlForm("/signup/password/verify", url.Values{"token": {m.Get("token")}, "email": {m.Get("email")}}, nil)
	wantErrorPage(t, r, http.StatusBadRequest, "AUTH_INVALID_REQUEST")
	wantErrorPage(t, h.browser().get("/signup/password/verify?token=x&email=ann%40example.com", nil), http.StatusBadRequest, "AUTH_INVALID_REQUEST")

	// An address someone else verified meanwhile stays theirs.
	h.browser().mlSignup("bob@example.com", mlPassword)
	bl := mlURL(t, h.nextLink("bob@example.com", "/signup/password/verify")).Query()
	owner := h.createUser("bob@example.com", true, nil)
	r = h.browser().mlJSON("/signup/password/verify", mlBody{"token": bl.Get("token"), "email": bl.Get("email")}, nil)
	wantError(t, r, http.StatusConflict, "CONFLICT")
	if u, err := h.store.GetUserByEmail(context.Background(), "bob@example.com"); err != nil || u.ID != owner {
		t.Errorf("owner of bob@example.com: %v, %v; want %s", u.ID, err, owner)
	}
}

// TestPasswordReset: a reset link sets a new password, confirms the
// address and ends every session; unknown addresses get the same answer
// and no mail.
func TestPasswordReset(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{Email: true, MaxSends: 50})
	b := h.browser()
	id := b.mlSignup("ann@example.com", mlPassword)
	h.nextLink("ann@example.com", "/signup/password/verify")
	other := h.browser()
	other.mlLogin("ann@example.com", mlPassword, nil)

	unknown := h.browser().mlJSON("/account/password/reset", mlBody{"email": "nobody@example.com"}, nil)
	known := h.browser().mlJSON("/account/password/reset", mlBody{"email": "ann@example.com", "redirect_to": "/after-reset"}, nil)
	if known.StatusCode != http.StatusAccepted || known.StatusCode != unknown.StatusCode || known.Body() != unknown.Body() {
		t.Errorf("known: %d %q; unknown: %d %q; want the same 202", known.StatusCode, known.body, unknown.StatusCode, unknown.body)
	}
	link := h.nextLink("ann@example.com", "/account/password/reset")
	h.flush()
	h.smtp.NoMail(t, 100*time.Millisecond)
	q := mlURL(t, link).Query()

	// The page shows the form and leaves the token alone.
	c := h.browser()
	for range 2 {
		p := c.get(link, nil)
		if p.StatusCode != http.StatusOK || !strings.Contains(p.Body(), `name="token" value="`+q.Get("token")+`"`) {
			t.Fatalf("GET the reset link: got %d (body %q)", p.StatusCode, p.body)
		}
		wantSecurityHeaders(t, p)
	}
	form := url.Values{"token": {q.Get("token")}, "email": {q.Get("email")}, "new_password": {"12345678"}}
	r := c.mlForm("/account/password/reset/confirm", form, nil)
	if r.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(r.Body(), "most common") || !strings.Contains(r.Body(), q.Get("token")) {
		t.Errorf("weak password: got %d (body %q); want the form again with the message", r.StatusCode, r.body)
	}
	form.Set("new_password", "my new reset passphrase")
	r = c.mlForm("/account/password/reset/confirm", form, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/after-reset" || r.cookie("auth_session") == nil {
		t.Fatalf("confirm: got %d → %q (body %q)", r.StatusCode, r.Header.Get("Location"), r.body)
	}
	if c.me() != id {
		t.Errorf("signed in as someone else")
	}
	if h.sessionValid(b.session()) || h.sessionValid(other.session()) {
		t.Errorf("old sessions survived the reset")
	}
	if h.user(id).EmailVerifiedAt == nil {
		t.Errorf("the reset link did not confirm the address")
	}
	wantErrorPage(t, h.browser().mlForm("/account/password/reset/confirm", form, nil), http.StatusBadRequest, "AUTH_INVALID_REQUEST")
	wantError(t, h.browser().mlLogin("ann@example.com", mlPassword, nil), http.StatusBadRequest, "AUTH_INVALID_PASSWORD")
	if r := h.browser().mlLogin("ann@example.com", "my new reset passphrase", nil); r.StatusCode != http.StatusOK {
		t.Errorf("login with the new password: got %d", r.StatusCode)
	}

	// As a script, and as a form asking for the link.
	r = h.browser().mlForm("/account/password/reset", url.Values{"email": {"ann@example.com"}}, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/account/password/reset?sent=1" {
		t.Errorf("form reset request: got %d → %q", r.StatusCode, r.Header.Get("Location"))
	}
	q = mlURL(t, h.nextLink("ann@example.com", "/account/password/reset")).Query()
	r = h.browser().mlJSON("/account/password/reset/confirm", mlBody{"token": q.Get("token"), "email": q.Get("email"), "new_password": "short"}, nil)
	wantError(t, r, http.StatusUnprocessableEntity, "AUTH_INVALID_PASSWORD")
	r = h.browser().mlJSON("/account/password/reset/confirm", mlBody{"token": q.Get("token"), "email": q.Get("email"), "new_password": "third passphrase here", "bearer": true}, nil)
	if r.StatusCode != http.StatusOK || r.cookie("auth_session") != nil || r.json(t)["token"] == nil {
		t.Errorf("JSON bearer confirm: got %d, cookie %v (body %q)", r.StatusCode, r.cookie("auth_session"), r.body)
	}
	// A verified owner without a password gets one (and the key).
	owner := h.createUser("owner@example.com", true, nil)
	h.browser().mlJSON("/account/password/reset", mlBody{"email": "owner@example.com"}, nil)
	q = mlURL(t, h.nextLink("owner@example.com", "/account/password/reset")).Query()
	r = h.browser().mlJSON("/account/password/reset/confirm", mlBody{"token": q.Get("token"), "email": q.Get("email"), "new_password": "owner passphrase here"}, nil)
	if r.StatusCode != http.StatusOK || mlUserOf(t, r) != owner {
		t.Errorf("owner reset: got %d (body %q)", r.StatusCode, r.body)
	}
	wantError(t, h.browser().mlJSON("/account/password/reset", mlBody{"email": "ann@example.com"},
		map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}), http.StatusForbidden, "AUTH_INVALID_REQUEST")
}

// TestEmailSendLimits: at most MaxSends messages per address and per
// client IP per window, whatever replica or address.
func TestEmailSendLimits(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{Email: true, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	from := func(ip string) map[string]string { return map[string]string{"X-Forwarded-For": ip} }
	ask := func(email, ip string) *response {
		return h.browser().mlJSON("/login/email", mlBody{"email": email}, from(ip))
	}
	for i := range 5 {
		if r := ask("ann@example.com", "203.0.113."+strconv.Itoa(i+1)); r.StatusCode != http.StatusAccepted {
			t.Fatalf("send %d: got %d", i+1, r.StatusCode)
		}
	}
	r := ask("ann@example.com", "203.0.113.99")
	wantError(t, r, http.StatusTooManyRequests, "RATE_LIMITED")
	if n := mlRetryAfter(t, r); n < 3500 || n > 3600 {
		t.Errorf("Retry-After %d; want about an hour", n)
	}
	for i := range 5 {
		if r := ask("user"+strconv.Itoa(i)+"@example.com", "198.51.100.1"); r.StatusCode != http.StatusAccepted {
			t.Fatalf("send from one IP %d: got %d", i+1, r.StatusCode)
		}
	}
	wantError(t, ask("user9@example.com", "198.51.100.1"), http.StatusTooManyRequests, "RATE_LIMITED")
	if r := ask("user9@example.com", "198.51.100.2"); r.StatusCode != http.StatusAccepted {
		t.Errorf("another IP: got %d", r.StatusCode)
	}
	// Password resets share the budget.
	wantError(t, h.browser().mlJSON("/account/password/reset", mlBody{"email": "ann@example.com"}, from("192.0.2.9")), http.StatusTooManyRequests, "RATE_LIMITED")
	h.flush()
	if n := h.smtp.Received(); n != 11 {
		t.Errorf("SMTP server received %d messages; want 11", n)
	}
	// An hour later the address may be mailed again.
	h.clock.Advance(time.Hour)
	if r := ask("ann@example.com", "203.0.113.99"); r.StatusCode != http.StatusAccepted {
		t.Errorf("after the window: got %d", r.StatusCode)
	}
}

// TestEmailDevelopmentSender: the log sender writes the link to the log,
// which is its purpose; no other log line carries a token.
func TestEmailDevelopmentSender(t *testing.T) {
	t.Parallel()
	var buf mlLogBuf
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := newMailHarness(t, mailSetup{Email: true, Sender: mail.NewLogSender(log), Log: log})
	r := h.browser().mlJSON("/login/email", mlBody{"email": "ann@example.com"}, nil)
	if r.StatusCode != http.StatusAccepted {
		t.Fatalf("got %d", r.StatusCode)
	}
	h.flush()
	var link string
	for l := range strings.SplitSeq(buf.String(), "\n") {
		if strings.Contains(l, "development sender") {
			_, after, _ := strings.Cut(l, "link=")
			v := strings.Fields(after)[0]
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			link = strings.TrimPrefix(v, h.url)
		}
	}
	if link == "" {
		t.Fatalf("no link in the log:\n%s", buf.String())
	}
	b := h.browser()
	b.mlFollow(link)
	b.mlSignup("bob@example.com", mlPassword) // a confirmation through the log too
	h.flush()
	token := mlURL(t, link).Query().Get("token")
	for l := range strings.SplitSeq(buf.String(), "\n") {
		if strings.Contains(l, token) && !strings.Contains(l, "development sender") {
			t.Errorf("a log line other than the development sender's holds the token: %s", l)
		}
	}
}

// TestEmailSendFailure: a failing SMTP server changes nothing in the
// answer; the failure is logged without the link.
func TestEmailSendFailure(t *testing.T) {
	t.Parallel()
	var buf mlLogBuf
	log := slog.New(slog.NewTextHandler(&buf, nil))
	dead, err := mail.NewSMTP(mail.SMTPConfig{Host: "127.0.0.1", Port: 1, TLS: mail.TLSNone, From: "login@example.com", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	h := newMailHarness(t, mailSetup{Email: true, Sender: dead, Log: log})
	if r := h.browser().mlJSON("/login/email", mlBody{"email": "ann@example.com"}, nil); r.StatusCode != http.StatusAccepted {
		t.Errorf("got %d; want 202", r.StatusCode)
	}
	h.flush()
	out := buf.String()
	if !strings.Contains(out, "email not sent") || strings.Contains(out, "token=") {
		t.Errorf("log: %s", out)
	}
}

type mlLogBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *mlLogBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *mlLogBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
