package server_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/brokerauth/broker/webauthn/webauthntest"
)

// Fuzz targets for the request bodies and queries the broker parses. Each
// runs the input through the whole handler (middleware included) of a
// broker with every feature on, and requires an answer below 500: a panic
// is answered 503 by the handler, so it fails here too, as does any error
// the broker does not classify as the client's. Error answers must be the
// broker's JSON error shape. Seed corpora are in testdata/fuzz/<Name>/;
// .ci/run runs each target for a few seconds.

const fuzzURL = "http://broker.test"

// fuzzBroker is a broker without a listener (requests go to its handler)
// with a signed-in user who has a password and a passkey.
type fuzzBroker struct {
	h      *harness
	token  string // the user's session
	credID string // the user's passkey
}

func newFuzzBroker(f *testing.F) *fuzzBroker {
	f.Helper()
	h := newFullHarness(f, fullSetup{PublicURL: fuzzURL})
	fb := &fuzzBroker{h: h}
	r := fb.send(http.MethodPost, "/signup/password", "application/json",
		`{"email":"`+ownerEmail+`","password":"`+ownerPassword+`","bearer":true}`, "")
	if r.StatusCode != http.StatusCreated {
		f.Fatalf("sign up: %d %s", r.StatusCode, r.body)
	}
	fb.token = pkDecode[pkAnswer](f, r).Token
	r = fb.send(http.MethodPost, "/webauthn/register/options", "application/json", "{}", fb.token)
	var opts struct{ State string }
	if err := json.Unmarshal(r.body, &opts); err != nil || r.StatusCode != http.StatusOK {
		f.Fatalf("passkey options: %d %s", r.StatusCode, r.body)
	}
	cred, _, err := webauthntest.New(fuzzURL).Create(r.body)
	if err != nil {
		f.Fatal(err)
	}
	r = fb.sendCookies(http.MethodPost, "/webauthn/register/verify", "application/json",
		string(pkWithState(f, cred, opts.State, nil)), fb.token, r.Cookies())
	if r.StatusCode != http.StatusCreated {
		f.Fatalf("add passkey: %d %s", r.StatusCode, r.body)
	}
	fb.credID = pkDecode[struct{ Credential struct{ ID string } }](f, r).Credential.ID
	return fb
}

func (fb *fuzzBroker) send(method, target, ct, body, token string) *response {
	return fb.sendCookies(method, target, ct, body, token, nil)
}

// sendCookies sends a request from the broker's own pages (same origin)
// that accepts JSON; token, when set, is the session cookie.
func (fb *fuzzBroker) sendCookies(method, target, ct, body, token string, cookies []*http.Cookie) *response {
	req := httptest.NewRequest(method, fuzzURL+target, strings.NewReader(body))
	req.RemoteAddr = "192.0.2.1:1234"
	req.Header.Set("Accept", "application/json")
	if method != http.MethodGet {
		req.Header.Set("Origin", fuzzURL)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if token != "" {
		req.AddCookie(&http.Cookie{Name: "auth_session", Value: token})
	}
	for _, c := range cookies {
		if c.MaxAge >= 0 {
			req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
	return fb.h.serve(req)
}

// wantBelow500 fails on a 5xx, and on an error answer that is not
// {"error": CODE, "message": …}.
func wantBelow500(t *testing.T, what string, r *response) {
	t.Helper()
	if r.StatusCode >= 500 {
		t.Fatalf("%s: got %d (body %.500q)", what, r.StatusCode, r.body)
	}
	if r.StatusCode < 400 {
		return
	}
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("%s: %d with body %.300q: %v", what, r.StatusCode, r.body, err)
	}
	if code, _ := m["error"].(string); code == "" || m["message"] == "" {
		t.Fatalf("%s: %d with body %.300q", what, r.StatusCode, r.body)
	}
}

// contentTypes are the declared types a fuzzed body is sent with.
var contentTypes = []string{"application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=XX", "text/plain", ""}

func contentType(n uint8) string { return contentTypes[int(n)%len(contentTypes)] }

// passwordRoutes are the routes that take a password or email-link body.
var passwordRoutes = []struct {
	path   string
	signed bool // sent with the user's session
}{
	{"/signup/password", false},
	{"/login/password", false},
	{"/account/password", true},
	{"/account/password/reset", false},
	{"/account/password/reset/confirm", false},
	{"/signup/password/verify", false},
	{"/login/email", false},
}

// FuzzPasswordJSON sends arbitrary bodies to the password and email-link
// routes (route picks one, ct the declared Content-Type).
func FuzzPasswordJSON(f *testing.F) {
	for i := range passwordRoutes {
		for _, body := range []string{
			`{"email":"ann@example.com","password":"correct horse battery staple"}`,
			`{"email":"owner@example.com","password":"wrong","redirect_to":"//evil.example","bearer":true}`,
			`{"current_password":"correct horse battery staple","new_password":"another horse battery staple"}`,
			`{"token":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","email":"owner@example.com","new_password":"x"}`,
			`{"email":"a@example.com","email":"b@example.com"}`,
			"{\"email\":\"\xff@example.com\"}",
			`[[[[[[[[[[]]]]]]]]]]`,
			`email=ann%40example.com&password=correct+horse`,
		} {
			f.Add(uint8(i), uint8(0), []byte(body))
		}
	}
	f.Add(uint8(0), uint8(1), []byte("email=a%40example.com&password=%FF%FE"))
	f.Add(uint8(6), uint8(2), []byte("--XX\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\na@example.com\r\n--XX--\r\n"))
	fb := newFuzzBroker(f)
	f.Fuzz(func(t *testing.T, route, ct uint8, body []byte) {
		rt := passwordRoutes[int(route)%len(passwordRoutes)]
		token := ""
		if rt.signed {
			token = fb.token
		}
		r := fb.send(http.MethodPost, rt.path, contentType(ct), string(body), token)
		wantBelow500(t, "POST "+rt.path, r)
	})
}

// passkeyRoutes are the passkey API's routes with bodies. A verify body
// may say "$STATE": it is replaced by the state of a ceremony begun just
// before, whose flow cookie goes with the request, so that the input
// reaches go-webauthn's parsing and our checks behind it.
var passkeyRoutes = []struct {
	method, path string
	signed       bool
	begin        string // options route of the ceremony to begin first
}{
	{"POST", "/webauthn/register/options", false, ""},
	{"POST", "/webauthn/register/options", true, ""},
	{"POST", "/webauthn/register/verify", false, "/webauthn/register/options"},
	{"POST", "/webauthn/register/verify", true, "/webauthn/register/options"},
	{"POST", "/webauthn/login/options", false, ""},
	{"POST", "/webauthn/login/verify", false, "/webauthn/login/options"},
	{"POST", "/webauthn/login/verify", true, "/webauthn/login/options"},
	{"PATCH", "/webauthn/credentials/$CRED", true, ""},
}

// FuzzWebAuthnJSON sends arbitrary bodies to the passkey API.
func FuzzWebAuthnJSON(f *testing.F) {
	seeds := []string{
		`{}`,
		`{"name":"ann","email":"ann@example.com","redirect_to":"/account"}`,
		`{"name":"<script>","email":"x@y"}`,
		`{"mediation":"conditional","reauth":true}`,
		`{"state":"$STATE","id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"e30","attestationObject":"oA"}}`,
		`{"state":"$STATE","credential":{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"","signature":"","userHandle":"AAAA"}}}`,
		`{"state":"$STATE","name":"Laptop","bearer":true,"credential":null}`,
		`{"name":"renamed"}`,
		`{"name":"a","name":"b"}`,
		"{\"name\":\"\xff\"}",
	}
	for i := range passkeyRoutes {
		for _, s := range seeds {
			f.Add(uint8(i), []byte(s))
		}
	}
	fb := newFuzzBroker(f)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := passkeyRoutes[int(route)%len(passkeyRoutes)]
		token := ""
		if rt.signed {
			token = fb.token
		}
		var cookies []*http.Cookie
		b := string(body)
		if rt.begin != "" {
			opts := `{}`
			if rt.begin == "/webauthn/register/options" && !rt.signed {
				opts = `{"name":"fuzz-signup"}`
			}
			r := fb.send(http.MethodPost, rt.begin, "application/json", opts, token)
			var o struct{ State string }
			if err := json.Unmarshal(r.body, &o); err != nil || r.StatusCode != http.StatusOK {
				t.Fatalf("POST %s: %d %s", rt.begin, r.StatusCode, r.body)
			}
			cookies = r.Cookies()
			b = strings.ReplaceAll(b, "$STATE", o.State)
		}
		path := strings.ReplaceAll(rt.path, "$CRED", fb.credID)
		r := fb.sendCookies(rt.method, path, "application/json", b, token, cookies)
		wantBelow500(t, rt.method+" "+rt.path, r)
	})
}

// FuzzCallbackQuery sends arbitrary query strings to the OAuth callback
// (with the flow cookie of a login begun just before; "$STATE" in the
// query is its state) and, with email set, to the email-link callback.
func FuzzCallbackQuery(f *testing.F) {
	for _, q := range []string{
		"state=$STATE&code=abc",
		"state=$STATE&code=",
		"state=$STATE&error=access_denied&error_description=no",
		"state=$STATE&code=abc&iss=https%3A%2F%2Fevil.example",
		"state=$STATE&state=x&code=a&code=b",
		"state=x&code=y",
		"state=%FF&code=%FE",
		"code=" + strings.Repeat("a", 3000) + "&state=$STATE",
		";;&&==%zz",
	} {
		f.Add(false, q)
	}
	for _, q := range []string{
		"token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&email=owner%40example.com",
		"token=x&email=a%40example.com",
		"token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&email=%FF%40example.com",
		"email=a%40example.com%0d%0aSet-Cookie%3a+x",
		"",
	} {
		f.Add(true, q)
	}
	fb := newFuzzBroker(f)
	f.Fuzz(func(t *testing.T, email bool, query string) {
		if email {
			req := httptest.NewRequest(http.MethodGet, fuzzURL+"/login/email/callback", nil)
			req.URL.RawQuery = query
			req.Header.Set("Accept", "application/json")
			wantBelow500(t, "GET /login/email/callback", fb.h.serve(req))
			return
		}
		start := fb.send(http.MethodGet, "/login/github?redirect_to=%2Faccount", "", "", "")
		if start.StatusCode != http.StatusFound {
			t.Fatalf("GET /login/github: %d %s", start.StatusCode, start.body)
		}
		loc, err := url.Parse(start.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodGet, fuzzURL+"/login/github/callback", nil)
		req.URL.RawQuery = strings.ReplaceAll(query, "$STATE", url.QueryEscape(loc.Query().Get("state")))
		req.Header.Set("Accept", "application/json")
		for _, c := range start.Cookies() {
			req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
		wantBelow500(t, "GET /login/github/callback", fb.h.serve(req))
	})
}
