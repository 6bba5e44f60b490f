package server_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/mail"
	"github.com/brokerauth/broker/internal/providertest"
	"github.com/brokerauth/broker/internal/seal"
	"github.com/brokerauth/broker/internal/server"
	"github.com/brokerauth/broker/providers"
	"github.com/brokerauth/broker/providers/github"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
	"github.com/brokerauth/broker/webauthn"
	"github.com/brokerauth/broker/webauthn/webauthntest"
)

// fullSetup configures a broker with every feature on: the GitHub
// provider (a fake), passwords, email links (mail discarded), passkeys and
// /metrics on the main listener.
type fullSetup struct {
	Postgres bool
	// PublicURL, when set (https://broker.example), is the broker's public
	// URL and the harness has no listener: requests go to the handler
	// (harness.serve). Empty: a loopback listener and its http:// URL.
	PublicURL string
}

// discardMail is a mail.Sender that drops every message.
type discardMail struct{}

func (discardMail) Send(context.Context, mail.Message) error { return nil }

// maxHeaderBytes is cmd/broker's http.Server.MaxHeaderBytes (newHTTPServer).
const maxHeaderBytes = 64 << 10

// newFullHarness starts a broker with every feature. It is wired like
// cmd/broker's buildApp: cookies (session and flow) are Secure exactly when
// the public URL is https, and the listener has the same MaxHeaderBytes.
func newFullHarness(t testing.TB, fs fullSetup) *harness {
	t.Helper()
	h := &harness{t: t, clock: newClock(), oidc: map[string]*providertest.OIDC{}}
	var ln net.Listener
	if fs.PublicURL == "" {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatalf("listen: %v", err)
		}
		h.url = "http://" + ln.Addr().String()
	} else {
		h.url = strings.TrimRight(fs.PublicURL, "/")
	}
	pub, err := url.Parse(h.url)
	if err != nil {
		t.Fatal(err)
	}
	secure := pub.Scheme == "https"
	if fs.Postgres {
		h.store = storagetest.OpenPostgres(t)
	} else {
		h.store = storagetest.OpenSQLite(t)
	}
	origins := []string{appOrigin, allowedOrigin}
	h.auth, err = auth.New(h.store, auth.Options{
		Now: h.clock.Now, Passwords: auth.NewPasswordHasher(mlArgon2, 4),
		Cookie: auth.CookieOptions{Secure: secure}, Origin: h.url, AllowedOrigins: origins,
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
	flows := providersession.NewFlowStore(providersession.FlowOptions{Keyring: cookieRing, Consumed: h.store, Now: h.clock.Now, Secure: secure})
	log := testLogger()

	h.github = providertest.NewGitHub(t, providertest.GitHubUser{})
	gh, err := github.Config{
		ClientID: h.github.ClientID, ClientSecret: h.github.ClientSecret,
		AuthURL: h.github.AuthURL(), TokenURL: h.github.TokenURL(), APIURL: h.github.APIURL(),
	}.Open(context.Background(), "github", providers.Deps{HTTPClient: h.github.Client(), Logger: log, Now: h.clock.Now})
	if err != nil {
		t.Fatalf("open github: %v", err)
	}
	if c, ok := gh.(io.Closer); ok {
		t.Cleanup(func() { c.Close() })
	}
	rpID := pub.Hostname()
	if net.ParseIP(rpID) != nil {
		rpID = "localhost" // as passkeyHarness: go-webauthn takes the origin list as given
	}
	rp, err := webauthn.New(webauthn.Config{RPID: rpID, RPName: "Broker test", Origins: []string{h.url}}, h.auth, flows)
	if err != nil {
		t.Fatal(err)
	}
	h.metrics = server.NewMetrics()
	h.srv, err = server.New(server.Options{
		Auth: h.auth, Store: h.store, Log: log, PublicURL: h.url, Now: h.clock.Now,
		OriginAllowed: func(o string) bool { return slices.Contains(origins, o) },
		Providers:     []server.Provider{{ID: "github", DisplayName: "GitHub", Provider: gh}},
		Flows:         flows,
		Vault:         providersession.NewTokenVault(tokenRing, h.store, h.clock.Now),
		Metrics:       h.metrics, MetricsOnMainListener: true,
		// High limits, so that the hostile table's failed logins and the
		// fuzzers' sign-ups all get their own answer rather than 429 once
		// a limit is reached.
		Passwords:  &server.PasswordOptions{MaxFailures: 100000},
		Email:      &server.EmailOptions{Sender: discardMail{}, MaxSends: 100000},
		WebAuthn:   &server.WebAuthnOptions{RelyingParty: rp},
		MaxSignups: 100000,
	})
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := h.srv.FlushEmail(ctx); err != nil {
			t.Errorf("FlushEmail: %v", err)
		}
	})
	if ln != nil {
		h.http = &httptest.Server{Listener: ln, Config: &http.Server{
			Handler: h.srv.Handler(), ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: maxHeaderBytes,
		}}
		h.http.Start()
		t.Cleanup(h.http.Close)
	}
	return h
}

// serve sends req to the broker's handler directly (no listener) and
// returns the answer.
func (h *harness) serve(req *http.Request) *response {
	rec := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(rec, req)
	res := rec.Result()
	res.Request = req
	return &response{Response: res, body: rec.Body.Bytes()}
}

// Tables whose contents a refused request must leave exactly as they were.
// rate_limits is checked apart (dbState.limits): a failed password login
// counts against its client IP and key there by design (SPEC §6).
var writeTables = []string{"users", "keys", "sessions", "authenticators", "verification_tokens", "flow_states"}

// dbState is every row of the broker's tables, rendered as text.
type dbState struct {
	tables map[string][]string // table → sorted rows
	limits map[string]string   // rate_limits bucket → row
}

func snapshot(t testing.TB, st *sqlstore.Store) dbState {
	t.Helper()
	ctx := context.Background()
	s := dbState{tables: map[string][]string{}, limits: map[string]string{}}
	read := func(table string, each func(cols []string, vals []any)) {
		rows, err := st.DB().QueryxContext(ctx, "SELECT * FROM "+table)
		if err != nil {
			t.Fatalf("snapshot %s: %v", table, err)
		}
		defer rows.Close()
		cols, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			vals, err := rows.SliceScan()
			if err != nil {
				t.Fatalf("snapshot %s: %v", table, err)
			}
			each(cols, vals)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("snapshot %s: %v", table, err)
		}
	}
	render := func(cols []string, vals []any) string {
		var b strings.Builder
		for i, v := range vals {
			if b2, ok := v.([]byte); ok {
				v = string(b2)
			}
			fmt.Fprintf(&b, "%s=%v ", cols[i], v)
		}
		return b.String()
	}
	for _, table := range writeTables {
		var rows []string
		read(table, func(cols []string, vals []any) { rows = append(rows, render(cols, vals)) })
		sort.Strings(rows)
		s.tables[table] = rows
	}
	read("rate_limits", func(cols []string, vals []any) {
		row := render(cols, vals)
		for i, c := range cols {
			if c == "bucket" {
				b := vals[i]
				if bb, ok := b.([]byte); ok {
					b = string(bb)
				}
				s.limits[fmt.Sprint(b)] = row
			}
		}
	})
	return s
}

// unchanged reports how after differs from before. loginCounts allows
// changes of the password buckets (login-ip:…, login-key:…, signup-ip:…)
// only; flowTaken allows one new flow_states row (a ceremony taken once)
// and the signup-ip bucket its beginning counted in (a passkey sign-up).
func (before dbState) unchanged(after dbState, loginCounts, flowTaken bool) []string {
	var diffs []string
	for _, table := range writeTables {
		b, a := before.tables[table], after.tables[table]
		if flowTaken && table == "flow_states" && len(a) == len(b)+1 {
			a = slices.DeleteFunc(slices.Clone(a), func(row string) bool { return !slices.Contains(b, row) })
		}
		if !slices.Equal(a, b) {
			diffs = append(diffs, fmt.Sprintf("table %s: %d rows before, %d after; before %q, after %q", table, len(b), len(a), b, a))
		}
	}
	buckets := map[string]bool{}
	for k := range before.limits {
		buckets[k] = true
	}
	for k := range after.limits {
		buckets[k] = true
	}
	for k := range buckets {
		if before.limits[k] == after.limits[k] {
			continue
		}
		if loginCounts && (strings.HasPrefix(k, "login-ip:") || strings.HasPrefix(k, "login-key:") || strings.HasPrefix(k, "signup-ip:")) {
			continue
		}
		if flowTaken && strings.HasPrefix(k, "signup-ip:") {
			continue
		}
		diffs = append(diffs, fmt.Sprintf("rate_limits bucket %q: %q → %q", k, before.limits[k], after.limits[k]))
	}
	return diffs
}

// bareReader hides the length of its reader, so that the client sends the
// body chunked, without Content-Length.
type bareReader struct{ io.Reader }

// hostileCase is one malformed request and the answer it must get.
type hostileCase struct {
	name   string
	method string
	target string // path and query, sent as written
	ct     string // Content-Type
	body   string
	// chunked sends the body with Transfer-Encoding: chunked.
	chunked bool
	// hdr are extra headers; "" deletes a default one (Accept:
	// application/json; for other methods than GET, a same-origin Origin
	// and Sec-Fetch-Site).
	hdr map[string]string
	// user sends the signed-in owner's session cookie.
	user bool
	// raw, when set, is sent as is over TCP instead (method … unused).
	raw string
	// begin, when set, is a passkey options route called first (a
	// sign-up, or a usernameless login): "$STATE" in body becomes its state and its
	// flow cookie goes with the request, so that the body reaches the
	// ceremony's checks. Taking the ceremony records it as used (one
	// flow_states row), by design: a ceremony is tried at most once.
	begin string

	status int
	// code is the error code of the JSON answer, or shown on the error
	// page (page). Empty: net/http's own plain answer.
	code string
	page bool
	// logins: a refused password check, which counts in its login-ip and
	// login-key rate-limit buckets, or a refused sign-up, which counts in
	// its signup-ip bucket.
	logins bool
}

const (
	ctJSON = "application/json"
	ctForm = "application/x-www-form-urlencoded"

	ownerEmail    = "owner@example.com"
	ownerPassword = "correct horse battery staple"
)

// htmlAccept is what a browser navigation sends.
var htmlAccept = map[string]string{"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// crossSite is a browser request from another site.
var crossSite = map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}

func hostileCases(credID string) []hostileCase {
	linkToken := strings.Repeat("A", 43) // the shape of a link token
	sessToken := strings.Repeat("a", 40) // the shape of a session token
	bigJSON := `{"email":"` + strings.Repeat("a", 70_000) + `@example.com"}`
	millionJSON := "[" + strings.Repeat("0,", 1_000_000) + "0]"
	nestedArrays := strings.Repeat("[", 10_001) + strings.Repeat("]", 10_001)
	nestedObject := `{"email":` + strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000) + `,"password":"x"}`
	longArray := "[" + strings.Repeat("0,", 32_000) + "0]" // within the 64 KiB limit
	signup := func(email, password string) string {
		b, _ := json.Marshal(map[string]string{"email": email, "password": password})
		return string(b)
	}
	const injSQL = `'; DROP TABLE users; --`
	const injHTML = `<script>alert(1)</script>`
	const injCRLF = "\r\nSet-Cookie: auth_session=x"

	cs := []hostileCase{
		// --- wrong methods: 405 METHOD_NOT_ALLOWED with Allow ---
		{name: "POST /healthz", method: "POST", target: "/healthz", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "DELETE /readyz", method: "DELETE", target: "/readyz", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "POST /session", method: "POST", target: "/session", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "PUT /session", method: "PUT", target: "/session", ct: ctJSON, body: "{}", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "GET /logout", method: "GET", target: "/logout", user: true, status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "DELETE /login", method: "DELETE", target: "/login", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "POST /login/github", method: "POST", target: "/login/github", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "PUT /login/github/callback", method: "PUT", target: "/login/github/callback?state=x&code=y", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "GET /link/github", method: "GET", target: "/link/github", user: true, status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "POST /auth", method: "POST", target: "/auth", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "POST /sessions", method: "POST", target: "/sessions", user: true, status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "GET /sessions/{id}", method: "GET", target: "/sessions/abc", user: true, status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "GET /sessions/revoke-all", method: "GET", target: "/sessions/revoke-all", user: true, status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "POST /account", method: "POST", target: "/account", user: true, status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "DELETE /account/password", method: "DELETE", target: "/account/password", user: true, status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "PUT /account/password/reset", method: "PUT", target: "/account/password/reset", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "GET /account/password/reset/confirm", method: "GET", target: "/account/password/reset/confirm", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "GET /signup/password", method: "GET", target: "/signup/password", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "DELETE /signup/password/verify", method: "DELETE", target: "/signup/password/verify", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "POST /login/email/callback", method: "POST", target: "/login/email/callback", ct: ctForm, body: "token=x", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "GET /webauthn/register/options", method: "GET", target: "/webauthn/register/options", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "PUT /webauthn/register/verify", method: "PUT", target: "/webauthn/register/verify", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "GET /webauthn/login/options", method: "GET", target: "/webauthn/login/options", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "PUT /webauthn/login/verify", method: "PUT", target: "/webauthn/login/verify", ct: ctJSON, body: "{}", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "POST /webauthn/credentials", method: "POST", target: "/webauthn/credentials", user: true, ct: ctJSON, body: "{}", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "PUT /webauthn/credentials/{id}", method: "PUT", target: "/webauthn/credentials/" + credID, user: true, ct: ctJSON, body: `{"name":"x"}`, status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "POST /metrics", method: "POST", target: "/metrics", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "POST /assets/{file}", method: "POST", target: "/assets/broker.css", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "OPTIONS /login", method: "OPTIONS", target: "/login", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "TRACE /session", method: "TRACE", target: "/session", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "POST /", method: "POST", target: "/", status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "method 405 as an error page", method: "DELETE", target: "/login", hdr: htmlAccept, status: 405, code: "METHOD_NOT_ALLOWED", page: true},

		// --- unknown routes and providers, path traversal: 404 NOT_FOUND ---
		{name: "unknown route", method: "GET", target: "/nope", status: 404, code: "NOT_FOUND"},
		{name: "unknown route page", method: "GET", target: "/nope", hdr: htmlAccept, status: 404, code: "NOT_FOUND", page: true},
		{name: "/account/nope", method: "GET", target: "/account/nope", user: true, status: 404, code: "NOT_FOUND"},
		{name: "unknown provider", method: "GET", target: "/login/nope", status: 404, code: "NOT_FOUND"},
		{name: "reserved name as provider: password", method: "GET", target: "/login/password", status: 404, code: "NOT_FOUND"},
		{name: "reserved name as provider: email", method: "GET", target: "/login/email", status: 404, code: "NOT_FOUND"},
		{name: "provider with HTML", method: "GET", target: "/login/%3Cscript%3Ealert(1)%3C%2Fscript%3E", status: 404, code: "NOT_FOUND"},
		{name: "unknown provider callback", method: "GET", target: "/login/nope/callback?state=x&code=y", status: 404, code: "NOT_FOUND"},
		{name: "link unknown provider", method: "POST", target: "/link/nope", user: true, status: 404, code: "NOT_FOUND"},
		{name: "unknown webauthn route", method: "POST", target: "/webauthn/nope", ct: ctJSON, body: "{}", status: 404, code: "NOT_FOUND"},
		{name: "/metrics/x", method: "GET", target: "/metrics/x", status: 404, code: "NOT_FOUND"},
		{name: "unknown asset", method: "GET", target: "/assets/nope.css", status: 404, code: "NOT_FOUND"},
		{name: "asset traversal %2e%2e%2f", method: "GET", target: "/assets/%2e%2e%2fserver.go", status: 404, code: "NOT_FOUND"},
		{name: "asset traversal ..%2f", method: "GET", target: "/assets/..%2fpages.go", status: 404, code: "NOT_FOUND"},
		{name: "asset traversal into web/", method: "GET", target: "/assets/%2e%2e%2fweb%2fbroker.css", status: 404, code: "NOT_FOUND"},
		{name: "asset traversal backslash", method: "GET", target: `/assets/..%5Cserver.go`, status: 404, code: "NOT_FOUND"},
		{name: "asset NUL", method: "GET", target: "/assets/broker.css%00.js", status: 404, code: "NOT_FOUND"},
		{name: "asset not served: txt", method: "GET", target: "/assets/common-passwords.txt", status: 404, code: "NOT_FOUND"},
		{name: "asset not served: template", method: "GET", target: "/assets/login.html", status: 404, code: "NOT_FOUND"},
		{name: "asset double-encoded traversal", method: "GET", target: "/assets/%252e%252e%252fserver.go", status: 404, code: "NOT_FOUND"},

		// --- bodies past server.max_body_bytes: 413 REQUEST_TOO_LARGE ---
		{name: "signup body too large", method: "POST", target: "/signup/password", ct: ctJSON, body: bigJSON, status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "signup body too large, chunked", method: "POST", target: "/signup/password", ct: ctJSON, body: bigJSON, chunked: true, status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "login body of 1M elements", method: "POST", target: "/login/password", ct: ctJSON, body: millionJSON, status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "login body of 1M elements, chunked", method: "POST", target: "/login/password", ct: ctJSON, body: millionJSON, chunked: true, status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "email form too large, chunked", method: "POST", target: "/login/email", ct: ctForm, body: "email=" + strings.Repeat("a", 70_000), chunked: true, status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "email multipart too large, chunked", method: "POST", target: "/login/email", ct: "multipart/form-data; boundary=XX",
			body: "--XX\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n" + strings.Repeat("a", 70_000) + "\r\n--XX--\r\n", chunked: true, status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "passkey options too large, chunked", method: "POST", target: "/webauthn/register/options", ct: ctJSON, body: bigJSON, chunked: true, status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "passkey verify too large", method: "POST", target: "/webauthn/login/verify", ct: ctJSON, body: bigJSON, status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "passkey rename too large, chunked", method: "PATCH", target: "/webauthn/credentials/" + credID, user: true, ct: ctJSON, body: bigJSON, chunked: true, status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "logout body too large, chunked", method: "POST", target: "/logout", user: true, ct: ctJSON, body: bigJSON, chunked: true, status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "revoke-all body too large, chunked", method: "POST", target: "/sessions/revoke-all", user: true, ct: ctJSON, body: bigJSON, chunked: true, status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "delete session body too large", method: "DELETE", target: "/sessions/abc", user: true, ct: ctJSON, body: bigJSON, status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "GET with a body too large", method: "GET", target: "/session", ct: ctJSON, body: bigJSON, status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "reset confirm too large, chunked", method: "POST", target: "/account/password/reset/confirm", ct: ctJSON, body: bigJSON, chunked: true, status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "link form too large", method: "POST", target: "/link/github", user: true, ct: ctForm, body: "redirect_to=" + strings.Repeat("a", 70_000), status: 413, code: "REQUEST_TOO_LARGE"},
		{name: "change password too large, chunked", method: "POST", target: "/account/password", user: true, ct: ctJSON, body: bigJSON, chunked: true, status: 413, code: "REQUEST_TOO_LARGE"},

		// --- wrong content types: 415 UNSUPPORTED_MEDIA_TYPE ---
		{name: "signup text/plain", method: "POST", target: "/signup/password", ct: "text/plain", body: signup("a@example.com", ownerPassword), status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		{name: "login application/xml", method: "POST", target: "/login/password", ct: "application/xml", body: "<email>a@example.com</email>", status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		{name: "email without Content-Type", method: "POST", target: "/login/email", body: `{"email":"a@example.com"}`, status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		{name: "email unparsable Content-Type", method: "POST", target: "/login/email", ct: ";;;", body: `{"email":"a@example.com"}`, status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		{name: "change password text/plain", method: "POST", target: "/account/password", user: true, ct: "text/plain", body: "x", status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		{name: "reset request json-patch", method: "POST", target: "/account/password/reset", ct: "application/json-patch+json", body: `{"email":"a@example.com"}`, status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		{name: "reset confirm application/jsonx", method: "POST", target: "/account/password/reset/confirm", ct: "application/jsonx", body: "{}", status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		{name: "verify text/csv", method: "POST", target: "/signup/password/verify", ct: "text/csv", body: "token,email", status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		{name: "passkey register options text/plain", method: "POST", target: "/webauthn/register/options", ct: "text/plain", body: `{"name":"ann"}`, status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		{name: "passkey login options as a form", method: "POST", target: "/webauthn/login/options", ct: ctForm, body: "name=ann", status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		{name: "passkey register verify text/plain", method: "POST", target: "/webauthn/register/verify", ct: "text/plain", body: `{"state":"x"}`, status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		{name: "passkey login verify multipart", method: "POST", target: "/webauthn/login/verify", ct: "multipart/form-data; boundary=XX", body: "--XX--\r\n", status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		{name: "passkey rename text/plain", method: "PATCH", target: "/webauthn/credentials/" + credID, user: true, ct: "text/plain", body: `{"name":"x"}`, status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},

		// --- malformed JSON and forms: 400 AUTH_INVALID_REQUEST ---
		{name: "signup truncated JSON", method: "POST", target: "/signup/password", ct: ctJSON, body: `{"email":`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup trailing garbage", method: "POST", target: "/signup/password", ct: ctJSON, body: signup("tg@example.com", ownerPassword) + " x", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup two objects", method: "POST", target: "/signup/password", ct: ctJSON, body: signup("two@example.com", ownerPassword) + "{}", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup wrong types", method: "POST", target: "/signup/password", ct: ctJSON, body: `{"email":123,"password":true}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup array", method: "POST", target: "/signup/password", ct: ctJSON, body: `["a@example.com"]`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup 10k nested arrays", method: "POST", target: "/signup/password", ct: ctJSON, body: nestedArrays, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup 5k nested objects", method: "POST", target: "/signup/password", ct: ctJSON, body: nestedObject, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup 32k-element array", method: "POST", target: "/signup/password", ct: ctJSON, body: longArray, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup invalid UTF-8 in email", method: "POST", target: "/signup/password", ct: ctJSON, body: `{"email":"u` + "\xff\xfe" + `@example.com","password":"` + ownerPassword + `"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup invalid UTF-8 in password", method: "POST", target: "/signup/password", ct: ctJSON, body: `{"email":"utf8@example.com","password":"` + ownerPassword + "\xc3\x28" + `"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup duplicate keys", method: "POST", target: "/signup/password", ct: ctJSON, body: `{"email":"dup1@example.com","email":"dup2@example.com","password":"` + ownerPassword + `"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup duplicate keys, other case", method: "POST", target: "/signup/password", ct: ctJSON, body: `{"email":"dup1@example.com","EMAIL":"dup2@example.com","password":"` + ownerPassword + `"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup null", method: "POST", target: "/signup/password", ct: ctJSON, body: "null", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup empty JSON body", method: "POST", target: "/signup/password", ct: ctJSON, body: "", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup SQL in email", method: "POST", target: "/signup/password", ct: ctJSON, body: signup(injSQL, ownerPassword), status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup SQL in email local part", method: "POST", target: "/signup/password", ct: ctJSON, body: signup(`x'--@example.com' OR '1'='1`, ownerPassword), status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup HTML in email", method: "POST", target: "/signup/password", ct: ctJSON, body: signup(injHTML+"@example.com", ownerPassword), status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup CRLF in email", method: "POST", target: "/signup/password", ct: ctJSON, body: signup("a@example.com"+injCRLF, ownerPassword), status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup email too long", method: "POST", target: "/signup/password", ct: ctJSON, body: signup(strings.Repeat("a", 250)+"@example.com", ownerPassword), status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup display-name address", method: "POST", target: "/signup/password", ct: ctJSON, body: signup("Ann <ann@example.com>", ownerPassword), status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup password too short", method: "POST", target: "/signup/password", ct: ctJSON, body: signup("short@example.com", "abc"), status: 422, code: "AUTH_INVALID_PASSWORD"},
		{name: "signup password with NUL", method: "POST", target: "/signup/password", ct: ctJSON, body: signup("nul@example.com", ownerPassword+"\x00"), status: 422, code: "AUTH_INVALID_PASSWORD"},
		{name: "signup password of the owner's address", method: "POST", target: "/signup/password", ct: ctJSON, body: signup(ownerEmail, ownerPassword), status: 409, code: "AUTH_DUPLICATE_KEY_ID", logins: true},
		{name: "signup form invalid UTF-8 email", method: "POST", target: "/signup/password", ct: ctForm, body: "email=u%FF%FE%40example.com&password=" + url.QueryEscape(ownerPassword), status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup form invalid UTF-8 password", method: "POST", target: "/signup/password", ct: ctForm, body: "email=formutf8%40example.com&password=abcdefgh%C3%28", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup form bad escape", method: "POST", target: "/signup/password", ct: ctForm, body: "email=%zz&password=x", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup form error page", method: "POST", target: "/signup/password", ct: ctForm, hdr: htmlAccept, body: "email=" + url.QueryEscape(injSQL) + "&password=x", status: 400, code: "AUTH_INVALID_REQUEST", page: true},
		{name: "signup multipart without boundary", method: "POST", target: "/signup/password", ct: "multipart/form-data", body: "--XX--", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup multipart cut short", method: "POST", target: "/signup/password", ct: "multipart/form-data; boundary=XX", body: "--XX\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\na@ex", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "signup bad chunked encoding", raw: "POST /signup/password HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
			status: 400, code: "AUTH_INVALID_REQUEST"},

		// --- password login: refused, counted in rate_limits ---
		{name: "login without password", method: "POST", target: "/login/password", ct: ctJSON, body: `{"email":"a@example.com"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "login wrong types", method: "POST", target: "/login/password", ct: ctJSON, body: `{"email":["a@example.com"],"password":{}}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "login bearer not a bool", method: "POST", target: "/login/password", ct: ctJSON, body: `{"email":"a@example.com","password":"x","bearer":"yes"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "login duplicate keys", method: "POST", target: "/login/password", ct: ctJSON, body: `{"email":"` + ownerEmail + `","password":"wrong","password":"` + ownerPassword + `"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "login invalid UTF-8 password", method: "POST", target: "/login/password", ct: ctJSON, body: `{"email":"` + ownerEmail + `","password":"` + "\xff" + `"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "login SQL in email", method: "POST", target: "/login/password", ct: ctJSON, body: signup(`' OR '1'='1`, "x"), status: 400, code: "AUTH_INVALID_PASSWORD", logins: true},
		{name: "login SQL in password", method: "POST", target: "/login/password", ct: ctJSON, body: signup(ownerEmail, `' OR '1'='1' --`), status: 400, code: "AUTH_INVALID_PASSWORD", logins: true},
		{name: "login HTML in email", method: "POST", target: "/login/password", ct: ctJSON, body: signup(injHTML, "x"), status: 400, code: "AUTH_INVALID_PASSWORD", logins: true},
		{name: "login CRLF in email", method: "POST", target: "/login/password", ct: ctJSON, body: signup(ownerEmail+injCRLF, ownerPassword), status: 400, code: "AUTH_INVALID_PASSWORD", logins: true},
		{name: "login form error page", method: "POST", target: "/login/password", ct: ctForm, hdr: htmlAccept, body: "email=" + url.QueryEscape(ownerEmail) + "&password=wrong", status: 400, code: "AUTH_INVALID_PASSWORD", page: true, logins: true},
		{name: "login cross-site", method: "POST", target: "/login/password", ct: ctForm, hdr: crossSite, body: "email=a%40example.com&password=x", status: 403, code: "AUTH_INVALID_REQUEST"},
		{name: "login Origin null", method: "POST", target: "/login/password", ct: ctJSON, hdr: map[string]string{"Origin": "null", "Sec-Fetch-Site": "cross-site"}, body: signup(ownerEmail, ownerPassword), status: 403, code: "AUTH_INVALID_REQUEST"},

		// --- changing and resetting passwords, confirming addresses ---
		{name: "change password wrong types", method: "POST", target: "/account/password", user: true, ct: ctJSON, body: `{"current_password":5}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "change password without current", method: "POST", target: "/account/password", user: true, ct: ctJSON, body: `{"new_password":"another horse battery staple"}`, status: 400, code: "AUTH_INVALID_PASSWORD"},
		{name: "change password anonymous", method: "POST", target: "/account/password", ct: ctJSON, body: `{}`, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "change password cross-site", method: "POST", target: "/account/password", user: true, ct: ctJSON, hdr: crossSite, body: `{"current_password":"` + ownerPassword + `","new_password":"another horse battery staple"}`, status: 403, code: "AUTH_INVALID_REQUEST"},
		{name: "change password duplicate keys", method: "POST", target: "/account/password", user: true, ct: ctJSON, body: `{"current_password":"` + ownerPassword + `","new_password":"another horse battery staple","new_password":"x"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "reset request not an address", method: "POST", target: "/account/password/reset", ct: ctJSON, body: `{"email":"not-an-address"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "reset request address list", method: "POST", target: "/account/password/reset", ct: ctJSON, body: `{"email":["` + ownerEmail + `"]}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "reset request header injection", method: "POST", target: "/account/password/reset", ct: ctJSON, body: `{"email":"` + ownerEmail + `\r\nBcc: victim@example.com"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "reset confirm junk token", method: "POST", target: "/account/password/reset/confirm", ct: ctJSON, body: `{"token":"` + injSQL + `","email":"` + ownerEmail + `","new_password":"another horse battery staple"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "reset confirm unknown token", method: "POST", target: "/account/password/reset/confirm", ct: ctJSON, body: `{"token":"` + linkToken + `","email":"` + ownerEmail + `","new_password":"another horse battery staple"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "reset confirm bad address", method: "POST", target: "/account/password/reset/confirm", ct: ctJSON, body: `{"token":"` + linkToken + `","email":"` + injHTML + `","new_password":"another horse battery staple"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "reset confirm weak password", method: "POST", target: "/account/password/reset/confirm", ct: ctJSON, body: `{"token":"` + linkToken + `","email":"` + ownerEmail + `","new_password":"password"}`, status: 422, code: "AUTH_INVALID_PASSWORD"},
		{name: "reset confirm cross-site", method: "POST", target: "/account/password/reset/confirm", ct: ctForm, hdr: crossSite, body: "token=" + linkToken, status: 403, code: "AUTH_INVALID_REQUEST"},
		{name: "reset page short token", method: "GET", target: "/account/password/reset?token=short&email=" + url.QueryEscape(ownerEmail), status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "reset page invalid UTF-8 email", method: "GET", target: "/account/password/reset?token=" + linkToken + "&email=u%FF%40example.com", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "reset page HTML in email", method: "GET", target: "/account/password/reset?token=" + linkToken + "&email=" + url.QueryEscape(injHTML), hdr: htmlAccept, status: 400, code: "AUTH_INVALID_REQUEST", page: true},
		{name: "verify page no token", method: "GET", target: "/signup/password/verify?email=" + url.QueryEscape(ownerEmail), status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "verify page CRLF in email", method: "GET", target: "/signup/password/verify?token=" + linkToken + "&email=a%40example.com%0d%0aSet-Cookie%3a%20x", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "verify junk token", method: "POST", target: "/signup/password/verify", ct: ctJSON, body: `{"token":"x","email":"` + ownerEmail + `"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "verify unknown token", method: "POST", target: "/signup/password/verify", ct: ctForm, body: "token=" + linkToken + "&email=" + url.QueryEscape(ownerEmail), status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "verify cross-site", method: "POST", target: "/signup/password/verify", ct: ctForm, hdr: crossSite, body: "token=" + linkToken + "&email=" + url.QueryEscape(ownerEmail), status: 403, code: "AUTH_INVALID_REQUEST"},

		// --- email links ---
		{name: "email header injection", method: "POST", target: "/login/email", ct: ctJSON, body: `{"email":"a@example.com\r\nBcc: victim@example.com"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "email HTML", method: "POST", target: "/login/email", ct: ctJSON, body: `{"email":"` + injHTML + `@example.com"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "email SQL", method: "POST", target: "/login/email", ct: ctJSON, body: `{"email":"` + injSQL + `"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "email form CRLF", method: "POST", target: "/login/email", ct: ctForm, body: "email=a%40example.com%0d%0aSet-Cookie%3a%20x%3dy", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "email two @", method: "POST", target: "/login/email", ct: ctJSON, body: `{"email":"a@b@example.com"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "email display name", method: "POST", target: "/login/email", ct: ctJSON, body: `{"email":"Ann <ann@example.com>"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "email duplicate keys", method: "POST", target: "/login/email", ct: ctJSON, body: `{"email":"a@example.com","email":"b@example.com"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "email invalid UTF-8", method: "POST", target: "/login/email", ct: ctJSON, body: `{"email":"` + "\xe2\x82" + `@example.com"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "email cross-site", method: "POST", target: "/login/email", ct: ctForm, hdr: crossSite, body: "email=a%40example.com", status: 403, code: "AUTH_INVALID_REQUEST"},
		{name: "email callback without parameters", method: "GET", target: "/login/email/callback", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "email callback junk token", method: "GET", target: "/login/email/callback?token=x&email=a%40example.com", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "email callback SQL token", method: "GET", target: "/login/email/callback?token=" + url.QueryEscape(`' OR 1=1 --`) + "&email=a%40example.com", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "email callback invalid UTF-8", method: "GET", target: "/login/email/callback?token=" + linkToken + "&email=%FF%40example.com", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "email callback CRLF", method: "GET", target: "/login/email/callback?token=" + linkToken + "&email=a%40example.com%0d%0aSet-Cookie%3a%20x", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "email callback unknown token", method: "GET", target: "/login/email/callback?token=" + linkToken + "&email=a%40example.com", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "email callback error page", method: "GET", target: "/login/email/callback?token=x", hdr: htmlAccept, status: 400, code: "AUTH_INVALID_REQUEST", page: true},

		// --- OAuth callback and linking ---
		{name: "callback without parameters", method: "GET", target: "/login/github/callback", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "callback without flow cookie", method: "GET", target: "/login/github/callback?state=x&code=y", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "callback invalid UTF-8", method: "GET", target: "/login/github/callback?state=%FF&code=%FE", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "callback forged flow cookie", method: "GET", target: "/login/github/callback?state=x&code=y",
			hdr: map[string]string{"Cookie": flowCookieName("x") + "=garbage"}, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "callback provider error without state", method: "GET", target: "/login/github/callback?error=access_denied", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "callback injection", method: "GET", target: "/login/github/callback?state=" + url.QueryEscape(injHTML) + "&code=" + url.QueryEscape(injSQL), status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "callback repeated state", method: "GET", target: "/login/github/callback?state=a&state=b&code=y&code=z", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "callback error page", method: "GET", target: "/login/github/callback?state=x&code=y", hdr: htmlAccept, status: 400, code: "AUTH_INVALID_REQUEST", page: true},
		{name: "link anonymous", method: "POST", target: "/link/github", status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "link cross-site", method: "POST", target: "/link/github", user: true, hdr: crossSite, status: 403, code: "AUTH_INVALID_REQUEST"},

		// --- sessions, cookies and bearer tokens ---
		{name: "session anonymous", method: "GET", target: "/session", status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "session garbage cookie", method: "GET", target: "/session", hdr: map[string]string{"Cookie": "auth_session=garbage"}, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "session SQL cookie", method: "GET", target: "/session", hdr: map[string]string{"Cookie": `auth_session='; DROP TABLE sessions; --`}, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "session unknown token", method: "GET", target: "/session", hdr: map[string]string{"Cookie": "auth_session=" + sessToken}, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "session quoted empty cookie", method: "GET", target: "/session", hdr: map[string]string{"Cookie": `auth_session=""; auth_session=`}, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "session 2000 cookies", method: "GET", target: "/session", hdr: map[string]string{"Cookie": strings.Repeat("a=1; ", 2000) + "auth_session=x"}, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "bearer 10 KB", method: "GET", target: "/session", hdr: map[string]string{"Authorization": "Bearer " + strings.Repeat("a", 10_000)}, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "bearer with a space", method: "GET", target: "/session", hdr: map[string]string{"Authorization": "Bearer a b"}, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "basic auth", method: "GET", target: "/session", hdr: map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "bearer unknown token", method: "GET", target: "/session", hdr: map[string]string{"Authorization": "Bearer " + sessToken}, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "bearer SQL", method: "GET", target: "/session", hdr: map[string]string{"Authorization": "Bearer '--;DROP_TABLE_sessions"}, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "session with a browser's Accept (still JSON)", method: "GET", target: "/session", hdr: htmlAccept, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "forward-auth anonymous", method: "GET", target: "/auth", status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "forward-auth garbage cookie", method: "GET", target: "/auth", hdr: map[string]string{"Cookie": "auth_session=" + url.QueryEscape(injHTML)}, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "forward-auth bad bearer", method: "GET", target: "/auth", hdr: map[string]string{"Authorization": "Bearer " + sessToken}, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "forward-auth injected X-Auth headers", method: "GET", target: "/auth", hdr: map[string]string{"X-Auth-User-Id": "admin", "X-Auth-Claim-Role": "admin"}, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "sessions anonymous", method: "GET", target: "/sessions", status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "delete session SQL id", method: "DELETE", target: "/sessions/" + url.PathEscape(injSQL), user: true, status: 404, code: "NOT_FOUND"},
		{name: "delete unknown session", method: "DELETE", target: "/sessions/" + strings.Repeat("0", 64), user: true, status: 404, code: "NOT_FOUND"},
		{name: "delete session anonymous", method: "DELETE", target: "/sessions/" + strings.Repeat("0", 64), status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "delete session cross-site", method: "DELETE", target: "/sessions/" + strings.Repeat("0", 64), user: true, hdr: crossSite, status: 403, code: "AUTH_INVALID_REQUEST"},
		{name: "revoke-all anonymous", method: "POST", target: "/sessions/revoke-all", status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "revoke-all cross-site", method: "POST", target: "/sessions/revoke-all", user: true, hdr: crossSite, status: 403, code: "AUTH_INVALID_REQUEST"},
		{name: "logout cross-site", method: "POST", target: "/logout", user: true, hdr: crossSite, status: 403, code: "AUTH_INVALID_REQUEST"},
		{name: "logout from a look-alike origin", method: "POST", target: "/logout", user: true, hdr: map[string]string{"Origin": "https://allowed.example.evil.example", "Sec-Fetch-Site": "cross-site"}, status: 403, code: "AUTH_INVALID_REQUEST"},

		// --- CORS preflights from origins that are not allowed ---
		{name: "preflight from evil", method: "OPTIONS", target: "/session", hdr: map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}, status: 403, code: "FORBIDDEN"},
		{name: "preflight from a look-alike", method: "OPTIONS", target: "/webauthn/login/options", hdr: map[string]string{"Origin": "https://allowed.example.evil.example", "Access-Control-Request-Method": "POST"}, status: 403, code: "FORBIDDEN"},
		{name: "preflight from null", method: "OPTIONS", target: "/sessions/revoke-all", hdr: map[string]string{"Origin": "null", "Access-Control-Request-Method": "POST"}, status: 403, code: "FORBIDDEN"},

		// --- passkeys ---
		{name: "passkey sign-up SQL name", method: "POST", target: "/webauthn/register/options", ct: ctJSON, body: `{"name":"` + injSQL + `"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey sign-up CRLF name", method: "POST", target: "/webauthn/register/options", ct: ctJSON, body: `{"name":"ann\r\nSet-Cookie: x=y"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey sign-up empty name", method: "POST", target: "/webauthn/register/options", ct: ctJSON, body: `{"name":""}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey sign-up long name", method: "POST", target: "/webauthn/register/options", ct: ctJSON, body: `{"name":"` + strings.Repeat("n", 100) + `"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey sign-up invalid UTF-8 name", method: "POST", target: "/webauthn/register/options", ct: ctJSON, body: `{"name":"ann` + "\xff" + `"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey sign-up invalid UTF-8 email", method: "POST", target: "/webauthn/register/options", ct: ctJSON, body: `{"name":"ann","email":"` + "\xff" + `@example.com"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey sign-up HTML email", method: "POST", target: "/webauthn/register/options", ct: ctJSON, body: `{"name":"ann","email":"` + injHTML + `@example.com"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey sign-up duplicate keys", method: "POST", target: "/webauthn/register/options", ct: ctJSON, body: `{"name":"ann","name":"bob"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey sign-up name not a string", method: "POST", target: "/webauthn/register/options", ct: ctJSON, body: `{"name":5}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey sign-up nested arrays", method: "POST", target: "/webauthn/register/options", ct: ctJSON, body: nestedArrays, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey add anonymous", method: "POST", target: "/webauthn/register/options", ct: ctJSON, body: `{}`, status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "passkey options cross-site", method: "POST", target: "/webauthn/register/options", ct: ctJSON, hdr: crossSite, body: `{"name":"ann"}`, status: 403, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey register verify without state", method: "POST", target: "/webauthn/register/verify", ct: ctJSON, body: `{}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey register verify unknown state", method: "POST", target: "/webauthn/register/verify", ct: ctJSON, body: `{"state":"x","credential":"garbage"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey register verify control name", method: "POST", target: "/webauthn/register/verify", ct: ctJSON, body: `{"state":"x","name":"a\u0007b"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey register verify trailing garbage", method: "POST", target: "/webauthn/register/verify", ct: ctJSON, body: `{"state":"x"}]`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey login unknown username", method: "POST", target: "/webauthn/login/options", ct: ctJSON, body: `{"name":"nobody"}`, status: 400, code: "AUTH_INVALID_KEY_ID"},
		{name: "passkey login mediation not a string", method: "POST", target: "/webauthn/login/options", ct: ctJSON, body: `{"mediation":5}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey login options array", method: "POST", target: "/webauthn/login/options", ct: ctJSON, body: `[]`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey login verify empty state", method: "POST", target: "/webauthn/login/verify", ct: ctJSON, body: `{"state":""}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey login verify invalid UTF-8", method: "POST", target: "/webauthn/login/verify", ct: ctJSON, body: `{"state":"x","id":"` + "\xff" + `"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey login verify forged cookie", method: "POST", target: "/webauthn/login/verify", ct: ctJSON,
			hdr: map[string]string{"Cookie": flowCookieName("x") + "=garbage"}, body: `{"state":"x","id":"AAAA","response":{}}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey login verify without a response", method: "POST", target: "/webauthn/login/verify", ct: ctJSON, body: `{"state":"$STATE","id":"AAAA","rawId":"AAAA","type":"public-key"}`, begin: "/webauthn/login/options", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey login verify junk response", method: "POST", target: "/webauthn/login/verify", ct: ctJSON, body: `{"state":"$STATE","credential":{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"AA","signature":"AA","userHandle":"AAAA"}}}`, begin: "/webauthn/login/options", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey register verify without a response", method: "POST", target: "/webauthn/register/verify", ct: ctJSON, body: `{"state":"$STATE","id":"AAAA","rawId":"AAAA","type":"public-key"}`, begin: "/webauthn/register/options", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey register verify junk attestation", method: "POST", target: "/webauthn/register/verify", ct: ctJSON, body: `{"state":"$STATE","id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"e30","attestationObject":"oA"}}`, begin: "/webauthn/register/options", status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkeys anonymous", method: "GET", target: "/webauthn/credentials", status: 401, code: "AUTH_INVALID_SESSION_ID"},
		{name: "passkey rename without name", method: "PATCH", target: "/webauthn/credentials/" + credID, user: true, ct: ctJSON, body: `{}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey rename control characters", method: "PATCH", target: "/webauthn/credentials/" + credID, user: true, ct: ctJSON, body: `{"name":"a\r\nSet-Cookie: x=y"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey rename too long", method: "PATCH", target: "/webauthn/credentials/" + credID, user: true, ct: ctJSON, body: `{"name":"` + strings.Repeat("x", 65) + `"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey rename invalid UTF-8", method: "PATCH", target: "/webauthn/credentials/" + credID, user: true, ct: ctJSON, body: `{"name":"a` + "\xff" + `"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey rename duplicate keys", method: "PATCH", target: "/webauthn/credentials/" + credID, user: true, ct: ctJSON, body: `{"name":"ok","name":"also ok"}`, status: 400, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey rename unknown id", method: "PATCH", target: "/webauthn/credentials/AAAA", user: true, ct: ctJSON, body: `{"name":"x"}`, status: 404, code: "NOT_FOUND"},
		{name: "passkey rename bad id", method: "PATCH", target: "/webauthn/credentials/%FF%FE", user: true, ct: ctJSON, body: `{"name":"x"}`, status: 404, code: "NOT_FOUND"},
		{name: "passkey rename cross-site", method: "PATCH", target: "/webauthn/credentials/" + credID, user: true, ct: ctJSON, hdr: crossSite, body: `{"name":"x"}`, status: 403, code: "AUTH_INVALID_REQUEST"},
		{name: "passkey delete SQL id", method: "DELETE", target: "/webauthn/credentials/" + url.PathEscape(injSQL), user: true, status: 404, code: "NOT_FOUND"},
		{name: "passkey delete anonymous", method: "DELETE", target: "/webauthn/credentials/" + credID, status: 401, code: "AUTH_INVALID_SESSION_ID"},

		// --- what net/http answers before any handler (SPEC §9) ---
		{name: "header too large", raw: "GET /session HTTP/1.1\r\nHost: %s\r\nX-Big: " + strings.Repeat("a", maxHeaderBytes+8192) + "\r\n\r\n", status: 431},
		{name: "URL too large", raw: "GET /login?redirect_to=" + strings.Repeat("a", maxHeaderBytes+8192) + " HTTP/1.1\r\nHost: %s\r\n\r\n", status: 431},
		{name: "garbage request line", raw: "GARBAGE\r\n\r\n", status: 400},
		{name: "no Host", raw: "GET /login HTTP/1.1\r\n\r\n", status: 400},
		{name: "two Hosts", raw: "GET /login HTTP/1.1\r\nHost: %s\r\nHost: evil.example\r\n\r\n", status: 400},
		{name: "bad Host", raw: "GET /login HTTP/1.1\r\nHost: a b\r\n\r\n", status: 400},
		{name: "malformed version", raw: "GET /login HTTP/1.x\r\nHost: %s\r\n\r\n", status: 400},
		{name: "bad escape in path", raw: "GET /login/%%zz HTTP/1.1\r\nHost: %s\r\n\r\n", status: 400},
		{name: "NUL in a header", raw: "GET /session HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer a\x00b\r\n\r\n", status: 400},
		{name: "space in a header name", raw: "GET /session HTTP/1.1\r\nHost: %s\r\nBad Name: x\r\n\r\n", status: 400},
		{name: "negative Content-Length", raw: "POST /logout HTTP/1.1\r\nHost: %s\r\nContent-Length: -5\r\n\r\n", status: 400},
		{name: "conflicting Content-Lengths", raw: "POST /logout HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef", status: 400},
		// net/http joins an obs-folded line to the header before it.
		{name: "folded header", raw: "GET /session HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\nCookie: a=b\r\n auth_session=x\r\n\r\n", status: 401, code: "AUTH_INVALID_SESSION_ID"},
	}
	return cs
}

// flowCookieName is the name of the flow cookie for state (as
// providersession.FlowStore names it over plain http).
func flowCookieName(state string) string {
	sum := sha256.Sum256([]byte(state))
	return providersession.DefaultCookieName + "_" + base64.RawURLEncoding.EncodeToString(sum[:12])
}

// sendRaw writes raw to the broker over TCP and reads one answer.
func (h *harness) sendRaw(t *testing.T, raw string) *response {
	t.Helper()
	addr := strings.TrimPrefix(h.url, "http://")
	if strings.Contains(raw, "%s") {
		raw = fmt.Sprintf(raw, addr)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { _, _ = io.WriteString(c, raw) }() // the server may answer before it has read everything
	req, _ := http.NewRequest(http.MethodGet, h.url, nil)
	res, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return &response{Response: res, body: body}
}

// TestHostileRequests sends malformed requests to every route, over a
// real listener configured like cmd/broker's, and checks that each gets
// its 4xx with its code (SPEC §9; net/http's plain 4xx where it answers
// before the broker), never sets a session, and writes nothing: every row
// of users, keys, sessions, authenticators, verification_tokens and
// flow_states is the same before and after. rate_limits may change only
// for refused password checks (a failed login counts against its client
// IP and key by design, SPEC §6), in the login-ip and login-key buckets,
// and for a refused sign-up (every attempt counts against its client IP),
// in the signup-ip bucket.
func TestHostileRequests(t *testing.T) {
	eachStore(t, func(t *testing.T, postgres bool) {
		h := newFullHarness(t, fullSetup{Postgres: postgres})
		// The owner: a password account with a passkey, signed in.
		b := h.browser()
		if r := b.mlJSON("/signup/password", mlBody{"email": ownerEmail, "password": ownerPassword}, nil); r.StatusCode != http.StatusCreated {
			t.Fatalf("sign up: %d %s", r.StatusCode, r.body)
		}
		token := b.session()
		a := webauthntest.New(h.url)
		_, opts, state := b.pkOptions("/webauthn/register/options", map[string]any{})
		cred, _, err := a.Create(opts)
		if err != nil {
			t.Fatal(err)
		}
		r := b.pkSend(http.MethodPost, "/webauthn/register/verify", pkWithState(t, cred, state, nil), nil)
		if r.StatusCode != http.StatusCreated {
			t.Fatalf("add passkey: %d %s", r.StatusCode, r.body)
		}
		credID := pkDecode[struct {
			Credential struct{ ID string }
		}](t, r).Credential.ID
		if err := h.srv.FlushEmail(context.Background()); err != nil {
			t.Fatal(err)
		}

		client := &http.Client{
			Transport:     &http.Transport{Proxy: nil, MaxResponseHeaderBytes: 1 << 20},
			Timeout:       30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		cases := hostileCases(credID)
		n4xx := 0
		for _, c := range cases {
			if c.status >= 400 && c.status < 500 {
				n4xx++
			}
		}
		if n4xx < 100 {
			t.Errorf("only %d hostile cases; want at least 100", n4xx)
		}
		t.Logf("%d hostile requests, %d of them answered 4xx", len(cases), n4xx)
		for _, c := range cases {
			before := snapshot(t, h.store)
			var r *response
			if c.raw != "" {
				r = h.sendRaw(t, c.raw)
			} else {
				r = c.send(t, h, client, token)
			}
			what := c.name
			if c.raw == "" {
				what = fmt.Sprintf("%s (%s %.80s)", c.name, c.method, c.target)
			}
			if r.StatusCode >= 500 {
				t.Errorf("%s: got %d (body %.300q)", what, r.StatusCode, r.body)
			}
			c.check(t, what, r)
			for _, sc := range r.Cookies() {
				if sc.Name == "auth_session" && sc.Value != "" {
					t.Errorf("%s: a session cookie was set", what)
				}
			}
			for _, d := range before.unchanged(snapshot(t, h.store), c.logins, c.begin != "") {
				t.Errorf("%s: written: %s", what, d)
			}
		}
		// The owner is still signed in, with their passkey.
		if !h.sessionValid(token) {
			t.Errorf("the owner's session ended")
		}
		if r := b.getJSON("/webauthn/credentials"); r.StatusCode != http.StatusOK || !strings.Contains(r.Body(), credID) {
			t.Errorf("GET /webauthn/credentials after the table: %d %s", r.StatusCode, r.body)
		}
	})
}

func (c hostileCase) send(t *testing.T, h *harness, client *http.Client, token string) *response {
	t.Helper()
	var flowCookies []*http.Cookie
	if c.begin != "" {
		opts := `{}`
		if c.begin == "/webauthn/register/options" {
			opts = `{"name":"hostile"}` // a sign-up
		}
		req, _ := http.NewRequest(http.MethodPost, h.url+c.begin, strings.NewReader(opts))
		req.Header.Set("Content-Type", ctJSON)
		req.Header.Set("Origin", h.url)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var o struct{ State string }
		err = json.NewDecoder(res.Body).Decode(&o)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("%s: POST %s: %d %v", c.name, c.begin, res.StatusCode, err)
		}
		flowCookies = res.Cookies()
		c.body = strings.ReplaceAll(c.body, "$STATE", o.State)
	}
	var body io.Reader
	if c.body != "" || c.chunked {
		if c.chunked {
			body = bareReader{strings.NewReader(c.body)}
		} else {
			body = strings.NewReader(c.body)
		}
	}
	req, err := http.NewRequest(c.method, h.url+c.target, body)
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	if c.chunked {
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
	}
	req.Header.Set("Accept", "application/json")
	if c.method != http.MethodGet && c.method != http.MethodHead && c.method != http.MethodOptions {
		req.Header.Set("Origin", h.url)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	if c.ct != "" {
		req.Header.Set("Content-Type", c.ct)
	}
	if c.user {
		req.AddCookie(&http.Cookie{Name: "auth_session", Value: token})
	}
	for _, fc := range flowCookies {
		req.AddCookie(&http.Cookie{Name: fc.Name, Value: fc.Value})
	}
	for k, v := range c.hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s: read body: %v", c.name, err)
	}
	return &response{Response: res, body: data}
}

// check compares the answer with the case's status and code.
func (c hostileCase) check(t *testing.T, what string, r *response) {
	t.Helper()
	if r.StatusCode != c.status {
		t.Errorf("%s: got status %d; want %d (body %.300q)", what, r.StatusCode, c.status, r.body)
		return
	}
	if c.status == http.StatusMethodNotAllowed && r.Header.Get("Allow") == "" {
		t.Errorf("%s: 405 without Allow", what)
	}
	ct := r.Header.Get("Content-Type")
	switch {
	case c.code == "":
		if strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s: net/http's own answer expected, got JSON %.200q", what, r.body)
		}
	case c.page:
		if !strings.HasPrefix(ct, "text/html") || !strings.Contains(r.Body(), "<code>"+c.code+"</code>") {
			t.Errorf("%s: want an error page with %s; got %q %.300q", what, c.code, ct, r.body)
		}
		if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: error page without its Content-Security-Policy", what)
		}
	default:
		var m map[string]any
		if !strings.HasPrefix(ct, "application/json") || json.Unmarshal(r.body, &m) != nil {
			t.Errorf("%s: want a JSON error; got %q %.300q", what, ct, r.body)
			return
		}
		if m["error"] != c.code {
			t.Errorf("%s: got error %v; want %s (body %.300q)", what, m["error"], c.code, r.body)
		}
		if msg, _ := m["message"].(string); msg == "" || len(m) != 2 {
			t.Errorf("%s: body %.300q is not {error, message}", what, r.body)
		}
	}
}

// redirectTricks are redirect_to values that must never be followed: each
// falls back to redirect.default ("/"), wherever a redirect_to is taken.
var redirectTricks = []string{
	"//evil.example",
	`/\evil.example`,
	"/\t/evil.example",
	"\t//evil.example",
	" //evil.example",
	"https://allowed.example.evil.example",
	"https://allowed.example.evil.example/x",
	"https://evil.example@allowed.example/",
	`https://allowed.example\@evil.example`,
	"https://allowed.example:443.evil.example/",
	"https://evil.example",
	"HTTPS://EVIL.EXAMPLE",
	"https:/evil.example",
	"https:evil.example",
	"http:evil.example",
	"javascript:alert(1)",
	"JaVaScRiPt:alert(1)",
	"data:text/html,<script>alert(1)</script>",
	"%2F%2Fevil.example",
	"/login\r\nLocation: https://evil.example",
	"//evil.example/%2e%2e",
	"///evil.example",
}

// TestHostileRedirectTo: a redirect_to trick is not an error (SPEC §7:
// redirect_to must be relative or on an allowed origin; redirect.go falls
// back to redirect.default), so these requests succeed, but nothing sends
// the browser, or hands a script, anything but "/" for them: not the login
// page's links and forms, the GitHub login, password login (JSON and
// form), the stored target of an email link, a passkey sign-up, nor
// forward-auth's login redirect. An allowed origin still works.
func TestHostileRedirectTo(t *testing.T) {
	eachStore(t, func(t *testing.T, postgres bool) {
		h := newFullHarness(t, fullSetup{Postgres: postgres})
		b := h.browser()
		if r := b.mlJSON("/signup/password", mlBody{"email": ownerEmail, "password": ownerPassword}, nil); r.StatusCode != http.StatusCreated {
			t.Fatalf("sign up: %d %s", r.StatusCode, r.body)
		}
		noEvil := func(what string, r *response) {
			t.Helper()
			for _, v := range r.Header.Values("Location") {
				if strings.Contains(strings.ToLower(v), "evil") {
					t.Errorf("%s: Location %q", what, v)
				}
			}
			if strings.Contains(strings.ToLower(r.Body()), "evil") {
				t.Errorf("%s: the answer mentions the trick: %.400q", what, r.body)
			}
		}
		const allowed = "https://allowed.example/after"
		for i, trick := range append(slices.Clone(redirectTricks), allowed) {
			want := "/"
			if trick == allowed {
				want = allowed
			}
			q := "?redirect_to=" + url.QueryEscape(trick)

			// The login page carries "/" in its links and forms.
			r := b.get("/login"+q, nil)
			if r.StatusCode != http.StatusOK {
				t.Errorf("GET /login%s: %d", q, r.StatusCode)
			}
			noEvil("GET /login"+q, r)
			if !strings.Contains(r.Body(), "redirect_to="+url.QueryEscape(want)) {
				t.Errorf("GET /login%s: the GitHub link does not carry redirect_to=%s", q, want)
			}

			// GitHub: start, provider, callback → Location want.
			if got := b.login("github", trick).Header.Get("Location"); got != want {
				t.Errorf("GitHub login with redirect_to %q: Location %q; want %q", trick, got, want)
			}

			// Password login, JSON and form.
			r = b.mlJSON("/login/password", mlBody{"email": ownerEmail, "password": ownerPassword, "redirect_to": trick}, nil)
			if got := pkDecode[struct {
				RedirectTo string `json:"redirect_to"`
			}](t, r).RedirectTo; r.StatusCode != http.StatusOK || got != want {
				t.Errorf("password login with redirect_to %q: %d, redirect_to %q; want %q", trick, r.StatusCode, got, want)
			}
			r = b.mlForm("/login/password", url.Values{"email": {ownerEmail}, "password": {ownerPassword}, "redirect_to": {trick}}, nil)
			if got := r.Header.Get("Location"); r.StatusCode != http.StatusSeeOther || got != want {
				t.Errorf("password form login with redirect_to %q: %d, Location %q; want %q", trick, r.StatusCode, got, want)
			}

			// An email link keeps want as its target.
			email := fmt.Sprintf("link%d@example.com", i)
			if r := b.mlJSON("/login/email", mlBody{"email": email, "redirect_to": trick}, nil); r.StatusCode != http.StatusAccepted {
				t.Errorf("POST /login/email: %d %s", r.StatusCode, r.body)
			}
			if err := h.srv.FlushEmail(context.Background()); err != nil {
				t.Fatal(err)
			}
			var stored []string
			if err := h.store.DB().Select(&stored, h.store.DB().Rebind("SELECT redirect_to FROM verification_tokens WHERE identifier = ?"), email); err != nil {
				t.Fatal(err)
			}
			if len(stored) != 1 || stored[0] != want {
				t.Errorf("email link with redirect_to %q: stored %q; want %q", trick, stored, want)
			}

			// A passkey sign-up answers want.
			_, opts, state := b.pkOptions("/webauthn/register/options", map[string]any{"name": fmt.Sprintf("pk%d", i), "redirect_to": trick})
			cred, _, err := webauthntest.New(h.url).Create(opts)
			if err != nil {
				t.Fatal(err)
			}
			r = b.pkSend(http.MethodPost, "/webauthn/register/verify", pkWithState(t, cred, state, map[string]any{"bearer": true}), nil)
			if got := pkDecode[pkAnswer](t, r).RedirectTo; r.StatusCode != http.StatusCreated || got != want {
				t.Errorf("passkey sign-up with redirect_to %q: %d, redirect_to %q; want %q", trick, r.StatusCode, got, want)
			}
		}

		// Forward-auth sends anonymous users to the login page, never with
		// a redirect_to off the allowed origins.
		for _, fwd := range []map[string]string{
			{"X-Forwarded-Host": "evil.example", "X-Forwarded-Uri": "/", "X-Forwarded-Proto": "https"},
			{"X-Forwarded-Host": "allowed.example.evil.example", "X-Forwarded-Uri": "/x", "X-Forwarded-Proto": "https"},
			{"X-Forwarded-Host": "allowed.example", "X-Forwarded-Uri": "//evil.example/", "X-Forwarded-Proto": "javascript"},
			{"X-Forwarded-Host": "allowed.example@evil.example", "X-Forwarded-Uri": "/", "X-Forwarded-Proto": "https"},
			{"X-Forwarded-Host": "evil.example", "X-Original-URI": "/"},
		} {
			r := h.browser().get("/auth?redirect=1", merge(map[string]string{"Accept": ""}, fwd))
			loc := r.Header.Get("Location")
			if r.StatusCode != http.StatusFound || !strings.HasPrefix(loc, h.url+"/login") {
				t.Errorf("GET /auth?redirect=1 %v: %d %q; want 302 to the login page", fwd, r.StatusCode, loc)
			}
			noEvil(fmt.Sprintf("GET /auth?redirect=1 %v", fwd), r)
		}

		// ServeMux answers unclean paths with a redirect to the cleaned
		// path on the broker itself (SPEC §9: net/http's answer stands),
		// which is then an ordinary 404.
		for raw, want := range map[string]string{
			"GET /assets/../server.go HTTP/1.1\r\nHost: %s\r\n\r\n":         "/server.go",
			"GET //evil.example/login HTTP/1.1\r\nHost: %s\r\n\r\n":         "/evil.example/login",
			"GET ///evil.example HTTP/1.1\r\nHost: %s\r\n\r\n":              "/evil.example",
			"GET /login/./../..//evil.example HTTP/1.1\r\nHost: %s\r\n\r\n": "/evil.example",
		} {
			r := h.sendRaw(t, raw)
			if (r.StatusCode != http.StatusMovedPermanently && r.StatusCode != http.StatusTemporaryRedirect) || r.Header.Get("Location") != want {
				t.Errorf("%q: %d, Location %q; want 301 or 307 to %s", raw, r.StatusCode, r.Header.Get("Location"), want)
			}
			wantError(t, h.browser().getJSON(want), http.StatusNotFound, "NOT_FOUND")
		}
		if r := h.sendRaw(t, "GET /\\evil.example HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n\r\n"); r.StatusCode != http.StatusNotFound {
			t.Errorf(`GET /\evil.example: %d; want 404`, r.StatusCode)
		}

		// /account without a (valid) session sends the browser to sign in.
		for _, cookie := range []string{"", "auth_session=garbage", "auth_session=" + url.QueryEscape("//evil.example")} {
			r := h.browser().get("/account", map[string]string{"Cookie": cookie})
			if r.StatusCode != http.StatusFound || r.Header.Get("Location") != "/login?redirect_to=%2Faccount" {
				t.Errorf("GET /account with Cookie %q: %d %q", cookie, r.StatusCode, r.Header.Get("Location"))
			}
		}
	})
}
