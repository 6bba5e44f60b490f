package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/webauthn/webauthntest"
)

// htmlTag is a start tag of a page: its lower-cased name and attributes,
// and for <script>, what is between it and </script>.
type htmlTag struct {
	name  string
	attrs map[string]string
	text  string
}

// scanTags is a small tokenizer for the broker's own (well-formed) pages:
// it returns every start tag with its attributes, skipping comments,
// doctype and end tags, and the raw text of <script> and <style>.
func scanTags(t *testing.T, page string) []htmlTag {
	t.Helper()
	var tags []htmlTag
	s := page
	for {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			return tags
		}
		s = s[i+1:]
		switch {
		case strings.HasPrefix(s, "!--"):
			end := strings.Index(s, "-->")
			if end < 0 {
				t.Fatalf("unterminated comment in %q", page)
			}
			s = s[end+3:]
			continue
		case strings.HasPrefix(s, "!"), strings.HasPrefix(s, "/"):
			end := strings.IndexByte(s, '>')
			if end < 0 {
				t.Fatalf("unterminated tag in %q", page)
			}
			s = s[end+1:]
			continue
		}
		n := 0
		for n < len(s) && (s[n] >= 'a' && s[n] <= 'z' || s[n] >= 'A' && s[n] <= 'Z' || s[n] >= '0' && s[n] <= '9' || s[n] == '-') {
			n++
		}
		if n == 0 {
			continue // a "<" in text (escaped pages have none)
		}
		tag := htmlTag{name: strings.ToLower(s[:n]), attrs: map[string]string{}}
		s = s[n:]
		// Attributes: name[=value], value bare or quoted.
		for {
			s = strings.TrimLeft(s, " \t\r\n/")
			if s == "" {
				t.Fatalf("unterminated <%s> in %q", tag.name, page)
			}
			if s[0] == '>' {
				s = s[1:]
				break
			}
			k := strings.IndexAny(s, " \t\r\n=>/")
			if k < 0 {
				k = len(s)
			}
			name := strings.ToLower(s[:k])
			s = strings.TrimLeft(s[k:], " \t\r\n")
			val := ""
			if strings.HasPrefix(s, "=") {
				s = strings.TrimLeft(s[1:], " \t\r\n")
				if s != "" && (s[0] == '"' || s[0] == '\'') {
					end := strings.IndexByte(s[1:], s[0])
					if end < 0 {
						t.Fatalf("unterminated attribute %s in %q", name, page)
					}
					val, s = s[1:1+end], s[2+end:]
				} else {
					end := strings.IndexAny(s, " \t\r\n>")
					if end < 0 {
						end = len(s)
					}
					val, s = s[:end], s[end:]
				}
			}
			tag.attrs[name] = val
		}
		if tag.name == "script" || tag.name == "style" {
			end := strings.Index(strings.ToLower(s), "</"+tag.name)
			if end < 0 {
				t.Fatalf("unterminated <%s> in %q", tag.name, page)
			}
			tag.text, s = s[:end], s[end:]
		}
		tags = append(tags, tag)
	}
}

// checkPage checks an HTML answer: the headers every page carries (a
// Content-Security-Policy that allows no inline script or style and no
// framing, Referrer-Policy, nosniff, no-store) and a body whose scripts
// and styles all come from files (no inline <script> or <style>, no on*
// handler, no style attribute, no javascript: URL), so that the policy
// breaks nothing.
func checkPage(t *testing.T, what string, r *response) {
	t.Helper()
	h := r.Header
	csp := h.Get("Content-Security-Policy")
	directives := map[string]string{}
	for d := range strings.SplitSeq(csp, ";") {
		name, val, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = val
	}
	if strings.Contains(csp, "unsafe-") {
		t.Errorf("%s: Content-Security-Policy %q allows unsafe sources", what, csp)
	}
	if directives["script-src"] != "'self'" && !(directives["script-src"] == "" && directives["default-src"] == "'self'") {
		t.Errorf("%s: Content-Security-Policy %q: scripts not limited to 'self'", what, csp)
	}
	if directives["frame-ancestors"] != "'none'" {
		t.Errorf("%s: Content-Security-Policy %q lacks frame-ancestors 'none'", what, csp)
	}
	if directives["object-src"] == "" && directives["default-src"] != "'self'" && directives["default-src"] != "'none'" {
		t.Errorf("%s: Content-Security-Policy %q: no default-src", what, csp)
	}
	if directives["base-uri"] != "'none'" && directives["base-uri"] != "'self'" {
		t.Errorf("%s: Content-Security-Policy %q: base-uri unrestricted", what, csp)
	}
	if rp := h.Get("Referrer-Policy"); rp != "no-referrer" && rp != "same-origin" && rp != "strict-origin" && rp != "strict-origin-when-cross-origin" {
		t.Errorf("%s: Referrer-Policy %q", what, rp)
	}
	if got := h.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("%s: X-Content-Type-Options %q; want nosniff", what, got)
	}
	if got := h.Get("X-Frame-Options"); got != "DENY" {
		t.Errorf("%s: X-Frame-Options %q; want DENY", what, got)
	}
	if cc := h.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Errorf("%s: Cache-Control %q; want no-store", what, cc)
	}
	for _, tag := range scanTags(t, r.Body()) {
		switch tag.name {
		case "script":
			if tag.attrs["src"] == "" || strings.TrimSpace(tag.text) != "" {
				t.Errorf("%s: inline <script> %q", what, tag.text)
			}
			if src := tag.attrs["src"]; !strings.HasPrefix(src, "/assets/") {
				t.Errorf("%s: script from %q, not the broker's assets", what, src)
			}
		case "style":
			t.Errorf("%s: inline <style> %q", what, tag.text)
		}
		for k, v := range tag.attrs {
			if strings.HasPrefix(k, "on") {
				t.Errorf("%s: <%s %s=%q>: inline event handler", what, tag.name, k, v)
			}
			if k == "style" {
				t.Errorf("%s: <%s style=%q>: inline style", what, tag.name, v)
			}
			if strings.HasPrefix(strings.ToLower(strings.TrimSpace(v)), "javascript:") {
				t.Errorf("%s: <%s %s=%q>: javascript: URL", what, tag.name, k, v)
			}
		}
	}
}

// TestPageSecurityHeaders renders every page of a broker with every
// feature on (login with each part, account with passkeys and password,
// reset and confirmation pages, error pages) and checks each HTML answer
// with checkPage, and that JSON answers with account data are no-store.
func TestPageSecurityHeaders(t *testing.T) {
	t.Parallel()
	h := newFullHarness(t, fullSetup{})
	b := h.browser()
	if r := b.mlJSON("/signup/password", mlBody{"email": ownerEmail, "password": ownerPassword}, nil); r.StatusCode != http.StatusCreated {
		t.Fatalf("sign up: %d %s", r.StatusCode, r.body)
	}
	a := webauthntest.New(h.url)
	_, opts, state := b.pkOptions("/webauthn/register/options", map[string]any{})
	cred, _, err := a.Create(opts)
	if err != nil {
		t.Fatal(err)
	}
	if r := b.pkSend(http.MethodPost, "/webauthn/register/verify", pkWithState(t, cred, state, map[string]any{"name": `<script>alert("x")</script>`}), nil); r.StatusCode != http.StatusCreated {
		t.Fatalf("add passkey: %d %s", r.StatusCode, r.body)
	}
	// A confirmation link for the owner's address, to see its page done.
	token := strings.Repeat("B", 43)
	sum := sha256.Sum256([]byte(token))
	if err := h.store.CreateVerificationToken(context.Background(), storage.VerificationToken{
		Identifier: "verify:" + ownerEmail, TokenHash: hex.EncodeToString(sum[:]),
		Expires: h.clock.Now().Add(time.Hour), CreatedAt: h.clock.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	anon := h.browser()
	linkToken := strings.Repeat("A", 43)
	form := func(b *browser, path string, v url.Values) *response {
		return b.mlForm(path, v, nil)
	}

	type page struct {
		what   string
		r      *response
		status int
	}
	pages := []page{
		{"login", anon.get("/login", nil), 200},
		{"login with redirect_to", anon.get("/login?redirect_to="+url.QueryEscape(`"><script>alert(1)</script>`), nil), 200},
		{"login reauth", b.get("/login?reauth=1&redirect_to=%2Faccount", nil), 200},
		{"login sent", anon.get("/login?sent=1", nil), 200},
		{"account", b.get("/account", nil), 200},
		{"reset request", anon.get("/account/password/reset", nil), 200},
		{"reset sent", anon.get("/account/password/reset?sent=1", nil), 200},
		{"reset choose", anon.get("/account/password/reset?token="+linkToken+"&email="+url.QueryEscape(ownerEmail), nil), 200},
		{"reset weak password", form(anon, "/account/password/reset/confirm", url.Values{"token": {linkToken}, "email": {ownerEmail}, "new_password": {"password"}}), 422},
		{"confirm", anon.get("/signup/password/verify?token="+token+"&email="+url.QueryEscape(ownerEmail), nil), 200},
		{"confirm done", form(anon, "/signup/password/verify", url.Values{"token": {token}, "email": {ownerEmail}}), 200},
		{"error 400", anon.get("/login/email/callback?token=x&email=a%40example.com", nil), 400},
		{"error 400 form", form(anon, "/login/password", url.Values{"email": {ownerEmail}, "password": {"wrong"}}), 400},
		{"error 401", anon.do(http.MethodPost, "/link/github", nil, htmlAccept), 401},
		{"error 403", anon.do(http.MethodPost, "/login/email", strings.NewReader("email=a%40example.com"),
			merge(htmlAccept, crossSite, map[string]string{"Content-Type": ctForm})), 403},
		{"error 404", anon.get("/nope", nil), 404},
		{"error 404 provider", anon.get("/login/nope", nil), 404},
		{"error 405", anon.do(http.MethodDelete, "/login", nil, htmlAccept), 405},
		{"error 413", anon.do(http.MethodPost, "/login/email", strings.NewReader("email="+strings.Repeat("a", 70_000)),
			merge(htmlAccept, map[string]string{"Content-Type": ctForm})), 413},
		{"error 415", anon.do(http.MethodPost, "/login/email", strings.NewReader("email"), merge(htmlAccept, map[string]string{"Content-Type": "text/plain"})), 415},
		{"error 422", form(anon, "/signup/password", url.Values{"email": {"new@example.com"}, "password": {"short"}}), 422},
	}
	for _, p := range pages {
		if p.r.StatusCode != p.status {
			t.Errorf("%s: got %d; want %d (body %.200q)", p.what, p.r.StatusCode, p.status, p.r.body)
		}
		if ct := p.r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("%s: Content-Type %q; want a page", p.what, ct)
			continue
		}
		checkPage(t, p.what, p.r)
	}
	if body := pages[4].r.Body(); !strings.Contains(body, "&lt;script&gt;") || strings.Contains(body, `<script>alert`) {
		t.Errorf("account page: the passkey's name is not escaped")
	}
	if strings.Contains(pages[1].r.Body(), "<script>alert") {
		t.Errorf("login page: redirect_to reflected unescaped")
	}

	// Redirects with an HTML body (net/http writes one for GET) carry the
	// page headers too.
	for _, r := range []*response{anon.get("/account", nil), anon.get("/", nil), b.get("/login/github", nil)} {
		if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "text/html") {
			checkPage(t, "redirect "+r.Request.URL.Path, r)
		}
	}

	// JSON answers that show account data are never stored.
	for _, path := range []string{"/session", "/sessions", "/webauthn/credentials"} {
		r := b.getJSON(path)
		if r.StatusCode != http.StatusOK || !strings.Contains(r.Header.Get("Cache-Control"), "no-store") {
			t.Errorf("GET %s: %d, Cache-Control %q; want 200 no-store", path, r.StatusCode, r.Header.Get("Cache-Control"))
		}
	}
	if r := b.mlLogin(ownerEmail, ownerPassword, nil); r.StatusCode != http.StatusOK || !strings.Contains(r.Header.Get("Cache-Control"), "no-store") {
		t.Errorf("password login: %d, Cache-Control %q; want no-store", r.StatusCode, r.Header.Get("Cache-Control"))
	}
}

// recBrowser is a browser for a harness without a listener: requests go to
// the handler (harness.serve) for URLs on the public URL, and to the
// network otherwise (the fake GitHub), with one cookie jar.
type recBrowser struct {
	t   *testing.T
	h   *harness
	jar *cookiejar.Jar
}

func (b *recBrowser) do(method, target string, body io.Reader, hdr map[string]string) *response {
	b.t.Helper()
	if !strings.HasPrefix(target, "http") {
		target = b.h.url + target
	}
	var req *http.Request
	if strings.HasPrefix(target, b.h.url+"/") {
		req = httptest.NewRequest(method, target, body)
	} else {
		var err error
		if req, err = http.NewRequest(method, target, body); err != nil {
			b.t.Fatal(err)
		}
	}
	if method == http.MethodGet {
		req.Header.Set("Accept", "text/html,*/*;q=0.8")
	} else {
		req.Header.Set("Origin", b.h.url)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	for _, c := range b.jar.Cookies(req.URL) {
		req.AddCookie(c)
	}
	var r *response
	if strings.HasPrefix(target, b.h.url+"/") {
		r = b.h.serve(req)
	} else {
		c := *b.h.github.Client()
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		res, err := c.Do(req)
		if err != nil {
			b.t.Fatal(err)
		}
		data, _ := io.ReadAll(res.Body)
		res.Body.Close()
		r = &response{Response: res, body: data}
	}
	b.jar.SetCookies(req.URL, r.Cookies())
	return r
}

// cookieTour signs in and out every way the broker offers and returns
// every Set-Cookie it answered with (session, blank and flow cookies).
func cookieTour(t *testing.T, h *harness, do func(method, target string, body io.Reader, hdr map[string]string) *response) []string {
	t.Helper()
	var all []string
	send := func(method, target string, body string, hdr map[string]string) *response {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		r := do(method, target, rd, hdr)
		all = append(all, r.Header.Values("Set-Cookie")...)
		return r
	}
	js := map[string]string{"Content-Type": ctJSON, "Accept": ctJSON}
	want := func(r *response, status int) *response {
		t.Helper()
		if r.StatusCode != status {
			t.Fatalf("%s %s: got %d; want %d (body %.300q)", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.body)
		}
		return r
	}
	// Passwords: sign-up (JSON), log out, log in (form), an invalid cookie.
	want(send("POST", "/signup/password", `{"email":"tour@example.com","password":"`+ownerPassword+`"}`, js), 201)
	want(send("POST", "/logout", "", map[string]string{"Accept": ctJSON}), 204)
	want(send("POST", "/login/password", "email=tour%40example.com&password="+url.QueryEscape(ownerPassword),
		map[string]string{"Content-Type": ctForm}), 303)
	want(send("GET", "/session", "", map[string]string{"Accept": ctJSON, "Cookie": "auth_session=garbage"}), 401)
	// GitHub: the flow cookie, the provider, the callback (flow cookie
	// deleted, session set).
	r := want(send("GET", "/login/github", "", nil), 302)
	r = want(send("GET", r.Header.Get("Location"), "", nil), 302)
	want(send("GET", r.Header.Get("Location"), "", nil), 302)
	// Passkeys: sign-up and login, each with its flow cookie.
	a := webauthntest.New(h.url)
	r = want(send("POST", "/webauthn/register/options", `{"name":"tourist"}`, js), 200)
	cred, _, err := a.Create(r.body)
	if err != nil {
		t.Fatal(err)
	}
	want(send("POST", "/webauthn/register/verify", string(pkWithState(t, cred, pkDecode[struct{ State string }](t, r).State, nil)), js), 201)
	r = want(send("POST", "/webauthn/login/options", `{}`, js), 200)
	assertion, err := a.Get(r.body)
	if err != nil {
		t.Fatal(err)
	}
	want(send("POST", "/webauthn/login/verify", string(pkWithState(t, assertion, pkDecode[struct{ State string }](t, r).State, nil)), js), 200)
	// An email link.
	token := strings.Repeat("C", 43)
	sum := sha256.Sum256([]byte(token))
	if err := h.store.CreateVerificationToken(context.Background(), storage.VerificationToken{
		Identifier: "tour@example.com", TokenHash: hex.EncodeToString(sum[:]), Expires: h.clock.Now().Add(time.Hour), CreatedAt: h.clock.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	want(send("GET", "/login/email/callback?token="+token+"&email=tour%40example.com", "", nil), 302)
	// Ending sessions.
	want(send("POST", "/sessions/revoke-all", "", map[string]string{"Accept": ctJSON}), 204)
	return all
}

// TestCookieAttributes: every cookie the broker sets (session, the blank
// one that clears it, flow cookies and their deletions) is HttpOnly and
// SameSite=Lax with Path=/, and Secure exactly when the public URL is
// https (then flow cookies carry the __Host- prefix too). The harness is
// wired like cmd/broker's buildApp.
func TestCookieAttributes(t *testing.T) {
	for _, public := range []string{"", "https://broker.example"} {
		secure := public != ""
		name := "http"
		if secure {
			name = "https"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newFullHarness(t, fullSetup{PublicURL: public})
			var do func(method, target string, body io.Reader, hdr map[string]string) *response
			if secure {
				jar, _ := cookiejar.New(nil)
				do = (&recBrowser{t: t, h: h, jar: jar}).do
			} else {
				do = h.browser().do
			}
			all := cookieTour(t, h, do)
			kinds := map[string]int{}
			for _, raw := range all {
				c, err := http.ParseSetCookie(raw)
				if err != nil {
					t.Errorf("Set-Cookie %q: %v", raw, err)
					continue
				}
				kind := "flow"
				switch {
				case c.Name == "auth_session" && c.Value == "":
					kind = "blank session"
				case c.Name == "auth_session":
					kind = "session"
				case c.MaxAge < 0:
					kind = "flow deletion"
				}
				kinds[kind]++
				if !c.HttpOnly {
					t.Errorf("%s cookie %q: not HttpOnly", kind, raw)
				}
				if c.SameSite != http.SameSiteLaxMode {
					t.Errorf("%s cookie %q: SameSite %v; want Lax", kind, raw, c.SameSite)
				}
				if c.Secure != secure {
					t.Errorf("%s cookie %q: Secure %v; want %v", kind, raw, c.Secure, secure)
				}
				if c.Path != "/" {
					t.Errorf("%s cookie %q: Path %q; want /", kind, raw, c.Path)
				}
				if c.Domain != "" {
					t.Errorf("%s cookie %q: Domain %q; want a host-only cookie", kind, raw, c.Domain)
				}
				if strings.HasPrefix(kind, "flow") && secure != strings.HasPrefix(c.Name, "__Host-") {
					t.Errorf("%s cookie %q: __Host- prefix %v; want %v", kind, raw, !secure, secure)
				}
			}
			for _, k := range []string{"session", "blank session", "flow", "flow deletion"} {
				if kinds[k] == 0 {
					t.Errorf("no %s cookie seen in %q", k, all)
				}
			}
		})
	}
}
