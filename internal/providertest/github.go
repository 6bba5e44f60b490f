package providertest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// GitHubUser is the account the GitHub fake signs in.
type GitHubUser struct {
	// ID is the numeric user id (the broker's subject). Default 1.
	ID int64
	// Login is the handle. Default "octocat".
	Login string
	// Name is the display name; "" is sent as null, as GitHub does.
	Name string
	// Email is the public profile address of GET /user ("" → null).
	Email     string
	AvatarURL string
	// Emails are the answer of GET /user/emails.
	Emails []GitHubEmail
	// Orgs are the organization logins of GET /user/orgs.
	Orgs []string
}

// GitHubEmail is one entry of GET /user/emails.
type GitHubEmail struct {
	Email    string
	Primary  bool
	Verified bool
}

// GitHub is a fake github.com (or GitHub Enterprise Server). Configure the
// provider with AuthURL, TokenURL and APIURL (or EnterpriseAPIURL) and
// Client(). Its methods are safe for concurrent use.
type GitHub struct {
	// URL is the server's base URL (http://127.0.0.1:port).
	URL string
	// ClientID and ClientSecret are the credentials the fake accepts.
	ClientID     string
	ClientSecret string

	t      testing.TB
	srv    *httptest.Server
	closed chan struct{}

	mu           sync.Mutex
	user         GitHubUser
	grantedScope *string
	faults       map[Endpoint]Fault
	deny         string
	rotate       bool
	refreshCalls int
	codes        map[string]*githubGrant
	access       map[string]*githubGrant // access token → grant
	refresh      map[string]*githubGrant // live refresh tokens
	requests     []Request
}

type githubGrant struct {
	clientID, redirectURI, challenge, scope string
	user                                    GitHubUser
	used                                    bool
	accessTokens                            []string
}

// NewGitHub starts a fake GitHub that signs in user, and closes it when the
// test ends. Zero fields of user get defaults (ID 1, login octocat, one
// primary verified address octocat@example.com).
func NewGitHub(t testing.TB, user GitHubUser) *GitHub {
	t.Helper()
	g := &GitHub{
		ClientID:     "github-client-id",
		ClientSecret: "github-client-secret",
		t:            t,
		closed:       make(chan struct{}),
		user:         defaultGitHubUser(user),
		faults:       map[Endpoint]Fault{},
		codes:        map[string]*githubGrant{},
		access:       map[string]*githubGrant{},
		refresh:      map[string]*githubGrant{},
	}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	g.URL = g.srv.URL
	t.Cleanup(func() {
		close(g.closed)
		g.srv.Close()
	})
	return g
}

func defaultGitHubUser(u GitHubUser) GitHubUser {
	if u.ID == 0 {
		u.ID = 1
	}
	if u.Login == "" {
		u.Login = "octocat"
	}
	if u.Emails == nil {
		u.Emails = []GitHubEmail{{Email: u.Login + "@example.com", Primary: true, Verified: true}}
	}
	return u
}

// Client returns an HTTP client for the fake (loopback, no proxy).
func (g *GitHub) Client() *http.Client { return g.srv.Client() }

// AuthURL is the authorization endpoint, URL + /login/oauth/authorize.
func (g *GitHub) AuthURL() string { return g.URL + "/login/oauth/authorize" }

// TokenURL is the token endpoint, URL + /login/oauth/access_token.
func (g *GitHub) TokenURL() string { return g.URL + "/login/oauth/access_token" }

// APIURL is the REST API root in github.com layout (the server root).
func (g *GitHub) APIURL() string { return g.URL }

// EnterpriseAPIURL is the REST API root in GitHub Enterprise layout,
// URL + /api/v3.
func (g *GitHub) EnterpriseAPIURL() string { return g.URL + "/api/v3" }

// SetUser changes the account signed in by later authorizations.
func (g *GitHub) SetUser(u GitHubUser) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.user = defaultGitHubUser(u)
}

// SetGrantedScope makes the token endpoint report scope (GitHub's
// comma-separated form, e.g. "read:user,user:email,read:org") instead of
// the scope asked for at authorization.
func (g *GitHub) SetGrantedScope(scope string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.grantedScope = &scope
}

// SetFault makes endpoint e (Token or API) fail; the zero Fault restores it.
func (g *GitHub) SetFault(e Endpoint, f Fault) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.faults[e] = f
}

// Deny makes the authorization endpoint redirect back with error=code
// (e.g. "access_denied": the user clicked Cancel); "" approves again.
func (g *GitHub) Deny(code string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.deny = code
}

// RotateRefreshTokens makes each refresh return a new refresh token and
// retire the one used, which is then refused with bad_refresh_token (as
// GitHub does). Off by default: a refresh token stays valid.
func (g *GitHub) RotateRefreshTokens(on bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rotate = on
}

// RefreshCalls counts grant_type=refresh_token requests, refused ones
// included.
func (g *GitHub) RefreshCalls() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.refreshCalls
}

// Requests returns every request received so far.
func (g *GitHub) Requests() []Request {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.requests)
}

func (g *GitHub) serve(w http.ResponseWriter, r *http.Request) {
	req := record(r)
	g.mu.Lock()
	g.requests = append(g.requests, req)
	g.mu.Unlock()

	switch r.URL.Path {
	case "/login/oauth/authorize":
		g.authorize(w, r)
		return
	case "/login/oauth/access_token":
		if g.fault(w, r, Token) {
			return
		}
		g.token(w, r)
		return
	}
	path, ok := strings.CutPrefix(r.URL.Path, "/api/v3")
	if !ok {
		path = r.URL.Path
	}
	switch path {
	case "/user", "/user/emails", "/user/orgs":
		if g.fault(w, r, API) {
			return
		}
		g.api(w, r, path)
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
	}
}

// fault applies the Fault set on e and reports whether it answered.
func (g *GitHub) fault(w http.ResponseWriter, r *http.Request, e Endpoint) bool {
	g.mu.Lock()
	f := g.faults[e]
	g.mu.Unlock()
	switch {
	case f.Hang:
		hang(r, g.closed)
		return true
	case f.RateLimit > 0 && e == API:
		w.Header().Set("X-RateLimit-Limit", "5000")
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(f.RateLimit).Unix(), 10))
		status := f.Status
		if status == 0 {
			status = http.StatusForbidden
		}
		writeJSON(w, status, map[string]string{"message": "API rate limit exceeded"})
		return true
	case f.RateLimit > 0:
		w.Header().Set("Retry-After", retryAfterSeconds(f.RateLimit))
		status := f.Status
		if status == 0 {
			status = http.StatusTooManyRequests
		}
		writeJSON(w, status, map[string]string{"error": "rate_limited", "error_description": "slow down"})
		return true
	case f.Status != 0:
		writeJSON(w, f.Status, map[string]string{"message": http.StatusText(f.Status)})
		return true
	}
	return false
}

func (g *GitHub) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != g.ClientID {
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	}
	redirectURI := q.Get("redirect_uri")
	if redirectURI == "" {
		g.t.Errorf("github fake: authorize without redirect_uri")
		http.Error(w, "redirect_uri required", http.StatusBadRequest)
		return
	}
	g.mu.Lock()
	deny, user := g.deny, g.user
	g.mu.Unlock()
	back := url.Values{"state": {q.Get("state")}}
	if deny != "" {
		back.Set("error", deny)
		back.Set("error_description", "The user has denied your application access.")
		redirectBack(w, r, redirectURI, back)
		return
	}
	if q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256" {
		g.t.Errorf("github fake: authorize without PKCE S256 (code_challenge=%q, method=%q)",
			q.Get("code_challenge"), q.Get("code_challenge_method"))
		back.Set("error", "invalid_request")
		redirectBack(w, r, redirectURI, back)
		return
	}
	code := randomToken("ghcode_")
	g.mu.Lock()
	g.codes[code] = &githubGrant{
		clientID:    g.ClientID,
		redirectURI: redirectURI,
		challenge:   q.Get("code_challenge"),
		scope:       strings.Join(strings.Fields(q.Get("scope")), ","),
		user:        user,
	}
	g.mu.Unlock()
	back.Set("code", code)
	redirectBack(w, r, redirectURI, back)
}

// tokenAnswer writes a token-endpoint answer the way GitHub does: JSON when
// asked for it, form-encoded otherwise, and errors with status 200.
func tokenAnswer(w http.ResponseWriter, r *http.Request, fields map[string]string) {
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		writeJSON(w, http.StatusOK, fields)
		return
	}
	v := url.Values{}
	for k, f := range fields {
		v.Set(k, f)
	}
	w.Header().Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	_, _ = w.Write([]byte(v.Encode()))
}

func githubError(w http.ResponseWriter, r *http.Request, code, desc string) {
	tokenAnswer(w, r, map[string]string{
		"error":             code,
		"error_description": desc,
		"error_uri":         "https://docs.github.com/apps/troubleshooting",
	})
}

func (g *GitHub) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	id, secret, method := clientCredentials(r)
	if id == "" && r.PostForm.Get("client_id") != "" {
		id = r.PostForm.Get("client_id")
	}
	switch {
	case method == "":
		g.t.Errorf("github fake: token request without client credentials")
		githubError(w, r, "incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.")
		return
	case method == "both", !equal(id, g.ClientID), !equal(secret, g.ClientSecret):
		githubError(w, r, "incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.")
		return
	}
	if r.PostForm.Get("grant_type") == "refresh_token" {
		g.refreshGrant(w, r)
		return
	}

	code := r.PostForm.Get("code")
	verifier := r.PostForm.Get("code_verifier")
	if verifier == "" {
		g.t.Errorf("github fake: code exchange without code_verifier (PKCE)")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	gr := g.codes[code]
	switch {
	case gr == nil:
		githubError(w, r, "bad_verification_code", "The code passed is incorrect or expired.")
		return
	case gr.used:
		// RFC 6749 §4.1.2: a code used twice revokes what it issued.
		for _, at := range gr.accessTokens {
			delete(g.access, at)
		}
		githubError(w, r, "bad_verification_code", "The code passed is incorrect or expired.")
		return
	}
	gr.used = true
	if ru := r.PostForm.Get("redirect_uri"); ru != "" && ru != gr.redirectURI {
		githubError(w, r, "redirect_uri_mismatch", "The redirect_uri MUST match the registered callback URL for this application.")
		return
	}
	if verifier == "" || !equal(s256(verifier), gr.challenge) {
		githubError(w, r, "bad_verification_code", "The code_verifier does not match the code_challenge.")
		return
	}
	if g.grantedScope != nil {
		gr.scope = *g.grantedScope
	}
	tokenAnswer(w, r, g.issue(gr))
}

// issue mints an access and a refresh token for gr. g.mu is held.
func (g *GitHub) issue(gr *githubGrant) map[string]string {
	at := randomToken("gho_")
	rt := randomToken("ghr_")
	gr.accessTokens = append(gr.accessTokens, at)
	g.access[at] = gr
	g.refresh[rt] = gr
	return map[string]string{
		"access_token":             at,
		"token_type":               "bearer",
		"scope":                    gr.scope,
		"expires_in":               "28800",
		"refresh_token":            rt,
		"refresh_token_expires_in": "15811200",
	}
}

func (g *GitHub) refreshGrant(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refreshCalls++
	rt := r.PostForm.Get("refresh_token")
	gr := g.refresh[rt]
	if gr == nil {
		githubError(w, r, "bad_refresh_token", "The refresh token passed is incorrect or expired.")
		return
	}
	fields := g.issue(gr)
	if g.rotate {
		delete(g.refresh, rt)
	} else {
		delete(g.refresh, fields["refresh_token"])
		fields["refresh_token"] = rt
	}
	tokenAnswer(w, r, fields)
}

func (g *GitHub) api(w http.ResponseWriter, r *http.Request, path string) {
	if r.Method != http.MethodGet {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"message": "Method Not Allowed"})
		return
	}
	g.mu.Lock()
	gr := g.access[bearer(r)]
	g.mu.Unlock()
	if gr == nil {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Bad credentials"})
		return
	}
	u := gr.user
	scopes := strings.Split(gr.scope, ",")
	switch path {
	case "/user":
		writeJSON(w, http.StatusOK, map[string]any{
			"id":         u.ID,
			"node_id":    fmt.Sprintf("U_%d", u.ID),
			"login":      u.Login,
			"name":       nullable(u.Name),
			"email":      nullable(u.Email),
			"avatar_url": u.AvatarURL,
			"html_url":   "https://github.example/" + u.Login,
			"type":       "User",
			"site_admin": false,
			"created_at": "2011-01-25T18:44:36Z",
			"updated_at": "2024-01-01T00:00:00Z",
		})
	case "/user/emails":
		if !slices.Contains(scopes, "user:email") && !slices.Contains(scopes, "user") {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
			return
		}
		out := make([]map[string]any, 0, len(u.Emails))
		for _, e := range u.Emails {
			out = append(out, map[string]any{
				"email": e.Email, "primary": e.Primary, "verified": e.Verified, "visibility": "private",
			})
		}
		writeJSON(w, http.StatusOK, out)
	case "/user/orgs":
		g.orgs(w, r, u.Orgs)
	}
}

// orgs answers one page of GET /user/orgs with a Link rel="next" header,
// as GitHub paginates.
func (g *GitHub) orgs(w http.ResponseWriter, r *http.Request, orgs []string) {
	perPage, _ := strconv.Atoi(r.URL.Query().Get("per_page"))
	if perPage <= 0 || perPage > 100 {
		perPage = 30
	}
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	if page <= 0 {
		page = 1
	}
	start := min((page-1)*perPage, len(orgs))
	end := min(start+perPage, len(orgs))
	if end < len(orgs) {
		next := *r.URL
		q := next.Query()
		q.Set("page", strconv.Itoa(page+1))
		next.RawQuery = q.Encode()
		w.Header().Set("Link", fmt.Sprintf(`<%s%s>; rel="next"`, g.URL, next.RequestURI()))
	}
	out := make([]map[string]any, 0, end-start)
	for i, o := range orgs[start:end] {
		out = append(out, map[string]any{"login": o, "id": 1000 + start + i})
	}
	writeJSON(w, http.StatusOK, out)
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
