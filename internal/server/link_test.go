package server_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/providertest"
)

// passwordUser creates a user holding email verified, with an email key
// and password, directly through auth.
func passwordUser(t *testing.T, h *harness, email string) string {
	t.Helper()
	pw := "correct horse battery staple"
	u, err := h.auth.CreateUser(context.Background(), auth.CreateUserOptions{
		Key:        &auth.KeySpec{ProviderID: "email", ProviderUserID: email, Password: &pw},
		Attributes: map[string]any{"email": email, "email_verified": true},
	})
	if err != nil {
		t.Fatalf("create user: %v", err)
	}
	return u.ID
}

// TestLoginVerifiedEmailOwned: a new provider identity whose verified email
// belongs to another user is linked to it only with link_verified_email.
func TestLoginVerifiedEmailOwned(t *testing.T) {
	t.Parallel()
	for _, link := range []bool{false, true} {
		name := "link_verified_email=false"
		if link {
			name = "link_verified_email=true"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, setup{GitHub: &githubSetup{
				User:          providertest.GitHubUser{ID: 7, Login: "ann"},
				providerRules: providerRules{LinkVerifiedEmail: link},
			}})
			owner := passwordUser(t, h, "ann@example.com")
			b := h.browser()
			cb := b.startLogin("/login/github")
			if !link {
				r := b.get(cb.String(), jsonAccept)
				wantError(t, r, http.StatusConflict, "CONFLICT")
				wantNoSession(t, r)
				if got := h.keysOf(owner); !slices.Equal(got, []string{"email:ann@example.com"}) {
					t.Errorf("owner's keys: got %v; want only the email key", got)
				}
				h.wantUsers(1)
				// A browser gets a page that says what to do.
				p := b.get(b.startLogin("/login/github").String(), nil)
				wantErrorPage(t, p, http.StatusConflict, "CONFLICT")
				h.wantUsers(1)
				return
			}
			r := b.get(cb.String(), nil)
			if r.StatusCode != http.StatusFound || r.cookie("auth_session") == nil {
				t.Fatalf("callback: got %d (body %q); want 302 with a session", r.StatusCode, r.body)
			}
			if got := b.me(); got != owner {
				t.Errorf("signed in as %s; want the email's owner %s", got, owner)
			}
			if got := h.keysOf(owner); !slices.Equal(got, []string{"email:ann@example.com", "github:7"}) {
				t.Errorf("owner's keys: got %v; want the email key and github:7", got)
			}
			h.wantUsers(1)
		})
	}
}

// TestLoginUnverifiedEmailNeverLinks: an email the provider does not vouch
// for neither links nor blocks: a new user is created.
func TestLoginUnverifiedEmailNeverLinks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{OIDC: []oidcSetup{{
		Name:          "dex",
		Fake:          providertest.OIDCOptions{User: providertest.OIDCUser{Subject: "u1", Email: "ann@example.com", EmailVerified: false}},
		providerRules: providerRules{LinkVerifiedEmail: true},
	}}})
	owner := passwordUser(t, h, "ann@example.com")
	b := h.browser()
	b.login("dex", "")
	if got := b.me(); got == owner {
		t.Errorf("an unverified email was linked to the verified owner")
	}
	if got := h.keysOf(owner); !slices.Equal(got, []string{"email:ann@example.com"}) {
		t.Errorf("owner's keys: got %v", got)
	}
	h.wantUsers(2)
}

func linkSetup() setup { return linkSetupOn(false) }

func linkSetupOn(postgres bool) setup {
	return setup{
		Postgres: postgres,
		GitHub:   &githubSetup{User: providertest.GitHubUser{ID: 11, Login: "lin"}},
		OIDC: []oidcSetup{{Name: "dex", Fake: providertest.OIDCOptions{User: providertest.OIDCUser{
			Subject: "dex-lin", Email: "lin.dex@example.com", EmailVerified: true,
		}}}},
	}
}

// TestLinkProvider: POST /link/{provider} by a recently signed-in user adds
// that provider's key to the user.
func TestLinkProvider(t *testing.T) {
	t.Parallel()
	t.Run("form", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, linkSetup())
		b := h.browser()
		b.login("github", "")
		me := b.me()
		r := b.do(http.MethodPost, "/link/dex", nil, map[string]string{
			"Accept": "text/html", "Content-Type": "application/x-www-form-urlencoded",
		})
		if r.StatusCode != http.StatusSeeOther {
			t.Fatalf("POST /link/dex: got %d; want 303 to the provider (body %q)", r.StatusCode, r.body)
		}
		cb := b.toProvider(r)
		done := b.get(cb.String(), nil)
		if done.StatusCode != http.StatusFound || done.location(t).Path != "/account" {
			t.Fatalf("link callback: got %d to %q; want 302 to /account (body %q)", done.StatusCode, done.Header.Get("Location"), done.body)
		}
		if got := h.keysOf(me); !slices.Equal(got, []string{"dex:dex-lin", "github:11"}) {
			t.Errorf("keys after link: got %v; want [dex:dex-lin github:11]", got)
		}
		h.wantUsers(1)
		// The linked provider now signs in the same user.
		b2 := h.browser()
		b2.login("dex", "")
		if got := b2.me(); got != me {
			t.Errorf("login with the linked provider: user %s; want %s", got, me)
		}
	})
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, linkSetup())
		b := h.browser()
		b.login("github", "")
		me := b.me()
		r := b.postJSON("/link/dex", nil)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("POST /link/dex (JSON): got %d; want 200 (body %q)", r.StatusCode, r.body)
		}
		target, _ := r.json(t)["redirect"].(string)
		if target == "" {
			t.Fatalf("POST /link/dex (JSON): no redirect in %q", r.body)
		}
		pr := b.get(target, nil)
		cb := pr.location(t)
		done := b.get(cb.String(), nil)
		if done.StatusCode != http.StatusFound {
			t.Fatalf("link callback: got %d (body %q)", done.StatusCode, done.body)
		}
		if got := h.keysOf(me); !slices.Equal(got, []string{"dex:dex-lin", "github:11"}) {
			t.Errorf("keys after link: got %v", got)
		}
	})
	t.Run("identity owned by another user", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, linkSetup())
		other := h.browser()
		other.login("dex", "")
		otherID := other.me()
		b := h.browser()
		b.login("github", "")
		me := b.me()
		r := b.postJSON("/link/dex", nil)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("POST /link/dex: got %d (body %q)", r.StatusCode, r.body)
		}
		target, _ := r.json(t)["redirect"].(string)
		cb := b.get(target, nil).location(t)
		done := b.get(cb.String(), jsonAccept)
		wantError(t, done, http.StatusConflict, "CONFLICT")
		if got := h.keysOf(me); !slices.Equal(got, []string{"github:11"}) {
			t.Errorf("keys of the linking user: got %v; want only github:11", got)
		}
		if got := h.keysOf(otherID); !slices.Equal(got, []string{"dex:dex-lin"}) {
			t.Errorf("keys of the owner: got %v; want only dex:dex-lin", got)
		}
		h.wantUsers(2)
	})
	t.Run("stale session", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, linkSetup())
		b := h.browser()
		b.login("github", "")
		me := b.me()
		h.clock.Advance(auth.RecentAuthWindow + time.Minute)
		wantError(t, b.postJSON("/link/dex", nil), http.StatusForbidden, "AUTH_REAUTHENTICATION_REQUIRED")
		// A page is sent through a re-authenticating login instead.
		r := b.do(http.MethodPost, "/link/dex", nil, map[string]string{"Accept": "text/html", "Content-Type": "application/x-www-form-urlencoded"})
		if r.StatusCode != http.StatusSeeOther || r.location(t).Path != "/login" || r.location(t).Query().Get("reauth") != "1" {
			t.Errorf("POST /link/dex (form, stale): got %d to %q; want 303 to /login?reauth=1", r.StatusCode, r.Header.Get("Location"))
		}
		if got := h.keysOf(me); !slices.Equal(got, []string{"github:11"}) {
			t.Errorf("keys: got %v", got)
		}
	})
	t.Run("signed out", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, linkSetup())
		wantError(t, h.browser().postJSON("/link/dex", nil), http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
	})
	t.Run("unknown provider", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, linkSetup())
		b := h.browser()
		b.login("github", "")
		wantError(t, b.postJSON("/link/nope", nil), http.StatusNotFound, "NOT_FOUND")
	})
	t.Run("cross-site", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, linkSetup())
		b := h.browser()
		b.login("github", "")
		me := b.me()
		for _, hdr := range []map[string]string{
			{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
			{"Origin": "", "Sec-Fetch-Site": "cross-site"},
			{"Origin": "https://evilexample.com", "Sec-Fetch-Site": "cross-site"},
		} {
			r := b.postJSON("/link/dex", hdr)
			wantError(t, r, http.StatusForbidden, "AUTH_INVALID_REQUEST")
			if len(b.flowCookies()) != 0 {
				t.Errorf("cross-site POST /link/dex (%v) started a flow", hdr)
			}
		}
		if got := h.keysOf(me); !slices.Equal(got, []string{"github:11"}) {
			t.Errorf("keys: got %v", got)
		}
	})
	t.Run("signed out before the callback", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, linkSetup())
		b := h.browser()
		b.login("github", "")
		me := b.me()
		r := b.postJSON("/link/dex", nil)
		target, _ := r.json(t)["redirect"].(string)
		cb := b.get(target, nil).location(t)
		if r := b.postJSON("/logout", nil); r.StatusCode != http.StatusNoContent {
			t.Fatalf("logout: got %d", r.StatusCode)
		}
		done := b.get(cb.String(), jsonAccept)
		wantError(t, done, http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
		if got := h.keysOf(me); !slices.Equal(got, []string{"github:11"}) {
			t.Errorf("keys: got %v", got)
		}
		h.wantUsers(1)
	})
}

// TestReauthenticate: GET /login/{provider}?reauth=1 with an old session
// re-authenticates that session, after which sensitive actions work.
func TestReauthenticate(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, pg bool) {
		h := newHarness(t, linkSetupOn(pg))
		b := h.browser()
		b.login("dex", "")
		me := b.me()
		token := b.session()
		h.clock.Advance(auth.RecentAuthWindow + time.Minute)
		wantError(t, b.postJSON("/link/github", nil), http.StatusForbidden, "AUTH_REAUTHENTICATION_REQUIRED")

		// The reauth login page keeps the reauth flag on its provider links.
		page := b.get("/login?reauth=1&redirect_to=%2Faccount", nil)
		if !strings.Contains(page.Body(), `/login/dex?reauth=1&amp;redirect_to=%2Faccount`) && !strings.Contains(page.Body(), `/login/dex?redirect_to=%2Faccount&amp;reauth=1`) {
			t.Errorf("reauth login page lacks a reauth link for dex: %s", page.body)
		}

		cb := b.startLogin("/login/dex?reauth=1&redirect_to=%2Faccount")
		r := b.get(cb.String(), nil)
		if r.StatusCode != http.StatusFound || r.location(t).Path != "/account" {
			t.Fatalf("reauth callback: got %d to %q (body %q); want 302 to /account", r.StatusCode, r.Header.Get("Location"), r.body)
		}
		if b.session() != token {
			t.Errorf("re-authentication replaced the session; want the same session re-authenticated")
		}
		h.wantUsers(1)

		lr := b.postJSON("/link/github", nil)
		if lr.StatusCode != http.StatusOK {
			t.Fatalf("POST /link/github after reauth: got %d (body %q); want 200", lr.StatusCode, lr.body)
		}
		target, _ := lr.json(t)["redirect"].(string)
		cb = b.get(target, nil).location(t)
		if done := b.get(cb.String(), nil); done.StatusCode != http.StatusFound {
			t.Fatalf("link callback: got %d (body %q)", done.StatusCode, done.body)
		}
		if got := h.keysOf(me); !slices.Equal(got, []string{"dex:dex-lin", "github:11"}) {
			t.Errorf("keys: got %v", got)
		}
	})
}

// TestReauthenticateAsSomeoneElse: a re-authentication with an identity
// that does not belong to the session's user is refused.
func TestReauthenticateAsSomeoneElse(t *testing.T) {
	t.Parallel()
	h := newHarness(t, linkSetup())
	b := h.browser()
	b.login("github", "")
	h.clock.Advance(auth.RecentAuthWindow + time.Minute)
	cb := b.startLogin("/login/dex?reauth=1") // dex-lin is nobody's yet
	wantError(t, b.get(cb.String(), jsonAccept), http.StatusForbidden, "FORBIDDEN")
	wantError(t, b.postJSON("/link/dex", nil), http.StatusForbidden, "AUTH_REAUTHENTICATION_REQUIRED")
	h.wantUsers(1)
}
