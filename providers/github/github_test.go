package github_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerauth/broker/internal/providertest"
	"github.com/brokerauth/broker/providers"
	"github.com/brokerauth/broker/providers/github"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
)

const callback = "http://broker.test/login/github/callback"

// countingTransport counts the requests that go through Deps.HTTPClient.
type countingTransport struct {
	base http.RoundTripper
	n    atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.base.RoundTrip(r)
}

func config(g *providertest.GitHub) github.Config {
	return github.Config{
		ClientID:     g.ClientID,
		ClientSecret: g.ClientSecret,
		AuthURL:      g.AuthURL(),
		TokenURL:     g.TokenURL(),
		APIURL:       g.APIURL(),
	}
}

func open(t *testing.T, g *providertest.GitHub, c github.Config) providers.Provider {
	t.Helper()
	p, err := c.Open(t.Context(), "github", providers.Deps{HTTPClient: g.Client()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return p
}

// login runs AuthCodeURL and the fake's authorization, and returns the
// attempt and the code.
func login(t *testing.T, g *providertest.GitHub, p providers.Provider) (providers.Attempt, string) {
	t.Helper()
	a := providertest.NewAttempt(callback)
	u, err := p.AuthCodeURL(t.Context(), a)
	if err != nil {
		t.Fatalf("AuthCodeURL: %v", err)
	}
	back := providertest.Authorize(t, g.Client(), u)
	if got := back.Query().Get("state"); got != a.State {
		t.Fatalf("callback state = %q; want %q", got, a.State)
	}
	return a, back.Query().Get("code")
}

func TestAuthCodeURL(t *testing.T) {
	g := providertest.NewGitHub(t, providertest.GitHubUser{})
	p := open(t, g, config(g))
	a := providertest.NewAttempt(callback)
	got, err := p.AuthCodeURL(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if base := u.Scheme + "://" + u.Host + u.Path; base != g.AuthURL() {
		t.Errorf("endpoint = %q; want %q", base, g.AuthURL())
	}
	want := url.Values{
		"client_id":             {g.ClientID},
		"redirect_uri":          {callback},
		"response_type":         {"code"},
		"scope":                 {"read:user user:email"},
		"state":                 {a.State},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(a.CodeVerifier)},
		"code_challenge_method": {"S256"},
	}
	if diff := cmp.Diff(want, u.Query()); diff != "" {
		t.Errorf("query (-want +got):\n%s", diff)
	}
	if strings.Contains(got, a.CodeVerifier) {
		t.Errorf("authorization URL carries the code verifier")
	}
}

func TestExchange(t *testing.T) {
	g := providertest.NewGitHub(t, providertest.GitHubUser{
		ID: 4242, Login: "mona", Name: "Mona Lisa", Email: "public@example.com",
		AvatarURL: "https://avatars.example/4242",
		Emails: []providertest.GitHubEmail{
			{Email: "other@example.com", Verified: true},
			{Email: "mona@example.com", Primary: true, Verified: true},
		},
		Orgs: []string{"acme"},
	})
	counter := &countingTransport{base: g.Client().Transport}
	p, err := config(g).Open(t.Context(), "github", providers.Deps{HTTPClient: &http.Client{Transport: counter}})
	if err != nil {
		t.Fatal(err)
	}
	a, code := login(t, g, p)
	before := len(g.Requests())

	id, err := p.Exchange(t.Context(), a, code)
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	want := providers.Identity{
		Subject:       "4242",
		Email:         "mona@example.com",
		EmailVerified: true,
		Name:          "Mona Lisa",
		Picture:       "https://avatars.example/4242",
		Username:      "mona",
	}
	got := id
	got.Claims, got.Profile, got.Tokens = nil, nil, nil
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("identity (-want +got):\n%s", diff)
	}
	if id.Orgs != nil {
		t.Errorf("Orgs = %v; want nil without read:org", id.Orgs)
	}
	prof, ok := id.Profile.(github.User)
	if !ok || prof.ID != 4242 || prof.Login != "mona" || prof.Email != "public@example.com" {
		t.Errorf("Profile = %#v; want github.User for 4242", id.Profile)
	}
	if got := id.Claims["login"]; got != "mona" {
		t.Errorf("Claims[login] = %v; want mona", got)
	}
	if id.Tokens == nil || id.Tokens.AccessToken == "" || id.Tokens.RefreshToken == "" || id.Tokens.Expiry.IsZero() {
		t.Fatalf("Tokens = %+v; want access, refresh and expiry", id.Tokens)
	}
	if got := id.Tokens.Extra("scope"); got != "read:user,user:email" {
		t.Errorf("scope = %v; want read:user,user:email", got)
	}

	reqs := g.Requests()[before:]
	if got, want := counter.n.Load(), int64(len(reqs)); got != want {
		t.Errorf("requests through Deps.HTTPClient = %d; want all %d", got, want)
	}
	var paths []string
	for _, r := range reqs {
		paths = append(paths, r.Path)
		switch r.Path {
		case "/login/oauth/access_token":
			if r.Header.Get("Accept") != "application/json" {
				t.Errorf("token request Accept = %q; want application/json", r.Header.Get("Accept"))
			}
			if r.Form.Get("code_verifier") != a.CodeVerifier {
				t.Errorf("token request code_verifier = %q; want the attempt's", r.Form.Get("code_verifier"))
			}
		default:
			if r.Header.Get("Authorization") != "Bearer "+id.Tokens.AccessToken {
				t.Errorf("%s without the bearer token", r.Path)
			}
		}
	}
	if diff := cmp.Diff([]string{"/login/oauth/access_token", "/user", "/user/emails"}, paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
}

func TestEmail(t *testing.T) {
	primaryUnverified := []providertest.GitHubEmail{
		{Email: "a@example.com", Primary: true},
		{Email: "b@example.com", Verified: true},
	}
	tests := []struct {
		name      string
		emails    []providertest.GitHubEmail
		allow     bool
		scope     string // granted scope; "" keeps the requested one
		wantEmail string
		wantErr   error
	}{
		{name: "primary verified", emails: []providertest.GitHubEmail{{Email: "a@example.com", Primary: true, Verified: true}}, wantEmail: "a@example.com"},
		{name: "primary unverified", emails: primaryUnverified, wantErr: providers.ErrUnverifiedEmail},
		{name: "no emails", emails: []providertest.GitHubEmail{}, wantErr: providers.ErrUnverifiedEmail},
		{name: "primary unverified, allowed", emails: primaryUnverified, allow: true},
		{name: "no user:email scope", scope: "read:user", wantErr: providers.ErrUnverifiedEmail},
		{name: "no user:email scope, allowed", scope: "read:user", allow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := providertest.NewGitHub(t, providertest.GitHubUser{ID: 7, Emails: tt.emails})
			if tt.scope != "" {
				g.SetGrantedScope(tt.scope)
			}
			c := config(g)
			c.AllowUnverifiedEmail = tt.allow
			p := open(t, g, c)
			a, code := login(t, g, p)
			id, err := p.Exchange(t.Context(), a, code)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Exchange error = %v; want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				var pe *providers.PolicyError
				if !errors.As(err, &pe) || !errors.Is(err, providers.ErrPolicy) || errors.Is(err, providers.ErrProvider) {
					t.Fatalf("error %v: want a *PolicyError matching ErrPolicy only", err)
				}
				if pe.Reason != "github account has no verified primary email" {
					t.Errorf("Reason = %q", pe.Reason)
				}
				return
			}
			if id.Email != tt.wantEmail || id.EmailVerified != (tt.wantEmail != "") {
				t.Errorf("Email, EmailVerified = %q, %v; want %q, %v", id.Email, id.EmailVerified, tt.wantEmail, tt.wantEmail != "")
			}
		})
	}
}

func TestOrgs(t *testing.T) {
	var orgs []string
	for i := range 150 {
		orgs = append(orgs, fmt.Sprintf("org-%03d", i))
	}
	g := providertest.NewGitHub(t, providertest.GitHubUser{Orgs: orgs})
	c := config(g)
	c.Scopes = []string{"read:user", "user:email", "read:org"}
	p := open(t, g, c)
	a, code := login(t, g, p)
	id, err := p.Exchange(t.Context(), a, code)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(orgs, id.Orgs); diff != "" {
		t.Errorf("Orgs (-want +got):\n%s", diff)
	}
	var pages int
	for _, r := range g.Requests() {
		if r.Path == "/user/orgs" {
			pages++
		}
	}
	if pages != 2 {
		t.Errorf("GET /user/orgs pages = %d; want 2 (100 per page)", pages)
	}

	// Asked for but not granted: no call, no orgs.
	g.SetGrantedScope("read:user,user:email")
	before := len(g.Requests())
	a, code = login(t, g, p)
	if id, err = p.Exchange(t.Context(), a, code); err != nil {
		t.Fatal(err)
	}
	if id.Orgs != nil {
		t.Errorf("Orgs = %v; want nil when read:org is not granted", id.Orgs)
	}
	for _, r := range g.Requests()[before:] {
		if r.Path == "/user/orgs" {
			t.Errorf("GET /user/orgs without read:org")
		}
	}
}

func TestEnterprise(t *testing.T) {
	g := providertest.NewGitHub(t, providertest.GitHubUser{ID: 99})
	c := config(g)
	c.APIURL = g.EnterpriseAPIURL()
	p := open(t, g, c)
	a, code := login(t, g, p)
	id, err := p.Exchange(t.Context(), a, code)
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "99" {
		t.Errorf("Subject = %q; want 99", id.Subject)
	}
	var api []string
	for _, r := range g.Requests() {
		if strings.HasPrefix(r.Path, "/api/") || strings.HasPrefix(r.Path, "/user") {
			api = append(api, r.Path)
		}
	}
	if diff := cmp.Diff([]string{"/api/v3/user", "/api/v3/user/emails"}, api); diff != "" {
		t.Errorf("API paths (-want +got):\n%s", diff)
	}
}

func TestBadVerificationCode(t *testing.T) {
	g := providertest.NewGitHub(t, providertest.GitHubUser{})
	p := open(t, g, config(g))
	a, code := login(t, g, p)
	if _, err := p.Exchange(t.Context(), a, code); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, code string }{{"replayed", code}, {"unknown", "forged"}} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Exchange(t.Context(), a, tc.code)
			var pe *providers.ProviderError
			if !errors.As(err, &pe) {
				t.Fatalf("error = %v; want *ProviderError", err)
			}
			if pe.Code != "bad_verification_code" || pe.Status != 0 || pe.Op != "exchange code" || pe.Provider != "github" {
				t.Errorf("ProviderError = %+v; want bad_verification_code from exchange code, status 0", pe)
			}
			if !errors.Is(err, providers.ErrInvalidGrant) || !errors.Is(err, providers.ErrProvider) {
				t.Errorf("error %v: want ErrInvalidGrant and ErrProvider", err)
			}
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) {
				t.Errorf("error %v: want the *oauth2.RetrieveError inside", err)
			}
		})
	}
}

func TestWrongPKCEVerifier(t *testing.T) {
	g := providertest.NewGitHub(t, providertest.GitHubUser{})
	p := open(t, g, config(g))
	a, code := login(t, g, p)
	a.CodeVerifier = oauth2.GenerateVerifier()
	if _, err := p.Exchange(t.Context(), a, code); !errors.Is(err, providers.ErrInvalidGrant) {
		t.Fatalf("Exchange with another verifier: %v; want ErrInvalidGrant", err)
	}
}

func TestUpstreamFailures(t *testing.T) {
	tests := []struct {
		name       string
		endpoint   providertest.Endpoint
		fault      providertest.Fault
		secret     string
		wantStatus int
		wantCode   string
		wantRetry  bool
		wantOp     string
	}{
		{name: "token 500", endpoint: providertest.Token, fault: providertest.Fault{Status: 500}, wantStatus: 500, wantOp: "exchange code"},
		{name: "token 503", endpoint: providertest.Token, fault: providertest.Fault{Status: 503}, wantStatus: 503, wantOp: "exchange code"},
		{name: "token rate limit", endpoint: providertest.Token, fault: providertest.Fault{RateLimit: 30 * time.Second}, wantStatus: 429, wantCode: "rate_limited", wantRetry: true, wantOp: "exchange code"},
		{name: "api 502", endpoint: providertest.API, fault: providertest.Fault{Status: 502}, wantStatus: 502, wantOp: "get user"},
		{name: "api rate limit", endpoint: providertest.API, fault: providertest.Fault{RateLimit: time.Minute}, wantStatus: 403, wantCode: "rate_limited", wantRetry: true, wantOp: "get user"},
		{name: "api 429", endpoint: providertest.API, fault: providertest.Fault{RateLimit: time.Minute, Status: 429}, wantStatus: 429, wantCode: "rate_limited", wantRetry: true, wantOp: "get user"},
		{name: "wrong client secret", secret: "wrong", wantCode: "incorrect_client_credentials", wantOp: "exchange code"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := providertest.NewGitHub(t, providertest.GitHubUser{})
			c := config(g)
			if tt.secret != "" {
				c.ClientSecret = tt.secret
			}
			p := open(t, g, c)
			a, code := login(t, g, p)
			if tt.endpoint != "" {
				g.SetFault(tt.endpoint, tt.fault)
			}
			_, err := p.Exchange(t.Context(), a, code)
			var pe *providers.ProviderError
			if !errors.As(err, &pe) || !errors.Is(err, providers.ErrProvider) {
				t.Fatalf("error = %v; want *ProviderError matching ErrProvider", err)
			}
			if errors.Is(err, providers.ErrInvalidGrant) {
				t.Errorf("error %v matches ErrInvalidGrant", err)
			}
			if pe.Status != tt.wantStatus || pe.Code != tt.wantCode || pe.Op != tt.wantOp {
				t.Errorf("got status %d, code %q, op %q; want %d, %q, %q", pe.Status, pe.Code, pe.Op, tt.wantStatus, tt.wantCode, tt.wantOp)
			}
			if got := pe.RetryAfter > 0; got != tt.wantRetry {
				t.Errorf("RetryAfter = %v; want set: %v", pe.RetryAfter, tt.wantRetry)
			}
			if strings.Contains(err.Error(), c.ClientSecret) || strings.Contains(err.Error(), code) {
				t.Errorf("error text %q leaks the secret or the code", err)
			}
		})
	}
}

func TestHang(t *testing.T) {
	for _, e := range []providertest.Endpoint{providertest.Token, providertest.API} {
		t.Run(string(e), func(t *testing.T) {
			t.Parallel()
			g := providertest.NewGitHub(t, providertest.GitHubUser{})
			p := open(t, g, config(g))
			a, code := login(t, g, p)
			g.SetFault(e, providertest.Fault{Hang: true})
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := p.Exchange(ctx, a, code)
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("Exchange took %v after a 200ms deadline", elapsed)
			}
			if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, providers.ErrProvider) {
				t.Errorf("error = %v; want DeadlineExceeded and ErrProvider", err)
			}
		})
	}
}

func TestRefresh(t *testing.T) {
	for _, rotate := range []bool{false, true} {
		t.Run(fmt.Sprintf("rotate=%v", rotate), func(t *testing.T) {
			t.Parallel()
			g := providertest.NewGitHub(t, providertest.GitHubUser{})
			g.RotateRefreshTokens(rotate)
			p := open(t, g, config(g))
			r, ok := p.(providers.Refresher)
			if !ok {
				t.Fatal("github provider is not a providers.Refresher")
			}
			a, code := login(t, g, p)
			id, err := p.Exchange(t.Context(), a, code)
			if err != nil {
				t.Fatal(err)
			}
			rt1 := id.Tokens.RefreshToken
			tok, err := r.Refresh(t.Context(), rt1)
			if err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if tok.AccessToken == "" || tok.AccessToken == id.Tokens.AccessToken {
				t.Errorf("refreshed access token = %q; want a new one", tok.AccessToken)
			}
			if rotated := tok.RefreshToken != rt1; rotated != rotate {
				t.Errorf("refresh token rotated = %v; want %v", rotated, rotate)
			}
			_, err = r.Refresh(t.Context(), rt1)
			if rotate {
				var pe *providers.ProviderError
				if !errors.Is(err, providers.ErrInvalidGrant) || !errors.As(err, &pe) || pe.Code != "bad_refresh_token" {
					t.Errorf("reused refresh token: %v; want bad_refresh_token matching ErrInvalidGrant", err)
				}
			} else if err != nil {
				t.Errorf("second refresh: %v", err)
			}
			if got := g.RefreshCalls(); got != 2 {
				t.Errorf("RefreshCalls = %d; want 2", got)
			}
			if _, err := r.Refresh(t.Context(), ""); !errors.Is(err, providers.ErrInvalidInput) {
				t.Errorf("Refresh(\"\") = %v; want ErrInvalidInput", err)
			}
		})
	}
}

func TestInvalidInput(t *testing.T) {
	g := providertest.NewGitHub(t, providertest.GitHubUser{})
	p := open(t, g, config(g))
	good := providertest.NewAttempt(callback)
	tests := []struct {
		name string
		edit func(*providers.Attempt)
		code string
	}{
		{"no state", func(a *providers.Attempt) { a.State = "" }, "c"},
		{"no verifier", func(a *providers.Attempt) { a.CodeVerifier = "" }, "c"},
		{"short verifier", func(a *providers.Attempt) { a.CodeVerifier = "abc" }, "c"},
		{"no redirect", func(a *providers.Attempt) { a.RedirectURL = "" }, "c"},
		{"no code", func(*providers.Attempt) {}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := good
			tt.edit(&a)
			if tt.code != "" {
				if _, err := p.AuthCodeURL(t.Context(), a); !errors.Is(err, providers.ErrInvalidInput) {
					t.Errorf("AuthCodeURL: %v; want ErrInvalidInput", err)
				}
			}
			if _, err := p.Exchange(t.Context(), a, tt.code); !errors.Is(err, providers.ErrInvalidInput) || errors.Is(err, providers.ErrProvider) {
				t.Errorf("Exchange: %v; want ErrInvalidInput only", err)
			}
		})
	}
	if n := len(g.Requests()); n != 0 {
		t.Errorf("fake got %d requests; want none", n)
	}
}

func TestValidate(t *testing.T) {
	ok := github.Config{ClientID: "id", ClientSecret: "secret"}
	tests := []struct {
		name string
		edit func(*github.Config)
		want []string // substrings of the error; nil means valid
	}{
		{"minimal", func(*github.Config) {}, nil},
		{"defaults", func(c *github.Config) { d := github.DefaultConfig(); d.ClientID, d.ClientSecret = "id", "s"; *c = d }, nil},
		{"enterprise", func(c *github.Config) {
			c.AuthURL, c.TokenURL, c.APIURL = "https://ghe.example/login/oauth/authorize", "https://ghe.example/login/oauth/access_token", "https://ghe.example/api/v3"
		}, nil},
		{"missing credentials", func(c *github.Config) { c.ClientID, c.ClientSecret = "", "" }, []string{"client_id: required", "client_secret: required"}},
		{"half enterprise", func(c *github.Config) { c.APIURL = "https://ghe.example/api/v3" }, []string{"set all three"}},
		{"bad url", func(c *github.Config) {
			c.AuthURL, c.TokenURL, c.APIURL = "ghe.example", "https://x/t", "https://x/api"
		}, []string{"auth_url"}},
		{"bad scope", func(c *github.Config) { c.Scopes = []string{"read:user user:email"} }, []string{"scopes[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil; want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q; want it to contain %q", err, w)
				}
			}
			if _, err := c.Open(t.Context(), "github", providers.Deps{}); err == nil {
				t.Errorf("Open accepted an invalid config")
			}
		})
	}
}

func TestLogValueHidesSecret(t *testing.T) {
	c := github.Config{ClientID: "id", ClientSecret: "s3cr3t"}
	if got := c.LogValue().String(); strings.Contains(got, "s3cr3t") {
		t.Errorf("LogValue = %q; leaks the secret", got)
	}
}
