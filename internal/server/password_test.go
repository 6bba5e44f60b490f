package server_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/mail"
	"github.com/brokerauth/broker/internal/mail/mailtest"
	"github.com/brokerauth/broker/internal/server"
	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// mlArgon2 keeps tests fast (under -race too); the memory test and the
// benchmarks use the real parameters.
var mlArgon2 = auth.Argon2Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// mailSetup configures a broker with passwords and, optionally, email
// links delivered to a real SMTP server inside the test.
type mailSetup struct {
	Postgres bool
	// PostgresURL and Schema put the store in an existing schema (two
	// brokers on one database, as two replicas).
	PostgresURL, Schema string
	// Email turns on email links, sent over SMTP (STARTTLS) to SMTP, or to
	// a new mailtest server when SMTP is nil.
	Email bool
	SMTP  *mailtest.Server
	// NoPasswords leaves passwords off.
	NoPasswords    bool
	MaxFailures    int
	MaxSignups     int
	MaxSends       int
	LinkTTL        time.Duration
	TrustedProxies []netip.Prefix
	// Hasher defaults to mlArgon2 with a cap of 4.
	Hasher *auth.PasswordHasher
	// Clock is shared with another harness when set.
	Clock *clock
	// Sender replaces the SMTP sender.
	Sender mail.Sender
	// Log replaces the discarding test logger.
	Log *slog.Logger
	// CacheSize turns on the session cache (TTL one hour).
	CacheSize int
}

// mailHarness is a broker with passwords and email links.
type mailHarness struct {
	*harness
	smtp *mailtest.Server
}

func newMailHarness(t testing.TB, ms mailSetup) *mailHarness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	h := &harness{t: t, url: "http://" + ln.Addr().String(), clock: ms.Clock}
	if h.clock == nil {
		h.clock = newClock()
	}
	switch {
	case ms.Schema != "":
		st, err := sqlstore.Open(context.Background(), ms.PostgresURL, sqlstore.WithSchema(ms.Schema), sqlstore.WithMaxOpenConns(4))
		if err != nil {
			t.Fatalf("open store: %v", err)
		}
		t.Cleanup(func() { st.Close() })
		if err := st.Migrate(context.Background()); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		h.store = st
	case ms.Postgres:
		h.store = storagetest.OpenPostgres(t)
	default:
		h.store = storagetest.OpenSQLite(t)
	}
	hasher := ms.Hasher
	if hasher == nil {
		hasher = auth.NewPasswordHasher(mlArgon2, 4)
	}
	origins := []string{appOrigin, allowedOrigin}
	h.auth, err = auth.New(h.store, auth.Options{Now: h.clock.Now, Passwords: hasher, Origin: h.url, AllowedOrigins: origins,
		CacheSize: ms.CacheSize, CacheTTL: time.Hour})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	h.metrics = server.NewMetrics()
	opts := server.Options{
		Auth: h.auth, Store: h.store, Log: cmp.Or(ms.Log, testLogger()), PublicURL: h.url, Now: h.clock.Now,
		OriginAllowed:  func(o string) bool { return slices.Contains(origins, o) },
		TrustedProxies: ms.TrustedProxies, Metrics: h.metrics, MaxSignups: ms.MaxSignups,
	}
	if !ms.NoPasswords {
		opts.Passwords = &server.PasswordOptions{MaxFailures: ms.MaxFailures}
	}
	mh := &mailHarness{harness: h}
	if ms.Email {
		sender := ms.Sender
		if sender == nil {
			mh.smtp = ms.SMTP
			if mh.smtp == nil {
				mh.smtp = mailtest.NewServer(t, mailtest.Options{TLS: "starttls"})
			}
			sender, err = mail.NewSMTP(mail.SMTPConfig{
				Host: mh.smtp.Host, Port: mh.smtp.Port, TLS: mail.TLSStartTLS, From: "Broker <login@example.com>", HELO: "broker.test",
				TLSConfig: mlTLS(mh.smtp),
			})
			if err != nil {
				t.Fatalf("mail.NewSMTP: %v", err)
			}
		}
		opts.Email = &server.EmailOptions{Sender: sender, LinkTTL: ms.LinkTTL, MaxSends: ms.MaxSends}
	}
	h.srv, err = server.New(opts)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	h.http = &httptest.Server{Listener: ln, Config: &http.Server{Handler: h.srv.Handler(), ReadHeaderTimeout: 10 * time.Second}}
	h.http.Start()
	t.Cleanup(h.http.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := h.srv.FlushEmail(ctx); err != nil {
			t.Errorf("FlushEmail: %v", err)
		}
	})
	return mh
}

// flush waits for the broker's background mail.
func (h *mailHarness) flush() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.srv.FlushEmail(ctx); err != nil {
		h.t.Fatalf("FlushEmail: %v", err)
	}
}

// nextLink waits for the next mail and returns its link under path
// (relative to the broker), checking that it went to email.
func (h *mailHarness) nextLink(email, path string) string {
	h.t.Helper()
	m := h.smtp.Next(h.t, 30*time.Second)
	if len(m.To) != 1 || m.To[0] != email {
		h.t.Fatalf("mail to %v; want %s", m.To, email)
	}
	return strings.TrimPrefix(m.Link(h.t, h.url+path+"?"), h.url)
}

// jsonBody is a script's POST of v as JSON from the broker's own origin.
func (b *browser) mlJSON(target string, v any, hdr map[string]string) *response {
	b.t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		b.t.Fatal(err)
	}
	all := map[string]string{"Content-Type": "application/json", "Accept": "application/json"}
	for k, v := range hdr {
		all[k] = v
	}
	return b.do(http.MethodPost, target, bytes.NewReader(data), all)
}

// mlForm is an HTML form post from a page of the broker.
func (b *browser) mlForm(target string, vals url.Values, hdr map[string]string) *response {
	b.t.Helper()
	all := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html,*/*;q=0.8"}
	for k, v := range hdr {
		all[k] = v
	}
	return b.do(http.MethodPost, target, strings.NewReader(vals.Encode()), all)
}

type mlBody = map[string]any

// mlSignup signs up through the API and returns the new user's id.
func (b *browser) mlSignup(email, password string) string {
	b.t.Helper()
	r := b.mlJSON("/signup/password", mlBody{"email": email, "password": password}, nil)
	if r.StatusCode != http.StatusCreated {
		b.t.Fatalf("sign-up %s: got %d; want 201 (body %q)", email, r.StatusCode, r.body)
	}
	return mlUserOf(b.t, r)
}

// mlLogin signs in with a password and returns the answer.
func (b *browser) mlLogin(email, password string, hdr map[string]string) *response {
	b.t.Helper()
	return b.mlJSON("/login/password", mlBody{"email": email, "password": password}, hdr)
}

func mlUserOf(t testing.TB, r *response) string {
	t.Helper()
	var body struct {
		User struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || body.User.ID == "" {
		t.Fatalf("%s %s: no user in %q", r.Request.Method, r.Request.URL.Path, r.body)
	}
	return body.User.ID
}

func (h *mailHarness) user(id string) storage.User {
	h.t.Helper()
	u, err := h.store.GetUser(context.Background(), id)
	if err != nil {
		h.t.Fatalf("get user %s: %v", id, err)
	}
	return u
}

func (h *mailHarness) key(id string) storage.Key {
	h.t.Helper()
	k, err := h.store.GetKey(context.Background(), id)
	if err != nil {
		h.t.Fatalf("get key %s: %v", id, err)
	}
	return k
}

// createUser stores a user directly: email, whether it is verified, and
// optionally a password key on the address with hash.
func (h *mailHarness) createUser(email string, verified bool, hash *string) string {
	h.t.Helper()
	now := h.clock.Now().UTC()
	u := storage.User{ID: auth.GenerateUserID(), Email: &email, Attributes: map[string]any{}, CreatedAt: now, UpdatedAt: now}
	if verified {
		u.EmailVerifiedAt = &now
	}
	var k *storage.Key
	if hash != nil {
		k = &storage.Key{ID: "email:" + email, UserID: u.ID, Provider: "email", ProviderUserID: email, HashedPassword: hash, CreatedAt: now, UpdatedAt: now}
	}
	if err := h.store.CreateUser(context.Background(), u, k); err != nil {
		h.t.Fatalf("create user %s: %v", email, err)
	}
	return u.ID
}

func (h *mailHarness) hash(password string) *string {
	h.t.Helper()
	s, err := h.auth.Passwords().Hash(context.Background(), password)
	if err != nil {
		h.t.Fatal(err)
	}
	return &s
}

const mlPassword = "correct horse battery staple"

func TestPasswordSignupAndLogin(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{})
	b := h.browser()

	r := b.mlJSON("/signup/password", mlBody{"email": "  Ann@Example.COM ", "password": mlPassword, "redirect_to": "/app"}, nil)
	if r.StatusCode != http.StatusCreated {
		t.Fatalf("sign-up: got %d; want 201 (body %q)", r.StatusCode, r.body)
	}
	body := r.json(t)
	wantKeys(t, "sign-up answer", body, "claims", "redirect_to", "session", "user")
	user := body["user"].(map[string]any)
	if user["email"] != "ann@example.com" || user["email_verified"] != false {
		t.Errorf("user = %v; want email ann@example.com, unverified", user)
	}
	if body["redirect_to"] != "/app" {
		t.Errorf("redirect_to = %v; want /app", body["redirect_to"])
	}
	if c := r.cookie("auth_session"); c == nil || c.Value == "" {
		t.Fatalf("sign-up: no session cookie")
	}
	id := user["id"].(string)
	if got := h.keysOf(id); !slices.Equal(got, []string{"email:ann@example.com"}) {
		t.Errorf("keys = %v; want [email:ann@example.com]", got)
	}
	if hash := h.key("email:ann@example.com").HashedPassword; hash == nil || !strings.HasPrefix(*hash, "$argon2id$") {
		t.Errorf("stored hash = %v; want argon2id", hash)
	}
	if got := b.me(); got != id {
		t.Errorf("/session user = %s; want %s", got, id)
	}

	// Login from another browser: JSON, with the cookie.
	b2 := h.browser()
	r = b2.mlLogin("ANN@example.com", mlPassword, nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("login: got %d; want 200 (body %q)", r.StatusCode, r.body)
	}
	wantKeys(t, "login answer", r.json(t), "claims", "redirect_to", "session", "user")
	if mlUserOf(t, r) != id || b2.me() != id {
		t.Errorf("login signed in someone else")
	}
	if got := r.json(t)["redirect_to"]; got != "/" {
		t.Errorf("redirect_to = %v; want the default /", got)
	}

	// Bearer: a token in the answer and no cookie.
	b3 := h.browser()
	r = b3.mlJSON("/login/password", mlBody{"email": "ann@example.com", "password": mlPassword, "bearer": true}, nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("bearer login: got %d (body %q)", r.StatusCode, r.body)
	}
	if c := r.cookie("auth_session"); c != nil {
		t.Errorf("bearer login set a cookie")
	}
	token, _ := r.json(t)["token"].(string)
	s := b3.get("/session", map[string]string{"Accept": "application/json", "Authorization": "Bearer " + token})
	if s.StatusCode != http.StatusOK {
		t.Errorf("/session with the bearer token: got %d", s.StatusCode)
	}
	// A bearer sign-up too.
	r = h.browser().mlJSON("/signup/password", mlBody{"email": "bob@example.com", "password": mlPassword, "bearer": true}, nil)
	if r.StatusCode != http.StatusCreated || r.cookie("auth_session") != nil || r.json(t)["token"] == nil {
		t.Errorf("bearer sign-up: got %d, cookie %v, body %q", r.StatusCode, r.cookie("auth_session"), r.body)
	}

	// Form posts from the login page: 303 to redirect_to with the cookie;
	// an unsafe redirect_to becomes the default.
	for target, want := range map[string]string{"/after?x=1": "/after?x=1", "https://evil.example/": "/", allowedOrigin + "/p": allowedOrigin + "/p"} {
		b4 := h.browser()
		r = b4.mlForm("/login/password", url.Values{"email": {"ann@example.com"}, "password": {mlPassword}, "redirect_to": {target}}, nil)
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != want {
			t.Errorf("form login to %s: got %d → %q; want 303 → %s", target, r.StatusCode, r.Header.Get("Location"), want)
		}
		if b4.session() == "" {
			t.Errorf("form login: no session cookie")
		}
	}
	r = h.browser().mlForm("/signup/password", url.Values{"email": {"cat@example.com"}, "password": {mlPassword}, "redirect_to": {"/welcome"}}, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/welcome" || r.cookie("auth_session") == nil {
		t.Errorf("form sign-up: got %d → %q", r.StatusCode, r.Header.Get("Location"))
	}

	// Signing in again as the signed-in user re-authenticates the session
	// instead of adding one.
	before := b2.session()
	r = b2.mlLogin("ann@example.com", mlPassword, nil)
	if r.StatusCode != http.StatusOK || b2.session() != before {
		t.Errorf("second login in one browser: got %d, session changed %v", r.StatusCode, b2.session() != before)
	}
}

func TestPasswordRules(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{})
	for _, tc := range []struct {
		name, password string
		ok             bool
	}{
		{"too short", "short1!", false},
		{"seven wide characters", "ｓｈｏｒｔ１!", false},
		{"common", "password1", false},
		{"common digits", "12345678", false},
		{"common, other case", "PassWord1", false},
		{"common after NFKC", "ｐａｓｓｗｏｒｄ１", false},
		{"one character repeated", "zzzzzzzzzzzz", false},
		{"the address", "Dee@Example.com", false},
		{"the local part", "dee", false},
		{"control character", "abc\x00defghij", false},
		{"too long", strings.Repeat("long passphrase ", 17), false},
		{"eight characters", "k9#mQ2!x", true},
		{"long passphrase", "the quick brown fox knows where the seven hidden lanterns are, and never tells anyone at all" + strings.Repeat(" ok", 40), true},
		{"unicode", "пароль для почты ✓", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			email := "dee@example.com"
			if tc.ok {
				email = strings.ReplaceAll(tc.name, " ", "-") + "@example.com"
			}
			r := h.browser().mlJSON("/signup/password", mlBody{"email": email, "password": tc.password}, nil)
			if tc.ok {
				if r.StatusCode != http.StatusCreated {
					t.Errorf("got %d; want 201 (body %q)", r.StatusCode, r.body)
				}
				return
			}
			wantError(t, r, http.StatusUnprocessableEntity, "AUTH_INVALID_PASSWORD")
		})
	}
	h.wantUsers(3)

	// NFKC: a password typed in compatibility characters signs in with
	// its normal form and the other way round.
	b := h.browser()
	b.mlSignup("nfkc@example.com", "ﬁsh café ① horse")
	if r := b.mlLogin("nfkc@example.com", "fish cafe\u0301 1 horse", nil); r.StatusCode != http.StatusOK {
		t.Errorf("login with the NFKC form: got %d (body %q)", r.StatusCode, r.body)
	}
	// The message says what to change.
	r := h.browser().mlJSON("/signup/password", mlBody{"email": "x@example.com", "password": "short"}, nil)
	if msg, _ := r.json(t)["message"].(string); !strings.Contains(msg, "at least 8 characters") {
		t.Errorf("message = %q; want it to name the minimum", msg)
	}
}

func TestPasswordSignupRefusals(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{})
	b := h.browser()
	b.mlSignup("ann@example.com", mlPassword)

	r := h.browser().mlJSON("/signup/password", mlBody{"email": "ANN@example.com", "password": "another good passphrase"}, nil)
	wantError(t, r, http.StatusConflict, "AUTH_DUPLICATE_KEY_ID")
	for _, email := range []string{"", "not-an-address", "Ann <ann@example.com>", "a@b@c", "a b@example.com"} {
		r := h.browser().mlJSON("/signup/password", mlBody{"email": email, "password": mlPassword}, nil)
		wantError(t, r, http.StatusBadRequest, "AUTH_INVALID_REQUEST")
	}
	h.wantUsers(1)

	// Bodies: unsupported type, malformed JSON, too big, cross-site.
	for _, path := range []string{"/signup/password", "/login/password", "/account/password"} {
		r = b.do(http.MethodPost, path, strings.NewReader("email=a"), map[string]string{"Content-Type": "text/plain", "Accept": "application/json"})
		wantError(t, r, http.StatusUnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE")
		r = b.do(http.MethodPost, path, strings.NewReader(`{"email": `), map[string]string{"Content-Type": "application/json"})
		wantError(t, r, http.StatusBadRequest, "AUTH_INVALID_REQUEST")
		r = b.do(http.MethodPost, path, strings.NewReader(`{"email": "a@b.c"} {}`), map[string]string{"Content-Type": "application/json"})
		wantError(t, r, http.StatusBadRequest, "AUTH_INVALID_REQUEST")
		big := `{"email": "a@b.c", "password": "` + strings.Repeat("x", 70000) + `"}`
		r = b.do(http.MethodPost, path, strings.NewReader(big), map[string]string{"Content-Type": "application/json"})
		wantError(t, r, http.StatusRequestEntityTooLarge, "REQUEST_TOO_LARGE")
		r = b.mlJSON(path, mlBody{"email": "eve@example.com", "password": mlPassword}, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
		wantError(t, r, http.StatusForbidden, "AUTH_INVALID_REQUEST")
	}
	h.wantUsers(1)
}

// TestPasswordSignupLimit: sign-ups are limited per client IP, refusals
// (409) included, before any database work; other clients are not.
func TestPasswordSignupLimit(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{MaxSignups: 3, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	from := func(ip string) map[string]string { return map[string]string{"X-Forwarded-For": ip} }
	signup := func(email, ip string) *response {
		return h.browser().mlJSON("/signup/password", mlBody{"email": email, "password": mlPassword}, from(ip))
	}
	if r := signup("a1@example.com", "203.0.113.7"); r.StatusCode != http.StatusCreated {
		t.Fatalf("first sign-up: %d %s", r.StatusCode, r.body)
	}
	wantError(t, signup("a1@example.com", "203.0.113.7"), http.StatusConflict, "AUTH_DUPLICATE_KEY_ID")
	if r := signup("a2@example.com", "203.0.113.7"); r.StatusCode != http.StatusCreated {
		t.Fatalf("third attempt: %d %s", r.StatusCode, r.body)
	}
	r := signup("a3@example.com", "203.0.113.7")
	wantError(t, r, http.StatusTooManyRequests, "RATE_LIMITED")
	if n := mlRetryAfter(t, r); n > 3600 || n < 3500 {
		t.Errorf("Retry-After = %d; want about an hour", n)
	}
	h.wantUsers(2)
	// Another client is not limited by this one.
	if r := signup("b1@example.com", "198.51.100.9"); r.StatusCode != http.StatusCreated {
		t.Fatalf("another client: %d %s", r.StatusCode, r.body)
	}
	// The window ends.
	h.clock.Advance(time.Hour)
	if r := signup("a3@example.com", "203.0.113.7"); r.StatusCode != http.StatusCreated {
		t.Fatalf("after the window: %d %s", r.StatusCode, r.body)
	}
	// The limit cannot be counted (its table is gone): 503, and no account.
	if _, err := h.store.DB().Exec("DROP TABLE rate_limits"); err != nil {
		t.Fatal(err)
	}
	wantError(t, signup("a4@example.com", "203.0.113.8"), http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE")
	h.wantUsers(4)
}

func TestPasswordLoginUnknownAndWrongAlike(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{})
	h.browser().mlSignup("ann@example.com", mlPassword)
	// A user of an email link has a key without a password.
	linkUser := h.createUser("link@example.com", true, nil)
	now := h.clock.Now()
	if err := h.store.CreateKey(context.Background(), storage.Key{ID: "email:link@example.com", UserID: linkUser, Provider: "email",
		ProviderUserID: "link@example.com", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	var bodies []string
	for _, c := range [][2]string{{"ann@example.com", "wrong password!"}, {"nobody@example.com", mlPassword}, {"link@example.com", mlPassword}, {"not an address", "x"}} {
		r := h.browser().mlLogin(c[0], c[1], nil)
		wantError(t, r, http.StatusBadRequest, "AUTH_INVALID_PASSWORD")
		bodies = append(bodies, r.Body())
	}
	for _, b := range bodies[1:] {
		if b != bodies[0] {
			t.Errorf("answers differ: %q vs %q", b, bodies[0])
		}
	}
	r := h.browser().mlLogin("", "x", nil)
	wantError(t, r, http.StatusBadRequest, "AUTH_INVALID_REQUEST")
	// A form post gets an error page.
	r = h.browser().mlForm("/login/password", url.Values{"email": {"ann@example.com"}, "password": {"nope nope"}}, nil)
	wantErrorPage(t, r, http.StatusBadRequest, "AUTH_INVALID_PASSWORD")
}

type mlLuciaVector struct {
	Format   string `json:"format"`
	Password string `json:"password"`
	Encoded  string `json:"encoded"`
}

func mlLuciaVectors(t *testing.T) []mlLuciaVector {
	data, err := os.ReadFile("../../auth/testdata/lucia_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Vectors []mlLuciaVector }
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return f.Vectors
}

// TestPasswordLoginRehashesLucia signs in users imported from Lucia with
// their scrypt hashes, which are replaced by argon2id at once.
func TestPasswordLoginRehashesLucia(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{MaxFailures: 100})
	seen := map[string]bool{}
	for i, v := range mlLuciaVectors(t) {
		// One vector per format: scrypt with Lucia's parameters is slow
		// under -race.
		if seen[v.Format] {
			continue
		}
		seen[v.Format] = true
		email := v.Format + strconv.Itoa(i) + "@example.com"
		id := h.createUser(email, true, &v.Encoded)
		if r := h.browser().mlLogin(email, v.Password+"x", nil); r.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: wrong password: got %d", v.Format, r.StatusCode)
		}
		if got := *h.key("email:" + email).HashedPassword; got != v.Encoded {
			t.Errorf("%s: a failed login changed the hash", v.Format)
		}
		r := h.browser().mlLogin(email, v.Password, nil)
		if r.StatusCode != http.StatusOK || mlUserOf(t, r) != id {
			t.Fatalf("%s: login: got %d (body %q)", v.Format, r.StatusCode, r.body)
		}
		got := *h.key("email:" + email).HashedPassword
		if !strings.HasPrefix(got, "$argon2id$v=19$m=64,t=1,p=1$") {
			t.Errorf("%s: hash after login = %q; want the hasher's argon2id", v.Format, got)
		}
		if r := h.browser().mlLogin(email, v.Password, nil); r.StatusCode != http.StatusOK {
			t.Errorf("%s: login after rehash: got %d", v.Format, r.StatusCode)
		}
	}
}

func TestPasswordLoginOutdatedHash(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{})
	bcrypt := "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"
	h.createUser("old@example.com", true, &bcrypt)
	r := h.browser().mlLogin("old@example.com", "whatever it was", nil)
	wantError(t, r, http.StatusBadRequest, "AUTH_OUTDATED_PASSWORD")
}

func mlRetryAfter(t *testing.T, r *response) int {
	t.Helper()
	n, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || n < 1 {
		t.Errorf("Retry-After = %q; want whole seconds", r.Header.Get("Retry-After"))
	}
	return n
}

func TestPasswordFailureLimit(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{})
	h.browser().mlSignup("ann@example.com", mlPassword)

	// Successes do not count.
	for range 8 {
		if r := h.browser().mlLogin("ann@example.com", mlPassword, nil); r.StatusCode != http.StatusOK {
			t.Fatalf("login: got %d", r.StatusCode)
		}
	}
	// Five failures on the key, then 429 even for the right password.
	for i := range 5 {
		r := h.browser().mlLogin("ann@example.com", "wrong guess "+strconv.Itoa(i), nil)
		wantError(t, r, http.StatusBadRequest, "AUTH_INVALID_PASSWORD")
	}
	r := h.browser().mlLogin("ann@example.com", mlPassword, nil)
	wantError(t, r, http.StatusTooManyRequests, "RATE_LIMITED")
	if n := mlRetryAfter(t, r); n > 15*60 || n < 14*60 {
		t.Errorf("Retry-After = %d; want about 15 minutes", n)
	}
	// A form post gets a page.
	r = h.browser().mlForm("/login/password", url.Values{"email": {"ann@example.com"}, "password": {mlPassword}}, nil)
	wantErrorPage(t, r, http.StatusTooManyRequests, "RATE_LIMITED")
	// The window ends: the right password works and clears the count.
	h.clock.Advance(15 * time.Minute)
	if r := h.browser().mlLogin("ann@example.com", mlPassword, nil); r.StatusCode != http.StatusOK {
		t.Fatalf("login after the window: got %d (body %q)", r.StatusCode, r.body)
	}
	// Unknown addresses are limited like known ones.
	for range 5 {
		h.browser().mlLogin("ghost@example.com", "guess guess", nil)
	}
	// That was 5 failures of this client IP in this window too: any
	// further address is refused.
	r = h.browser().mlLogin("ghost@example.com", "guess guess", nil)
	wantError(t, r, http.StatusTooManyRequests, "RATE_LIMITED")
	r = h.browser().mlLogin("someone-else@example.com", "guess guess", nil)
	wantError(t, r, http.StatusTooManyRequests, "RATE_LIMITED")

	// The sweeper deletes the ended windows.
	h.clock.Advance(16 * time.Minute)
	if n := server.SweepOnce(context.Background(), h.store, testLogger(), server.SweepOptions{Now: h.clock.Now}); n < 2 {
		t.Errorf("SweepOnce deleted %d rows; want the rate-limit windows", n)
	}
}

// TestPasswordFailureLimitAcrossReplicas fails on one broker and is
// refused by another on the same PostgreSQL database.
func TestPasswordFailureLimitAcrossReplicas(t *testing.T) {
	t.Parallel()
	url, schema := storagetest.PostgresSchema(t)
	clk := newClock()
	a := newMailHarness(t, mailSetup{PostgresURL: url, Schema: schema, Clock: clk})
	b := newMailHarness(t, mailSetup{PostgresURL: url, Schema: schema, Clock: clk})
	a.browser().mlSignup("ann@example.com", mlPassword)
	if r := b.browser().mlLogin("ann@example.com", mlPassword, nil); r.StatusCode != http.StatusOK {
		t.Fatalf("login on the second broker: got %d", r.StatusCode)
	}
	for i := range 5 {
		wantError(t, a.browser().mlLogin("ann@example.com", "wrong "+strconv.Itoa(i), nil), http.StatusBadRequest, "AUTH_INVALID_PASSWORD")
	}
	r := b.browser().mlLogin("ann@example.com", mlPassword, nil)
	wantError(t, r, http.StatusTooManyRequests, "RATE_LIMITED")
	mlRetryAfter(t, r)

	// Concurrent failures split over both brokers: at most 5 are checked.
	checked := atomic.Int32{}
	var wg sync.WaitGroup
	clk.Advance(15 * time.Minute)
	for i := range 12 {
		wg.Go(func() {
			h := a
			if i%2 == 1 {
				h = b
			}
			r := h.browser().mlLogin("ann@example.com", "wrong again", nil)
			if r.StatusCode == http.StatusBadRequest {
				checked.Add(1)
			}
		})
	}
	wg.Wait()
	if n := checked.Load(); n != 5 {
		t.Errorf("%d of 12 concurrent wrong passwords were checked; want exactly 5", n)
	}
}

// TestTrustedProxies counts failures per client IP from X-Forwarded-For
// only when the peer is a trusted proxy.
func TestTrustedProxies(t *testing.T) {
	t.Parallel()
	fwd := func(ip string) map[string]string { return map[string]string{"X-Forwarded-For": ip} }
	t.Run("trusted", func(t *testing.T) {
		t.Parallel()
		h := newMailHarness(t, mailSetup{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
		for i := range 5 {
			h.browser().mlLogin("user"+strconv.Itoa(i)+"@example.com", "guess guess", fwd("198.51.100.1, 203.0.113.7"))
		}
		r := h.browser().mlLogin("other@example.com", "guess guess", fwd("203.0.113.7"))
		wantError(t, r, http.StatusTooManyRequests, "RATE_LIMITED")
		r = h.browser().mlLogin("other@example.com", "guess guess", fwd("203.0.113.8"))
		wantError(t, r, http.StatusBadRequest, "AUTH_INVALID_PASSWORD")
		// IPv6 clients are counted per /64.
		for i := range 5 {
			h.browser().mlLogin("v6-"+strconv.Itoa(i)+"@example.com", "guess guess", fwd("2001:db8:1:2::"+strconv.Itoa(i+1)))
		}
		r = h.browser().mlLogin("v6@example.com", "guess guess", fwd("2001:db8:1:2:ffff::1"))
		wantError(t, r, http.StatusTooManyRequests, "RATE_LIMITED")
		// The session records the client's address.
		h.browser().mlSignup("ip@example.com", mlPassword)
		b := h.browser()
		if r := b.mlLogin("ip@example.com", mlPassword, fwd("192.0.2.55")); r.StatusCode != http.StatusOK {
			t.Fatalf("login: got %d", r.StatusCode)
		}
		sessions := b.getJSON("/sessions").json(t)["sessions"].([]any)
		var ips []string
		for _, s := range sessions {
			ips = append(ips, s.(map[string]any)["ip"].(string))
		}
		if !slices.Contains(ips, "192.0.2.55") {
			t.Errorf("session IPs %v; want 192.0.2.55 among them", ips)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		t.Parallel()
		h := newMailHarness(t, mailSetup{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
		for i := range 5 {
			h.browser().mlLogin("user"+strconv.Itoa(i)+"@example.com", "guess guess", fwd("203.0.113."+strconv.Itoa(i+1)))
		}
		// The header is the client's own: every attempt was from 127.0.0.1.
		r := h.browser().mlLogin("other@example.com", "guess guess", fwd("203.0.113.99"))
		wantError(t, r, http.StatusTooManyRequests, "RATE_LIMITED")
	})
}

// TestPasswordVerifiedEmailRule checks that an unverified address from a
// password sign-up never blocks, captures or links to the verified owner.
func TestPasswordVerifiedEmailRule(t *testing.T) {
	t.Parallel()
	t.Run("sign-up for an address held verified is 409", func(t *testing.T) {
		t.Parallel()
		h := newMailHarness(t, mailSetup{})
		owner := h.createUser("ann@example.com", true, nil)
		r := h.browser().mlJSON("/signup/password", mlBody{"email": "ann@example.com", "password": mlPassword}, nil)
		wantError(t, r, http.StatusConflict, "CONFLICT")
		h.wantUsers(1)
		if got := h.keysOf(owner); len(got) != 0 {
			t.Errorf("owner's keys = %v; want none", got)
		}
	})
	t.Run("an unverified holder of the address is another account", func(t *testing.T) {
		t.Parallel()
		h := newMailHarness(t, mailSetup{})
		// Someone else holds the address unverified (not as a password key).
		other := h.createUser("ann@example.com", false, nil)
		id := h.browser().mlSignup("ann@example.com", mlPassword)
		if id == other {
			t.Fatal("sign-up captured the other user")
		}
		// Neither is the owner: nobody holds it verified.
		if _, err := h.store.GetUserByEmail(context.Background(), "ann@example.com"); err == nil {
			t.Errorf("an unverified address became owned")
		}
	})
	t.Run("the owner takes over a squatting password key", func(t *testing.T) {
		t.Parallel()
		h := newMailHarness(t, mailSetup{CacheSize: 100})
		owner := h.createUser("ann@example.com", true, nil)
		// A password key on the address held by another user whose
		// address was never verified (e.g. it signed up before the owner
		// existed).
		squatter := h.createUser("ann@example.com", false, h.hash("squatter's password"))
		// The squatter's session is cached; losing the key invalidates it
		// (claims may read the keys).
		sq, err := h.auth.CreateSession(context.Background(), squatter, auth.SessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.auth.ValidateSession(context.Background(), sq.Token); err != nil {
			t.Fatal(err)
		}
		if h.auth.CachedSessionView(sq.Token) == nil {
			t.Fatal("the squatter's session is not cached")
		}
		// It signs into its own account, never the owner's.
		r := h.browser().mlLogin("ann@example.com", "squatter's password", nil)
		if r.StatusCode != http.StatusOK || mlUserOf(t, r) != squatter {
			t.Fatalf("squatter login: got %d (body %q)", r.StatusCode, r.body)
		}
		// The owner (signed in by a recent session) sets a password.
		ob := h.browser()
		sess, err := h.auth.CreateSession(context.Background(), owner, auth.SessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ob.jar.SetCookies(mlURL(t, h.url), []*http.Cookie{{Name: "auth_session", Value: sess.Token}})
		r = ob.mlJSON("/account/password", mlBody{"new_password": "the owner's own passphrase"}, nil)
		if r.StatusCode != http.StatusNoContent {
			t.Fatalf("owner sets a password: got %d (body %q)", r.StatusCode, r.body)
		}
		if k := h.key("email:ann@example.com"); k.UserID != owner {
			t.Errorf("key belongs to %s; want the owner", k.UserID)
		}
		if h.auth.CachedSessionView(sq.Token) != nil {
			t.Errorf("the squatter's cached session outlived the loss of its key")
		}
		wantError(t, h.browser().mlLogin("ann@example.com", "squatter's password", nil), http.StatusBadRequest, "AUTH_INVALID_PASSWORD")
		r = h.browser().mlLogin("ann@example.com", "the owner's own passphrase", nil)
		if r.StatusCode != http.StatusOK || mlUserOf(t, r) != owner {
			t.Errorf("owner login: got %d (body %q)", r.StatusCode, r.body)
		}
		if u := h.user(squatter); u.EmailVerifiedAt != nil {
			t.Errorf("the squatter's address became verified")
		}
	})
}

func mlURL(t testing.TB, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestChangePassword(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{})
	b := h.browser()
	id := b.mlSignup("ann@example.com", mlPassword)
	other := h.browser()
	other.mlLogin("ann@example.com", mlPassword, nil)
	bearer := h.browser().mlJSON("/login/password", mlBody{"email": "ann@example.com", "password": mlPassword, "bearer": true}, nil).json(t)["token"].(string)

	// The current password is required and checked.
	wantError(t, b.mlJSON("/account/password", mlBody{"new_password": "a brand new passphrase"}, nil), http.StatusBadRequest, "AUTH_INVALID_PASSWORD")
	wantError(t, b.mlJSON("/account/password", mlBody{"current_password": "wrong one!", "new_password": "a brand new passphrase"}, nil), http.StatusBadRequest, "AUTH_INVALID_PASSWORD")
	// The new one follows the rules.
	wantError(t, b.mlJSON("/account/password", mlBody{"current_password": mlPassword, "new_password": "password123"}, nil), http.StatusUnprocessableEntity, "AUTH_INVALID_PASSWORD")
	// Not signed in; cross-site.
	wantError(t, h.browser().mlJSON("/account/password", mlBody{"current_password": mlPassword, "new_password": "a brand new passphrase"}, nil), http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
	wantError(t, b.mlJSON("/account/password", mlBody{"current_password": mlPassword, "new_password": "a brand new passphrase"},
		map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}), http.StatusForbidden, "AUTH_INVALID_REQUEST")

	r := b.mlJSON("/account/password", mlBody{"current_password": mlPassword, "new_password": "a brand new passphrase"}, nil)
	if r.StatusCode != http.StatusNoContent {
		t.Fatalf("change: got %d (body %q)", r.StatusCode, r.body)
	}
	if !h.sessionValid(b.session()) {
		t.Errorf("the session that changed the password ended")
	}
	if h.sessionValid(other.session()) || h.sessionValid(bearer) {
		t.Errorf("other sessions still valid after the change")
	}
	wantError(t, h.browser().mlLogin("ann@example.com", mlPassword, nil), http.StatusBadRequest, "AUTH_INVALID_PASSWORD")
	if r := h.browser().mlLogin("ann@example.com", "a brand new passphrase", nil); r.StatusCode != http.StatusOK {
		t.Errorf("login with the new password: got %d", r.StatusCode)
	}

	// Eleven minutes later the session is no longer recent.
	h.clock.Advance(11 * time.Minute)
	wantError(t, b.mlJSON("/account/password", mlBody{"current_password": "a brand new passphrase", "new_password": "yet another passphrase"}, nil),
		http.StatusForbidden, "AUTH_REAUTHENTICATION_REQUIRED")
	r = b.mlForm("/account/password", url.Values{"current_password": {"a brand new passphrase"}, "new_password": {"yet another passphrase"}}, nil)
	if r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/login?reauth=1") {
		t.Errorf("form without recent auth: got %d → %q; want 303 to the re-authenticating login", r.StatusCode, r.Header.Get("Location"))
	}
	// Signing in again re-authenticates this session; then it works (as
	// a form: 303 to the account page).
	before := b.session()
	if r := b.mlLogin("ann@example.com", "a brand new passphrase", nil); r.StatusCode != http.StatusOK || b.session() != before {
		t.Fatalf("re-authentication: got %d", r.StatusCode)
	}
	r = b.mlForm("/account/password", url.Values{"current_password": {"a brand new passphrase"}, "new_password": {"yet another passphrase"}}, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/account" {
		t.Errorf("form change: got %d → %q", r.StatusCode, r.Header.Get("Location"))
	}
	if b.me() != id {
		t.Errorf("signed out by the change")
	}

	// A user without a password and without a verified address cannot set one.
	nb := h.browser()
	nid := h.createUser("unverified@example.com", false, nil)
	sess, _ := h.auth.CreateSession(context.Background(), nid, auth.SessionOptions{})
	nb.jar.SetCookies(mlURL(t, h.url), []*http.Cookie{{Name: "auth_session", Value: sess.Token}})
	wantError(t, nb.mlJSON("/account/password", mlBody{"new_password": "a good passphrase"}, nil), http.StatusBadRequest, "AUTH_INVALID_REQUEST")
}

func TestPasswordPages(t *testing.T) {
	t.Parallel()
	h := newMailHarness(t, mailSetup{Email: true})
	b := h.browser()
	r := b.get("/login?redirect_to=%2Fapp", nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("GET /login: got %d", r.StatusCode)
	}
	wantSecurityHeaders(t, r)
	for _, want := range []string{`action="/login/email"`, `action="/login/password"`, `action="/signup/password"`,
		`href="/account/password/reset"`, `name="redirect_to" value="/app"`, `autocomplete="current-password"`, `minlength="8"`} {
		if !strings.Contains(r.Body(), want) {
			t.Errorf("login page lacks %s", want)
		}
	}
	b.mlSignup("ann@example.com", mlPassword)
	r = b.get("/account", nil)
	wantSecurityHeaders(t, r)
	if !strings.Contains(r.Body(), `action="/account/password"`) || !strings.Contains(r.Body(), `name="current_password"`) {
		t.Errorf("account page lacks the password form: %s", r.Body())
	}
	r = b.get("/account/password/reset", nil)
	wantSecurityHeaders(t, r)
	if !strings.Contains(r.Body(), `action="/account/password/reset"`) {
		t.Errorf("reset page lacks its form")
	}
	// Passwords alone: no email forms, no reset routes.
	h2 := newMailHarness(t, mailSetup{})
	r = h2.browser().get("/login", nil)
	if strings.Contains(r.Body(), "/login/email") || strings.Contains(r.Body(), "/account/password/reset") {
		t.Errorf("login page offers email features that are off")
	}
	wantError(t, h2.browser().getJSON("/account/password/reset"), http.StatusNotFound, "NOT_FOUND")
}

// TestPasswordLoginsMemoryBound runs 100 concurrent logins with the
// default argon2id parameters (19 MiB each) and checks the memory the Go
// runtime holds stays under the bound the hasher's cap gives:
//
//	2 × cap × 19 MiB + 64 MiB
//
// (cap operations at 19 MiB each are live at once; with GOGC=100 as much
// garbage again may wait for a collection; 64 MiB for everything else).
// Without the cap the 100 logins would hold about 1.9 GiB at once.
func TestPasswordLoginsMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: 100 argon2id hashes with the real parameters")
	}
	const limit = 2 // the hasher's cap
	const n = 100
	h := newMailHarness(t, mailSetup{MaxFailures: 10 * n, Hasher: auth.NewPasswordHasher(auth.DefaultArgon2Params(), limit)})
	h.createUser("ann@example.com", true, h.hash(mlPassword))
	runtime.GC()

	samples := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	inUse := func() uint64 {
		metrics.Read(samples)
		return samples[0].Value.Uint64() - samples[1].Value.Uint64()
	}
	base := inUse()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if v := inUse(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	var ok atomic.Int32
	for i := range n {
		wg.Go(func() {
			pw := mlPassword
			email := "ann@example.com"
			switch i % 3 {
			case 1:
				pw = "wrong password"
			case 2:
				email = "nobody" + strconv.Itoa(i) + "@example.com"
			}
			b := h.browser()
			b.c.Timeout = 5 * time.Minute
			r := b.mlLogin(email, pw, nil)
			if (r.StatusCode == http.StatusOK) == (i%3 == 0) && (r.StatusCode == http.StatusOK || r.StatusCode == http.StatusBadRequest) {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	if got := ok.Load(); got != n {
		t.Errorf("%d of %d logins answered as expected", got, n)
	}
	const mib = 1 << 20
	bound := uint64(2*limit*19*mib + 64*mib)
	growth := peak.Load() - min(base, peak.Load())
	t.Logf("runtime memory: %d MiB before, peak %d MiB (growth %d MiB; bound %d MiB)", base/mib, peak.Load()/mib, growth/mib, bound/mib)
	if growth > bound {
		t.Errorf("memory grew by %d MiB during %d concurrent logins; want at most %d MiB", growth/mib, n, bound/mib)
	}
}

// benchLogin measures POST /login/password in process with the real
// argon2id parameters. The two benchmarks below should report the same
// time per operation: an unknown address costs what a wrong password
// costs (go test -run XXX -bench PasswordLogin ./internal/server/).
func benchLogin(b *testing.B, email string) {
	h := newMailHarness(b, mailSetup{MaxFailures: 1 << 30, Hasher: auth.NewPasswordHasher(auth.DefaultArgon2Params(), 0)})
	h.createUser("ann@example.com", true, h.hash(mlPassword))
	handler := h.srv.Handler()
	body := []byte(`{"email": "` + email + `", "password": "wrong password"}`)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, h.url+"/login/password", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusBadRequest {
			b.Fatalf("got %d; want 400 (body %q)", rec.Code, rec.Body)
		}
	}
}

func BenchmarkPasswordLoginUnknownEmail(b *testing.B)  { benchLogin(b, "nobody@example.com") }
func BenchmarkPasswordLoginWrongPassword(b *testing.B) { benchLogin(b, "ann@example.com") }
