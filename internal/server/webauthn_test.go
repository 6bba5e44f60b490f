package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/seal"
	"github.com/brokerauth/broker/internal/server"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage/storagetest"
	"github.com/brokerauth/broker/webauthn"
	"github.com/brokerauth/broker/webauthn/webauthntest"
)

// passkeyHarness is a broker with passkeys on (relying party "localhost",
// origin the harness URL) and nothing else.
func passkeyHarness(t *testing.T, postgres bool) *harness {
	t.Helper()
	return passkeyHarnessWith(t, postgres, nil)
}

// passkeyHarnessWith is passkeyHarness whose server options tune changes.
func passkeyHarnessWith(t *testing.T, postgres bool, tune func(*server.Options)) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, url: "http://" + ln.Addr().String(), clock: newClock()}
	if postgres {
		h.store = storagetest.OpenPostgres(t)
	} else {
		h.store = storagetest.OpenSQLite(t)
	}
	h.auth, err = auth.New(h.store, auth.Options{Now: h.clock.Now, Origin: h.url, AllowedOrigins: []string{appOrigin}})
	if err != nil {
		t.Fatal(err)
	}
	ring, err := seal.NewKeyring(randomKey(t))
	if err != nil {
		t.Fatal(err)
	}
	flows := providersession.NewFlowStore(providersession.FlowOptions{Keyring: ring, Consumed: h.store, Now: h.clock.Now})
	rp, err := webauthn.New(webauthn.Config{RPID: "localhost", RPName: "Broker test", Origins: []string{h.url}}, h.auth, flows)
	if err != nil {
		t.Fatal(err)
	}
	h.metrics = server.NewMetrics()
	opts := server.Options{
		Auth: h.auth, Store: h.store, Log: testLogger(), PublicURL: h.url, Flows: flows, Now: h.clock.Now,
		OriginAllowed: func(o string) bool { return o == appOrigin },
		Metrics:       h.metrics, MetricsOnMainListener: true, WebAuthn: &server.WebAuthnOptions{RelyingParty: rp},
	}
	if tune != nil {
		tune(&opts)
	}
	h.srv, err = server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.http = &httptest.Server{Listener: ln, Config: &http.Server{Handler: h.srv.Handler(), ReadHeaderTimeout: 10 * time.Second}}
	h.http.Start()
	t.Cleanup(h.http.Close)
	return h
}

// pkSend sends a JSON body (a []byte as is) from the broker's own page.
func (b *browser) pkSend(method, target string, body any, hdr map[string]string) *response {
	b.t.Helper()
	data, ok := body.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(body); err != nil {
			b.t.Fatal(err)
		}
	}
	all := map[string]string{"Accept": "application/json", "Content-Type": "application/json"}
	for k, v := range hdr {
		all[k] = v
	}
	return b.do(method, target, bytes.NewReader(data), all)
}

// pkOptions calls an options endpoint and returns the answer, which must be 200.
func (b *browser) pkOptions(path string, body any) (*response, []byte, string) {
	b.t.Helper()
	r := b.pkSend(http.MethodPost, path, body, nil)
	if r.StatusCode != http.StatusOK {
		b.t.Fatalf("POST %s: got %d; want 200 (body %q)", path, r.StatusCode, r.body)
	}
	var o struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal(r.body, &o); err != nil || o.State == "" {
		b.t.Fatalf("POST %s: no state in %q", path, r.body)
	}
	return r, r.body, o.State
}

// pkWithState adds "state" (and extra members) to a toJSON() credential, the
// flat form of a verify body.
func pkWithState(t testing.TB, cred []byte, state string, extra map[string]any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(cred, &m); err != nil {
		t.Fatal(err)
	}
	m["state"] = state
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

// pkSignUp signs up name with a passkey of a and returns the verify answer.
func (b *browser) pkSignUp(a *webauthntest.Authenticator, name string, extra map[string]any) *response {
	b.t.Helper()
	_, opts, state := b.pkOptions("/webauthn/register/options", map[string]any{"name": name, "redirect_to": "/account"})
	cred, _, err := a.Create(opts)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.pkSend(http.MethodPost, "/webauthn/register/verify", pkWithState(b.t, cred, state, extra), nil)
}

// pkLogin logs in with a passkey of a (body of the options call given).
func (b *browser) pkLogin(a *webauthntest.Authenticator, options any, c *webauthntest.Credential, extra map[string]any) *response {
	b.t.Helper()
	_, opts, state := b.pkOptions("/webauthn/login/options", options)
	cred, err := a.GetWith(opts, c)
	if err != nil {
		b.t.Fatal(err)
	}
	body := map[string]any{"state": state, "credential": json.RawMessage(cred)}
	for k, v := range extra {
		body[k] = v
	}
	return b.pkSend(http.MethodPost, "/webauthn/login/verify", body, nil)
}

func pkDecode[T any](t testing.TB, r *response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("%s %s: body %q: %v", r.Request.Method, r.Request.URL.Path, r.body, err)
	}
	return v
}

type pkAnswer struct {
	User struct {
		ID       string  `json:"id"`
		Username *string `json:"username"`
		Email    *string `json:"email"`
	} `json:"user"`
	Session *struct {
		ID    string `json:"id"`
		State string `json:"state"`
	} `json:"session"`
	Claims     map[string]any  `json:"claims"`
	RedirectTo string          `json:"redirect_to"`
	Token      string          `json:"token"`
	Credential json.RawMessage `json:"credential"`
}

func TestPasskeySignUpAndLogin(t *testing.T) {
	for _, postgres := range []bool{false, true} {
		name := "sqlite"
		if postgres {
			name = "postgres"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testPasskeySignUpAndLogin(t, postgres)
		})
	}
}

func testPasskeySignUpAndLogin(t *testing.T, postgres bool) {
	h := passkeyHarness(t, postgres)
	a := webauthntest.New(h.url)
	b := h.browser()

	r, opts, _ := b.pkOptions("/webauthn/register/options", map[string]any{"name": "alice", "email": "alice@example.com"})
	var shape map[string]map[string]any
	json.Unmarshal(opts, &shape)
	for _, k := range []string{"rp", "user", "challenge", "pubKeyCredParams", "authenticatorSelection"} {
		if _, ok := shape["publicKey"][k]; !ok {
			t.Errorf("register options: no publicKey.%s in %s", k, opts)
		}
	}
	if len(b.flowCookies()) != 1 {
		t.Errorf("register options: flow cookies %v; want one (Set-Cookie %v)", b.flowCookies(), r.Header.Values("Set-Cookie"))
	}
	h.wantUsers(0)

	cred, _, err := a.Create(opts)
	if err != nil {
		t.Fatal(err)
	}
	r = b.pkSend(http.MethodPost, "/webauthn/register/verify", pkWithState(t, cred, pkDecode[struct{ State string }](t, r).State, map[string]any{"name": "Laptop"}), nil)
	if r.StatusCode != http.StatusCreated {
		t.Fatalf("register verify: got %d; want 201 (body %q)", r.StatusCode, r.body)
	}
	ans := pkDecode[pkAnswer](t, r)
	if ans.User.Username == nil || *ans.User.Username != "alice" || ans.Session == nil || ans.RedirectTo != "/" || ans.Token != "" {
		t.Errorf("sign-up answer = %s", r.body)
	}
	var pk map[string]any
	json.Unmarshal(ans.Credential, &pk)
	for _, k := range []string{"id", "name", "created_at", "last_used_at", "backed_up", "transports"} {
		if _, ok := pk[k]; !ok {
			t.Errorf("credential %s lacks %q", ans.Credential, k)
		}
	}
	if pk["name"] != "Laptop" || strings.ContainsAny(pk["id"].(string), "+/=") {
		t.Errorf("credential = %s", ans.Credential)
	}
	if b.session() == "" || b.me() != ans.User.ID || len(b.flowCookies()) != 0 {
		t.Errorf("after sign-up: session %q, flow cookies %v", b.session(), b.flowCookies())
	}
	if got := h.keysOf(ans.User.ID); len(got) != 1 || !strings.HasPrefix(got[0], "webauthn:") {
		t.Errorf("keys = %v; want one webauthn key", got)
	}

	// Log out, then log in without a name.
	if r := b.pkSend(http.MethodPost, "/logout", []byte(""), nil); r.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %d", r.StatusCode)
	}
	r = b.pkLogin(a, map[string]any{"redirect_to": "/account"}, nil, nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("usernameless login: got %d (body %q)", r.StatusCode, r.body)
	}
	la := pkDecode[pkAnswer](t, r)
	if la.User.ID != ans.User.ID || la.RedirectTo != "/account" || la.Session == nil || la.Session.State != "active" || la.Claims == nil {
		t.Errorf("login answer = %s", r.body)
	}
	if b.me() != ans.User.ID {
		t.Errorf("/session after login: not alice")
	}

	// By username (case-insensitive), with the flat body form.
	b2 := h.browser()
	_, opts, state := b2.pkOptions("/webauthn/login/options", map[string]any{"name": "ALICE"})
	if !strings.Contains(string(opts), `"allowCredentials"`) {
		t.Errorf("login options by name lack allowCredentials: %s", opts)
	}
	cred, _ = a.Get(opts)
	r = b2.pkSend(http.MethodPost, "/webauthn/login/verify", pkWithState(t, cred, state, nil), nil)
	if r.StatusCode != http.StatusOK || b2.me() != ans.User.ID {
		t.Errorf("login by name: got %d (body %q)", r.StatusCode, r.body)
	}
	if got := pkMetric(t, h, `broker_logins_total{outcome="login",provider="webauthn"}`); got != "2" {
		t.Errorf("login metric = %q; want 2", got)
	}
}

// pkMetric returns the value of one series of /metrics, or "".
func pkMetric(t *testing.T, h *harness, series string) string {
	t.Helper()
	r := h.browser().get("/metrics", map[string]string{"Accept": "text/plain"})
	for line := range strings.SplitSeq(r.Body(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// TestPasskeySignupLimit: beginning a passkey sign-up counts against the
// client IP's sign-up limit (limits.signups); adding a passkey to an
// account does not.
func TestPasskeySignupLimit(t *testing.T) {
	t.Parallel()
	h := passkeyHarnessWith(t, false, func(o *server.Options) { o.MaxSignups = 2 })
	b := h.browser()
	for i := range 2 {
		b.pkOptions("/webauthn/register/options", map[string]any{"name": "limited" + strconv.Itoa(i)})
	}
	r := b.pkSend(http.MethodPost, "/webauthn/register/options", map[string]any{"name": "limited2"}, nil)
	wantError(t, r, http.StatusTooManyRequests, "RATE_LIMITED")
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	for _, c := range r.Cookies() {
		if c.Value != "" {
			t.Errorf("the refused sign-up set cookie %s", c.Name)
		}
	}
	// A ceremony begun within the limit still finishes.
	h.clock.Advance(time.Hour)
	_, opts, state := b.pkOptions("/webauthn/register/options", map[string]any{"name": "later"})
	cred, _, err := webauthntest.New(h.url).Create(opts)
	if err != nil {
		t.Fatal(err)
	}
	if r := b.pkSend(http.MethodPost, "/webauthn/register/verify", pkWithState(t, cred, state, nil), nil); r.StatusCode != http.StatusCreated {
		t.Fatalf("sign-up after the window: %d %s", r.StatusCode, r.body)
	}
}

func TestPasskeyBearer(t *testing.T) {
	h := passkeyHarness(t, false)
	a := webauthntest.New(h.url)
	b := h.browser()
	r := b.pkSignUp(a, "bob", map[string]any{"bearer": true})
	if r.StatusCode != http.StatusCreated {
		t.Fatalf("sign-up: %d %q", r.StatusCode, r.body)
	}
	ans := pkDecode[pkAnswer](t, r)
	if !auth.ValidSessionToken(ans.Token) || r.cookie("auth_session") != nil || b.session() != "" {
		t.Errorf("bearer sign-up: token %q, cookies %v", ans.Token, r.Header.Values("Set-Cookie"))
	}
	other := h.browser()
	if s := other.get("/session", map[string]string{"Accept": "application/json", "Authorization": "Bearer " + ans.Token}); s.StatusCode != http.StatusOK {
		t.Errorf("/session with the bearer token: %d", s.StatusCode)
	}
	r = b.pkLogin(a, map[string]any{}, nil, map[string]any{"bearer": true})
	la := pkDecode[pkAnswer](t, r)
	if r.StatusCode != http.StatusOK || !auth.ValidSessionToken(la.Token) || la.Token == ans.Token || r.cookie("auth_session") != nil {
		t.Errorf("bearer login: %d %q", r.StatusCode, r.body)
	}
	// Bearer clients manage passkeys with the token.
	l := other.get("/webauthn/credentials", map[string]string{"Accept": "application/json", "Authorization": "Bearer " + la.Token})
	if l.StatusCode != http.StatusOK || len(pkDecode[struct{ Credentials []any }](t, l).Credentials) != 1 {
		t.Errorf("credentials with a bearer token: %d %q", l.StatusCode, l.body)
	}
}

func TestPasskeyRefusals(t *testing.T) {
	h := passkeyHarness(t, false)
	a := webauthntest.New(h.url)
	owner := h.browser()
	if r := owner.pkSignUp(a, "carol", nil); r.StatusCode != http.StatusCreated {
		t.Fatalf("sign-up: %d %q", r.StatusCode, r.body)
	}
	u, _ := url.Parse(h.url)

	t.Run("replayed verify with the copied flow cookie", func(t *testing.T) {
		b := h.browser()
		_, opts, state := b.pkOptions("/webauthn/login/options", map[string]any{})
		saved := b.flowCookies()
		cred, _ := a.Get(opts)
		body := pkWithState(t, cred, state, nil)
		if r := b.pkSend(http.MethodPost, "/webauthn/login/verify", body, nil); r.StatusCode != http.StatusOK {
			t.Fatalf("first verify: %d %q", r.StatusCode, r.body)
		}
		b.jar.SetCookies(u, saved)
		wantError(t, b.pkSend(http.MethodPost, "/webauthn/login/verify", body, nil), http.StatusBadRequest, "AUTH_INVALID_REQUEST")
	})
	t.Run("replayed without the cookie", func(t *testing.T) {
		b := h.browser()
		_, opts, state := b.pkOptions("/webauthn/login/options", map[string]any{})
		cred, _ := a.Get(opts)
		body := pkWithState(t, cred, state, nil)
		b.pkSend(http.MethodPost, "/webauthn/login/verify", body, nil)
		wantError(t, b.pkSend(http.MethodPost, "/webauthn/login/verify", body, nil), http.StatusBadRequest, "AUTH_INVALID_REQUEST")
	})
	t.Run("assertion for another origin", func(t *testing.T) {
		b := h.browser()
		_, opts, state := b.pkOptions("/webauthn/login/options", map[string]any{})
		cred, _ := a.Get(opts)
		bad, _ := webauthntest.ReplaceOrigin(cred, "https://evil.example")
		wantError(t, b.pkSend(http.MethodPost, "/webauthn/login/verify", pkWithState(t, bad, state, nil), nil), http.StatusBadRequest, "AUTH_INVALID_REQUEST")
		if b.session() != "" {
			t.Error("a session cookie after a refused login")
		}
	})
	t.Run("registration for another origin", func(t *testing.T) {
		b := h.browser()
		_, opts, state := b.pkOptions("/webauthn/register/options", map[string]any{"name": "dan"})
		cred, _, _ := webauthntest.New(h.url).Create(opts)
		bad, _ := webauthntest.ReplaceOrigin(cred, "https://evil.example")
		wantError(t, b.pkSend(http.MethodPost, "/webauthn/register/verify", pkWithState(t, bad, state, nil), nil), http.StatusBadRequest, "AUTH_INVALID_REQUEST")
		h.wantUsers(1)
	})
	t.Run("no state", func(t *testing.T) {
		b := h.browser()
		_, opts, _ := b.pkOptions("/webauthn/login/options", map[string]any{})
		cred, _ := a.Get(opts)
		wantError(t, b.pkSend(http.MethodPost, "/webauthn/login/verify", cred, nil), http.StatusBadRequest, "AUTH_INVALID_REQUEST")
	})
	t.Run("unknown credential", func(t *testing.T) {
		stranger := webauthntest.New(h.url)
		b := h.browser()
		_, opts, _ := b.pkOptions("/webauthn/register/options", map[string]any{"name": "erin"})
		stranger.Create(opts) // never verified
		r := b.pkLogin(stranger, map[string]any{}, nil, nil)
		wantError(t, r, http.StatusBadRequest, "AUTH_INVALID_KEY_ID")
	})
	t.Run("unknown username", func(t *testing.T) {
		wantError(t, h.browser().pkSend(http.MethodPost, "/webauthn/login/options", map[string]any{"name": "nobody"}, nil), http.StatusBadRequest, "AUTH_INVALID_KEY_ID")
	})
	t.Run("taken username", func(t *testing.T) {
		wantError(t, h.browser().pkSend(http.MethodPost, "/webauthn/register/options", map[string]any{"name": "Carol"}, nil), http.StatusConflict, "CONFLICT")
	})
	t.Run("bad username", func(t *testing.T) {
		r := h.browser().pkSend(http.MethodPost, "/webauthn/register/options", map[string]any{"name": "two words"}, nil)
		wantError(t, r, http.StatusBadRequest, "AUTH_INVALID_REQUEST")
		if !strings.Contains(r.Body(), "spaces") {
			t.Errorf("message %q does not say what is wrong", r.body)
		}
	})
	t.Run("add without a session", func(t *testing.T) {
		wantError(t, h.browser().pkSend(http.MethodPost, "/webauthn/register/options", map[string]any{}, nil), http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
	})
	t.Run("not JSON", func(t *testing.T) {
		r := h.browser().do(http.MethodPost, "/webauthn/login/options", strings.NewReader("name=x"),
			map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
		wantError(t, r, http.StatusUnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE")
		wantError(t, h.browser().pkSend(http.MethodPost, "/webauthn/login/options", []byte("{"), nil), http.StatusBadRequest, "AUTH_INVALID_REQUEST")
	})
	t.Run("cross-site", func(t *testing.T) {
		for _, path := range []string{"/webauthn/login/options", "/webauthn/register/options", "/webauthn/login/verify", "/webauthn/register/verify"} {
			r := h.browser().pkSend(http.MethodPost, path, map[string]any{}, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
			wantError(t, r, http.StatusForbidden, "AUTH_INVALID_REQUEST")
		}
	})
	t.Run("sign count regression", func(t *testing.T) {
		c := a.Credentials()[0]
		b := h.browser()
		if r := b.pkLogin(a, map[string]any{}, c, nil); r.StatusCode != http.StatusOK {
			t.Fatalf("login: %d %q", r.StatusCode, r.body)
		}
		c.SignCount = 0 // the clone's next signature says 1
		b = h.browser()
		r := b.pkLogin(a, map[string]any{}, c, nil)
		wantError(t, r, http.StatusBadRequest, "AUTH_INVALID_REQUEST")
		if b.session() != "" {
			t.Error("a session cookie after a cloned login")
		}
		if got := pkMetric(t, h, `broker_logins_total{outcome="cloned",provider="webauthn"}`); got != "1" {
			t.Errorf("cloned metric = %q; want 1", got)
		}
	})
	t.Run("method not allowed", func(t *testing.T) {
		wantError(t, h.browser().getJSON("/webauthn/login/options"), http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")
	})
}

func TestPasskeyCredentialsAPI(t *testing.T) {
	h := passkeyHarness(t, false)
	ctx := context.Background()
	phone, laptop := webauthntest.New(h.url), webauthntest.New(h.url)
	b := h.browser()
	r := b.pkSignUp(phone, "frank", nil)
	if r.StatusCode != http.StatusCreated {
		t.Fatalf("sign-up: %d %q", r.StatusCode, r.body)
	}
	frank := pkDecode[pkAnswer](t, r).User.ID
	phoneID := webauthn.EncodeID(phone.Credentials()[0].ID)

	mallory := h.browser()
	if r := mallory.pkSignUp(webauthntest.New(h.url), "mallory", nil); r.StatusCode != http.StatusCreated {
		t.Fatalf("sign-up: %d %q", r.StatusCode, r.body)
	}

	list := func(b *browser) []map[string]any {
		t.Helper()
		r := b.getJSON("/webauthn/credentials")
		if r.StatusCode != http.StatusOK {
			t.Fatalf("GET /webauthn/credentials: %d %q", r.StatusCode, r.body)
		}
		return pkDecode[struct{ Credentials []map[string]any }](t, r).Credentials
	}

	t.Run("add a second passkey", func(t *testing.T) {
		_, opts, state := b.pkOptions("/webauthn/register/options", map[string]any{})
		if !strings.Contains(string(opts), phoneID) {
			t.Errorf("add options do not exclude the existing passkey: %s", opts)
		}
		h.clock.Advance(time.Second)
		cred, _, _ := laptop.Create(opts)
		r := b.pkSend(http.MethodPost, "/webauthn/register/verify", pkWithState(t, cred, state, nil), nil)
		if r.StatusCode != http.StatusCreated {
			t.Fatalf("add: %d %q", r.StatusCode, r.body)
		}
		if r.cookie("auth_session") != nil {
			t.Error("adding a passkey set a new session cookie")
		}
		ps := list(b)
		if len(ps) != 2 || ps[0]["id"] != phoneID || ps[1]["name"] != "Passkey 2" {
			t.Errorf("list = %v", ps)
		}
	})
	t.Run("list needs a session", func(t *testing.T) {
		wantError(t, h.browser().getJSON("/webauthn/credentials"), http.StatusUnauthorized, "AUTH_INVALID_SESSION_ID")
	})
	t.Run("only one's own", func(t *testing.T) {
		if ps := list(mallory); len(ps) != 1 || ps[0]["id"] == phoneID {
			t.Errorf("mallory's list = %v", ps)
		}
		wantError(t, mallory.getJSON("/webauthn/credentials/"+phoneID), http.StatusNotFound, "NOT_FOUND")
		if r := b.getJSON("/webauthn/credentials/" + phoneID); r.StatusCode != http.StatusOK || pkDecode[map[string]any](t, r)["id"] != phoneID {
			t.Errorf("GET own credential: %d %q", r.StatusCode, r.body)
		}
		wantError(t, mallory.pkSend(http.MethodPatch, "/webauthn/credentials/"+phoneID, map[string]any{"name": "mine"}, nil), http.StatusNotFound, "NOT_FOUND")
		wantError(t, mallory.pkSend(http.MethodDelete, "/webauthn/credentials/"+phoneID, []byte(""), nil), http.StatusNotFound, "NOT_FOUND")
		wantError(t, b.pkSend(http.MethodDelete, "/webauthn/credentials/not-base64!", []byte(""), nil), http.StatusNotFound, "NOT_FOUND")
	})
	t.Run("rename", func(t *testing.T) {
		r := b.pkSend(http.MethodPatch, "/webauthn/credentials/"+phoneID, map[string]any{"name": " Phone "}, nil)
		if r.StatusCode != http.StatusOK || pkDecode[map[string]any](t, r)["name"] != "Phone" {
			t.Errorf("rename: %d %q", r.StatusCode, r.body)
		}
		wantError(t, b.pkSend(http.MethodPatch, "/webauthn/credentials/"+phoneID, map[string]any{}, nil), http.StatusBadRequest, "AUTH_INVALID_REQUEST")
		wantError(t, b.pkSend(http.MethodPatch, "/webauthn/credentials/"+phoneID, map[string]any{"name": strings.Repeat("x", 65)}, nil), http.StatusBadRequest, "AUTH_INVALID_REQUEST")
		wantError(t, b.pkSend(http.MethodPatch, "/webauthn/credentials/"+phoneID, map[string]any{"name": "x"},
			map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}), http.StatusForbidden, "AUTH_INVALID_REQUEST")
	})
	t.Run("adding and removing need a recent sign-in", func(t *testing.T) {
		h.clock.Advance(auth.RecentAuthWindow + time.Minute)
		wantError(t, b.pkSend(http.MethodPost, "/webauthn/register/options", map[string]any{}, nil), http.StatusForbidden, "AUTH_REAUTHENTICATION_REQUIRED")
		wantError(t, b.pkSend(http.MethodDelete, "/webauthn/credentials/"+phoneID, []byte(""), nil), http.StatusForbidden, "AUTH_REAUTHENTICATION_REQUIRED")
		// Renaming does not.
		if r := b.pkSend(http.MethodPatch, "/webauthn/credentials/"+phoneID, map[string]any{"name": "Old phone"}, nil); r.StatusCode != http.StatusOK {
			t.Errorf("rename: %d %q", r.StatusCode, r.body)
		}
		// A passkey login with "reauth" re-authenticates this session.
		token := b.session()
		r := b.pkLogin(phone, map[string]any{"reauth": true}, nil, nil)
		if r.StatusCode != http.StatusOK || b.session() != token || r.cookie("auth_session") != nil {
			t.Fatalf("re-authentication: %d %q (cookies %v)", r.StatusCode, r.body, r.Header.Values("Set-Cookie"))
		}
		// Another user's passkey cannot re-authenticate it.
		c := h.browser()
		c.jar.SetCookies(pkURL(h.url), []*http.Cookie{{Name: "auth_session", Value: token}})
		r = c.pkLogin(pkStranger(t, h), map[string]any{"reauth": true}, nil, nil)
		wantError(t, r, http.StatusForbidden, "FORBIDDEN")
	})
	t.Run("remove", func(t *testing.T) {
		if r := b.pkSend(http.MethodDelete, "/webauthn/credentials/"+phoneID, []byte(""), nil); r.StatusCode != http.StatusNoContent {
			t.Fatalf("remove: %d %q", r.StatusCode, r.body)
		}
		if ps := list(b); len(ps) != 1 || ps[0]["id"] == phoneID {
			t.Errorf("list after remove = %v", ps)
		}
		if got := h.keysOf(frank); len(got) != 1 || got[0] != webauthn.KeyID(laptop.Credentials()[0].ID) {
			t.Errorf("keys = %v", got)
		}
		// The removed passkey no longer signs in.
		wantError(t, h.browser().pkLogin(phone, map[string]any{}, nil, nil), http.StatusBadRequest, "AUTH_INVALID_KEY_ID")
		// The last one cannot be removed.
		last := webauthn.EncodeID(laptop.Credentials()[0].ID)
		wantError(t, b.pkSend(http.MethodDelete, "/webauthn/credentials/"+last, []byte(""), nil), http.StatusConflict, "CONFLICT")
		if a, err := h.store.GetAuthenticator(ctx, laptop.Credentials()[0].ID); err != nil || a.UserID != frank {
			t.Errorf("the last passkey: %+v, %v", a, err)
		}
	})
}

// pkStranger signs up a fresh user and returns the
// authenticator holding its passkey.
func pkStranger(t *testing.T, h *harness) *webauthntest.Authenticator {
	t.Helper()
	a := webauthntest.New(h.url)
	if r := h.browser().pkSignUp(a, "mallory2", nil); r.StatusCode != http.StatusCreated {
		t.Fatalf("sign-up: %d %q", r.StatusCode, r.body)
	}
	return a
}

func pkURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestPasskeyPages(t *testing.T) {
	h := passkeyHarness(t, false)
	b := h.browser()
	r := b.get("/login?redirect_to=%2Faccount", nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("/login: %d", r.StatusCode)
	}
	wantSecurityHeaders(t, r)
	for _, want := range []string{
		`autocomplete="username webauthn"`, `<label for="passkey-name">`, `<script src="/assets/passkey.js" defer>`,
		`data-redirect-to="/account"`, `role="alert"`, `aria-live="polite"`, `id="passkey-signup"`, `<label for="signup-name">`,
	} {
		if !strings.Contains(r.Body(), want) {
			t.Errorf("/login lacks %s", want)
		}
	}
	if r := b.get("/login?reauth=1", nil); !strings.Contains(r.Body(), `data-reauth="1"`) || strings.Contains(r.Body(), `id="passkey-signup"`) {
		t.Errorf("/login?reauth=1 is not a re-authentication page")
	}
	for _, asset := range []string{"/assets/passkey.js", "/assets/passkey.css"} {
		a := b.get(asset, nil)
		if a.StatusCode != http.StatusOK || len(a.body) < 100 {
			t.Errorf("%s: %d", asset, a.StatusCode)
		}
	}

	a := webauthntest.New(h.url)
	b.pkSignUp(a, "grace", map[string]any{"name": "Work <laptop>"})
	acct := b.get("/account", nil)
	if acct.StatusCode != http.StatusOK {
		t.Fatalf("/account: %d", acct.StatusCode)
	}
	wantSecurityHeaders(t, acct)
	id := webauthn.EncodeID(a.Credentials()[0].ID)
	for _, want := range []string{
		`id="passkeys"`, `data-passkey="` + id + `"`, `value="Work &lt;laptop&gt;"`, `id="passkey-add"`,
		`aria-label="Remove passkey Work &lt;laptop&gt;"`, `<label for="passkey-add-name">`,
	} {
		if !strings.Contains(acct.Body(), want) {
			t.Errorf("/account lacks %s", want)
		}
	}
	if strings.Contains(acct.Body(), "Work <laptop>") {
		t.Error("/account shows a passkey name unescaped")
	}
	if n := strings.Count(acct.Body(), "/assets/passkey.js"); n != 1 {
		t.Errorf("/account loads passkey.js %d times", n)
	}
}
