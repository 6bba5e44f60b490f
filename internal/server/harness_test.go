package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/providertest"
	"github.com/brokerauth/broker/internal/rules"
	"github.com/brokerauth/broker/internal/seal"
	"github.com/brokerauth/broker/internal/server"
	"github.com/brokerauth/broker/internal/testclock"
	"github.com/brokerauth/broker/providers"
	"github.com/brokerauth/broker/providers/github"
	"github.com/brokerauth/broker/providers/oidc"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// sharedKeys are the OIDC fakes' signing keys, generated once for the
// whole package: an RSA 2048 key takes a while under -race. They are never
// changed after creation.
var sharedKeys = sync.OnceValue(func() *providertest.Keys {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return &providertest.Keys{RSA: rk, EC: ek}
})

// clock is a test clock shared by the broker (auth, flows, server,
// providers) and the OIDC fakes. It stands still until advanced.
type clock = testclock.Clock

func newClock() *clock { return testclock.New(time.Now().UTC()) }

// providerRules are the broker-side settings around a provider.
type providerRules struct {
	Allow             string
	Attributes        map[string]string
	LinkVerifiedEmail bool
}

type githubSetup struct {
	User providertest.GitHubUser
	providerRules
}

type oidcSetup struct {
	Name     string
	Fake     providertest.OIDCOptions
	Userinfo bool
	providerRules
}

// setup configures a harness. The zero value is a broker on SQLite with
// no providers.
type setup struct {
	Postgres        bool
	GitHub          *githubSetup
	OIDC            []oidcSetup
	Claims          map[string]string
	Access          []rules.Rule
	AllowedOrigins  []string
	ProviderTimeout time.Duration
	MaxBodyBytes    int64
	RedirectDefault string
	// ClaimsFunc replaces the compiled Claims (e.g. to make one panic).
	ClaimsFunc func(ctx context.Context, s *auth.Session) map[string]any
	// CacheSize turns on the session cache (auth.Options.CacheSize), with
	// an hour's TTL: only invalidations end a cached snapshot.
	CacheSize int
	// Passwords turns on passwords (server.Options.Passwords).
	Passwords bool
	// AccessKeys is server.Options.AccessKeys: the access rules see keys.
	AccessKeys bool
	// KeysDown, while true, makes the Auth's reads of a user's keys fail.
	KeysDown *atomic.Bool
}

// keysDownStore fails ListUserKeys while down is true.
type keysDownStore struct {
	storage.Store
	down *atomic.Bool
}

func (s keysDownStore) ListUserKeys(ctx context.Context, userID string) ([]storage.Key, error) {
	if s.down.Load() {
		return nil, errors.New("keys: database unreachable (test)")
	}
	return s.Store.ListUserKeys(ctx, userID)
}

// harness is a broker served on a loopback listener with its fakes.
type harness struct {
	t       testing.TB
	url     string // the public URL, http://127.0.0.1:port
	clock   *clock
	store   *sqlstore.Store
	auth    *auth.Auth
	srv     *server.Server
	metrics *server.Metrics
	github  *providertest.GitHub
	oidc    map[string]*providertest.OIDC
	http    *httptest.Server
}

// Default allowed origins of every harness.
const (
	appOrigin     = "https://app.example.com"
	allowedOrigin = "https://allowed.example"
)

func testLogger() *slog.Logger {
	if os.Getenv("BROKER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func randomKey(t testing.TB) []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// newHarness starts a broker configured by s.
func newHarness(t testing.TB, s setup) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	h := &harness{t: t, url: "http://" + ln.Addr().String(), clock: newClock(), oidc: map[string]*providertest.OIDC{}}
	if s.Postgres {
		h.store = storagetest.OpenPostgres(t)
	} else {
		h.store = storagetest.OpenSQLite(t)
	}
	origins := append([]string{appOrigin, allowedOrigin}, s.AllowedOrigins...)
	var authStore storage.Store = h.store
	if s.KeysDown != nil {
		authStore = keysDownStore{h.store, s.KeysDown}
	}
	h.auth, err = auth.New(authStore, auth.Options{
		Now:            h.clock.Now,
		Passwords:      auth.NewPasswordHasher(auth.Argon2Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}, 4),
		Origin:         h.url,
		AllowedOrigins: origins,
		CacheSize:      s.CacheSize,
		CacheTTL:       time.Hour,
	})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	cookieRing, err := seal.NewKeyring(randomKey(t))
	if err != nil {
		t.Fatal(err)
	}
	tokenRing, err := seal.NewKeyring(randomKey(t))
	if err != nil {
		t.Fatal(err)
	}
	flows := providersession.NewFlowStore(providersession.FlowOptions{Keyring: cookieRing, Consumed: h.store, Now: h.clock.Now})
	vault := providersession.NewTokenVault(tokenRing, h.store, h.clock.Now)
	log := testLogger()

	var provs []server.Provider
	add := func(id, name string, cfg providers.Config, client *http.Client, pr providerRules, path string) {
		t.Helper()
		p, err := cfg.Open(context.Background(), id, providers.Deps{HTTPClient: client, Logger: log, Now: h.clock.Now})
		if err != nil {
			t.Fatalf("open provider %s: %v", id, err)
		}
		if c, ok := p.(io.Closer); ok {
			t.Cleanup(func() { c.Close() })
		}
		ir, err := rules.CompileIdentity(pr.Allow, pr.Attributes, path)
		if err != nil {
			t.Fatalf("compile %s rules: %v", path, err)
		}
		provs = append(provs, server.Provider{
			ID: id, DisplayName: name, Provider: p, LinkVerifiedEmail: pr.LinkVerifiedEmail,
			Allow: ir.Allow,
			Attributes: func(ctx context.Context, id providers.Identity) map[string]any {
				attrs, _ := ir.Attributes(ctx, id)
				return attrs
			},
		})
	}
	if g := s.GitHub; g != nil {
		h.github = providertest.NewGitHub(t, g.User)
		add("github", "GitHub", github.Config{
			ClientID: h.github.ClientID, ClientSecret: h.github.ClientSecret,
			AuthURL: h.github.AuthURL(), TokenURL: h.github.TokenURL(), APIURL: h.github.APIURL(),
		}, h.github.Client(), g.providerRules, "providers.github")
	}
	for _, o := range s.OIDC {
		fo := o.Fake
		if fo.Keys == nil {
			fo.Keys = sharedKeys()
		}
		if fo.Now == nil {
			fo.Now = h.clock.Now
		}
		f := providertest.NewOIDC(t, fo)
		h.oidc[o.Name] = f
		add(o.Name, strings.ToUpper(o.Name[:1])+o.Name[1:], oidc.Config{
			Issuer: f.Issuer(), ClientID: f.ClientID, ClientSecret: f.ClientSecret, Userinfo: o.Userinfo,
		}, f.Client(), o.providerRules, "providers.oidc."+o.Name)
	}

	opts := server.Options{
		Auth:            h.auth,
		Store:           h.store,
		Log:             log,
		PublicURL:       h.url,
		RedirectDefault: s.RedirectDefault,
		MaxBodyBytes:    s.MaxBodyBytes,
		OriginAllowed:   func(o string) bool { return slices.Contains(origins, o) },
		Providers:       provs,
		Flows:           flows,
		Vault:           vault,
		ProviderTimeout: s.ProviderTimeout,
		Now:             h.clock.Now,
	}
	if s.Passwords {
		opts.Passwords = &server.PasswordOptions{}
	}
	h.metrics = server.NewMetrics()
	opts.Metrics = h.metrics
	opts.MetricsOnMainListener = true
	if len(s.Claims) > 0 {
		claims, err := rules.CompileClaims(s.Claims)
		if err != nil {
			t.Fatalf("compile claims: %v", err)
		}
		opts.Claims = func(ctx context.Context, sess *auth.Session) map[string]any {
			out, _ := claims.Eval(ctx, sess.User, nil, sess)
			return out
		}
	}
	if s.ClaimsFunc != nil {
		opts.Claims = s.ClaimsFunc
	}
	if len(s.Access) > 0 {
		access, err := rules.CompileAccess(s.Access)
		if err != nil {
			t.Fatalf("compile access: %v", err)
		}
		opts.Access = func(ctx context.Context, req server.AccessRequest) (bool, error) {
			ok, _, err := access.Decide(ctx, rules.AccessInput{
				User: req.Session.User, Keys: req.Keys, Session: req.Session, Claims: req.Claims,
				Host: req.Host, Path: req.Path, Method: req.Method,
			})
			return ok, err
		}
		opts.AccessKeys = s.AccessKeys
	}
	h.srv, err = server.New(opts)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	// The handler is set before Start, so the server never races with it.
	h.http = &httptest.Server{Listener: ln, Config: &http.Server{Handler: h.srv.Handler(), ReadHeaderTimeout: 10 * time.Second}}
	h.http.Start()
	t.Cleanup(h.http.Close)
	return h
}

// eachStore runs f on SQLite and on PostgreSQL, in parallel.
func eachStore(t *testing.T, f func(t *testing.T, postgres bool)) {
	t.Helper()
	for _, pg := range []bool{false, true} {
		name := "sqlite"
		if pg {
			name = "postgres"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, pg)
		})
	}
}

// users returns every user in the store.
func (h *harness) users() []string {
	h.t.Helper()
	us, err := h.store.ListUsers(context.Background(), "", 1000)
	if err != nil {
		h.t.Fatalf("list users: %v", err)
	}
	ids := make([]string, len(us))
	for i, u := range us {
		ids[i] = u.ID
	}
	return ids
}

func (h *harness) wantUsers(n int) {
	h.t.Helper()
	if got := h.users(); len(got) != n {
		h.t.Errorf("users in store: got %d (%v); want %d", len(got), got, n)
	}
}

// tokenRequests counts the code exchanges the fakes received.
func (h *harness) tokenRequests() int {
	n := 0
	if h.github != nil {
		for _, r := range h.github.Requests() {
			if r.Path == "/login/oauth/access_token" {
				n++
			}
		}
	}
	for _, f := range h.oidc {
		for _, r := range f.Requests() {
			if r.Path == "/token" {
				n++
			}
		}
	}
	return n
}

// keysOf returns the key ids of a user.
func (h *harness) keysOf(userID string) []string {
	h.t.Helper()
	ks, err := h.auth.GetAllUserKeys(context.Background(), userID)
	if err != nil {
		h.t.Fatalf("keys of %s: %v", userID, err)
	}
	ids := make([]string, len(ks))
	for i, k := range ks {
		ids[i] = k.ID
	}
	slices.Sort(ids)
	return ids
}

// sessionValid reports whether a session token still validates.
func (h *harness) sessionValid(token string) bool {
	h.t.Helper()
	_, err := h.auth.GetSession(context.Background(), token)
	return err == nil
}

// response is an HTTP answer with its body read.
type response struct {
	*http.Response
	body []byte
}

func (r *response) Body() string { return string(r.body) }

// json decodes the body as a JSON object.
func (r *response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object: %v", r.Request.Method, r.Request.URL, r.body, err)
	}
	return m
}

// location returns the resolved Location of a redirect.
func (r *response) location(t testing.TB) *url.URL {
	t.Helper()
	u, err := r.Location()
	if err != nil {
		t.Fatalf("%s %s: status %d, no Location: %v (body %q)", r.Request.Method, r.Request.URL, r.StatusCode, err, r.body)
	}
	return u
}

// cookie returns the Set-Cookie of name in the answer, or nil.
func (r *response) cookie(name string) *http.Cookie {
	for _, c := range r.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// browser is a user agent with a cookie jar. It does not follow redirects
// by itself; login helpers step through them as a browser would, so that
// tests can look at (and tamper with) each hop.
type browser struct {
	t   testing.TB
	h   *harness
	jar *cookiejar.Jar
	c   *http.Client
	ua  string
}

func (h *harness) browser() *browser {
	h.t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		h.t.Fatal(err)
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &browser{t: h.t, h: h, jar: jar, ua: "TestBrowser/1.0", c: &http.Client{
		Jar: jar, Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// abs resolves target against the public URL.
func (h *harness) abs(target string) string {
	if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") {
		return target
	}
	return h.url + target
}

// do sends one request. Headers in hdr are set as given ("" deletes).
// GET requests are browser navigations (Accept: text/html) unless hdr
// says otherwise; other methods come from a page of the broker (Origin
// and Sec-Fetch-Site: same-origin) unless hdr says otherwise.
func (b *browser) do(method, target string, body io.Reader, hdr map[string]string) *response {
	b.t.Helper()
	req, err := http.NewRequest(method, b.h.abs(target), body)
	if err != nil {
		b.t.Fatalf("new request: %v", err)
	}
	req.Header.Set("User-Agent", b.ua)
	if method == http.MethodGet {
		req.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	} else {
		req.Header.Set("Origin", b.h.url)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	return &response{Response: resp, body: data}
}

func (b *browser) get(target string, hdr map[string]string) *response {
	b.t.Helper()
	return b.do(http.MethodGet, target, nil, hdr)
}

// getJSON is a script's GET: Accept: application/json.
func (b *browser) getJSON(target string) *response {
	b.t.Helper()
	return b.get(target, map[string]string{"Accept": "application/json"})
}

// postJSON is a script's POST from the broker's own origin.
func (b *browser) postJSON(target string, hdr map[string]string) *response {
	b.t.Helper()
	all := map[string]string{"Accept": "application/json"}
	for k, v := range hdr {
		all[k] = v
	}
	return b.do(http.MethodPost, target, nil, all)
}

// navigate GETs target and follows every redirect, as a browser does, and
// returns the last answer; its Request.URL is where the browser landed.
func (b *browser) navigate(target string) *response {
	b.t.Helper()
	c := *b.c
	c.CheckRedirect = nil // the default: follow up to 10 redirects
	req, err := http.NewRequest(http.MethodGet, b.h.abs(target), nil)
	if err != nil {
		b.t.Fatalf("new request: %v", err)
	}
	req.Header.Set("User-Agent", b.ua)
	req.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	resp, err := c.Do(req)
	if err != nil {
		b.t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("GET %s: read body: %v", target, err)
	}
	return &response{Response: resp, body: data}
}

// toProvider follows a broker answer that sends the browser to a provider
// (302 or 303) through the provider's authorization endpoint, and returns
// the callback URL the provider redirected back to (not visited).
func (b *browser) toProvider(r *response) *url.URL {
	b.t.Helper()
	if r.StatusCode != http.StatusFound && r.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("%s %s: got status %d; want a redirect to the provider (body %q)", r.Request.Method, r.Request.URL, r.StatusCode, r.body)
	}
	prov := r.location(b.t)
	if strings.HasPrefix(prov.String(), b.h.url+"/") {
		b.t.Fatalf("%s %s: redirected to %s, on the broker; want the provider", r.Request.Method, r.Request.URL, prov)
	}
	pr := b.get(prov.String(), nil)
	if pr.StatusCode != http.StatusFound {
		b.t.Fatalf("provider %s: got status %d; want 302 (body %q)", prov, pr.StatusCode, pr.body)
	}
	cb := pr.location(b.t)
	if !strings.HasPrefix(cb.String(), b.h.url+"/login/") {
		b.t.Fatalf("provider redirected to %s; want the broker's callback", cb)
	}
	return cb
}

// startLogin GETs path (/login/{provider}?…) and goes through the provider,
// returning the callback URL.
func (b *browser) startLogin(path string) *url.URL {
	b.t.Helper()
	return b.toProvider(b.get(path, nil))
}

// login signs in at provider and returns the callback's answer, which
// must be a 302 with a session cookie.
func (b *browser) login(provider, redirectTo string) *response {
	b.t.Helper()
	path := "/login/" + provider
	if redirectTo != "" {
		path += "?redirect_to=" + url.QueryEscape(redirectTo)
	}
	cb := b.startLogin(path)
	r := b.get(cb.String(), nil)
	if r.StatusCode != http.StatusFound {
		b.t.Fatalf("callback %s: got status %d; want 302 (body %q)", cb.Path, r.StatusCode, r.body)
	}
	if c := r.cookie("auth_session"); c == nil || c.Value == "" {
		b.t.Fatalf("callback %s: no session cookie in %v", cb.Path, r.Header.Values("Set-Cookie"))
	}
	return r
}

// session returns the browser's session token ("" when none).
func (b *browser) session() string {
	u, _ := url.Parse(b.h.url)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == "auth_session" {
			return c.Value
		}
	}
	return ""
}

// flowCookies returns the browser's flow cookies.
func (b *browser) flowCookies() []*http.Cookie {
	u, _ := url.Parse(b.h.url)
	var out []*http.Cookie
	for _, c := range b.jar.Cookies(u) {
		if strings.HasPrefix(c.Name, providersession.DefaultCookieName+"_") {
			out = append(out, c)
		}
	}
	return out
}

// me returns the signed-in user's id from /session.
func (b *browser) me() string {
	b.t.Helper()
	r := b.getJSON("/session")
	if r.StatusCode != http.StatusOK {
		b.t.Fatalf("GET /session: got status %d; want 200 (body %q)", r.StatusCode, r.body)
	}
	var body struct {
		User struct{ ID string } `json:"user"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		b.t.Fatal(err)
	}
	return body.User.ID
}

// wantError checks a JSON error answer: status, and a body of exactly
// {"error": code, "message": non-empty}.
func wantError(t testing.TB, r *response, status int, code string) {
	t.Helper()
	if r.StatusCode != status {
		t.Errorf("%s %s: got status %d; want %d (body %q)", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.body)
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s: got Content-Type %q; want application/json (body %q)", r.Request.Method, r.Request.URL.Path, ct, r.body)
		return
	}
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Errorf("%s %s: body %q: %v", r.Request.Method, r.Request.URL.Path, r.body, err)
		return
	}
	if m["error"] != code {
		t.Errorf("%s %s: got error %v; want %s (body %q)", r.Request.Method, r.Request.URL.Path, m["error"], code, r.body)
	}
	if msg, _ := m["message"].(string); msg == "" {
		t.Errorf("%s %s: no message in %q", r.Request.Method, r.Request.URL.Path, r.body)
	}
	if len(m) != 2 {
		t.Errorf("%s %s: body %q has keys besides error and message", r.Request.Method, r.Request.URL.Path, r.body)
	}
}

// wantErrorPage checks an HTML error answer: status, the code on the page,
// and the security headers of every page.
func wantErrorPage(t testing.TB, r *response, status int, code string) {
	t.Helper()
	if r.StatusCode != status {
		t.Errorf("%s %s: got status %d; want %d (body %q)", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.body)
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("%s %s: got Content-Type %q; want text/html", r.Request.Method, r.Request.URL.Path, ct)
	}
	if !strings.Contains(r.Body(), code) {
		t.Errorf("%s %s: page does not show %s: %q", r.Request.Method, r.Request.URL.Path, code, r.body)
	}
	wantSecurityHeaders(t, r)
}

func wantSecurityHeaders(t testing.TB, r *response) {
	t.Helper()
	csp := r.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("%s: Content-Security-Policy %q lacks frame-ancestors 'none'", r.Request.URL.Path, csp)
	}
	if strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("%s: Content-Security-Policy %q allows inline scripts", r.Request.URL.Path, csp)
	}
	if got := r.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("%s: X-Content-Type-Options %q; want nosniff", r.Request.URL.Path, got)
	}
	body := strings.ToLower(r.Body())
	for i := 0; ; {
		j := strings.Index(body[i:], "<script")
		if j < 0 {
			break
		}
		tag := body[i+j:]
		if end := strings.IndexByte(tag, '>'); end >= 0 {
			tag = tag[:end]
		}
		if !strings.Contains(tag, " src=") {
			t.Errorf("%s: inline script in page: %q", r.Request.URL.Path, tag)
		}
		i += j + 1
	}
}
