package oidc_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerauth/broker/internal/providertest"
	"github.com/brokerauth/broker/providers"
	"github.com/brokerauth/broker/providers/oidc"
	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
)

const callback = "http://broker.test/login/dex/callback"

// clock is a test clock: real time plus an offset the test advances.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }
func config(o *providertest.OIDC) oidc.Config {
	return oidc.Config{Issuer: o.Issuer(), ClientID: o.ClientID, ClientSecret: o.ClientSecret}
}

func open(t *testing.T, o *providertest.OIDC, c oidc.Config) providers.Provider {
	t.Helper()
	return openWith(t, o, c, providers.Deps{})
}

func openWith(t *testing.T, o *providertest.OIDC, c oidc.Config, d providers.Deps) providers.Provider {
	t.Helper()
	if d.HTTPClient == nil {
		d.HTTPClient = o.Client()
	}
	p, err := c.Open(t.Context(), "dex", d)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return p
}

func login(t *testing.T, o *providertest.OIDC, p providers.Provider) (providers.Attempt, string) {
	t.Helper()
	a := providertest.NewAttempt(callback)
	u, err := p.AuthCodeURL(t.Context(), a)
	if err != nil {
		t.Fatalf("AuthCodeURL: %v", err)
	}
	back := providertest.Authorize(t, o.Client(), u)
	if got := back.Query().Get("state"); got != a.State {
		t.Fatalf("callback state = %q; want %q", got, a.State)
	}
	if e := back.Query().Get("error"); e != "" {
		t.Fatalf("callback error = %q", e)
	}
	return a, back.Query().Get("code")
}

func TestAuthCodeURL(t *testing.T) {
	o := providertest.NewOIDC(t, providertest.OIDCOptions{})
	c := config(o)
	c.AuthParams = map[string]string{"prompt": "login"}
	p := open(t, o, c)
	a := providertest.NewAttempt(callback)
	got, err := p.AuthCodeURL(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if base := u.Scheme + "://" + u.Host + u.Path; base != o.URL+"/authorize" {
		t.Errorf("endpoint = %q; want %q", base, o.URL+"/authorize")
	}
	want := url.Values{
		"client_id":             {o.ClientID},
		"redirect_uri":          {callback},
		"response_type":         {"code"},
		"scope":                 {"openid email profile"},
		"state":                 {a.State},
		"nonce":                 {a.Nonce},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(a.CodeVerifier)},
		"code_challenge_method": {"S256"},
		"prompt":                {"login"},
	}
	if diff := cmp.Diff(want, u.Query()); diff != "" {
		t.Errorf("query (-want +got):\n%s", diff)
	}
	if _, err := p.AuthCodeURL(t.Context(), providers.Attempt{State: a.State, CodeVerifier: a.CodeVerifier, RedirectURL: callback}); !errors.Is(err, providers.ErrInvalidInput) {
		t.Errorf("AuthCodeURL without nonce: %v; want ErrInvalidInput", err)
	}
}

func TestExchange(t *testing.T) {
	keys := providertest.NewKeys(t)
	for _, alg := range []string{"RS256", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			o := providertest.NewOIDC(t, providertest.OIDCOptions{Keys: keys, Alg: alg, User: providertest.OIDCUser{
				Subject: "u-1", Email: "jane@example.com", EmailVerified: true, Name: "Jane Doe",
				Picture: "https://example.com/jane.png", PreferredUsername: "jane",
				Claims: map[string]any{"groups": []string{"admins", "staff"}},
			}})
			p := open(t, o, config(o))
			a, code := login(t, o, p)
			id, err := p.Exchange(t.Context(), a, code)
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			want := providers.Identity{
				Subject: "u-1", Email: "jane@example.com", EmailVerified: true, Name: "Jane Doe",
				Picture: "https://example.com/jane.png", Username: "jane",
				Profile: oidc.Profile{
					Issuer: o.Issuer(), Subject: "u-1", Email: "jane@example.com", EmailVerified: true,
					Name: "Jane Doe", PreferredUsername: "jane", Picture: "https://example.com/jane.png",
				},
			}
			got := id
			got.Claims, got.Tokens = nil, nil
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("identity (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]any{"admins", "staff"}, id.Claims["groups"]); diff != "" {
				t.Errorf("Claims[groups] (-want +got):\n%s", diff)
			}
			if id.Claims["nonce"] != a.Nonce || id.Claims["aud"] != o.ClientID || id.Claims["iss"] != o.Issuer() {
				t.Errorf("Claims = %v; want the id token's nonce, aud and iss", id.Claims)
			}
			if id.Tokens == nil || id.Tokens.AccessToken == "" || id.Tokens.RefreshToken == "" {
				t.Fatalf("Tokens = %+v", id.Tokens)
			}
			if raw, _ := id.Tokens.Extra("id_token").(string); strings.Count(raw, ".") != 2 {
				t.Errorf("Tokens.Extra(id_token) = %q; want the raw id token", raw)
			}
			if got := id.Tokens.Extra("scope"); got != "openid email profile" {
				t.Errorf("scope = %v", got)
			}
		})
	}
}

func TestHostile(t *testing.T) {
	keys := providertest.NewKeys(t)
	tests := []struct {
		m        providertest.Misbehavior
		userinfo bool
		want     error
		notWant  error
	}{
		{m: providertest.AlgNone, want: providers.ErrIDToken},
		{m: providertest.HS256, want: providers.ErrIDToken},
		{m: providertest.BadSignature, want: providers.ErrIDToken},
		{m: providertest.WrongIssuer, want: providers.ErrIDToken},
		{m: providertest.WrongAudience, want: providers.ErrIDToken},
		{m: providertest.WrongAZP, want: providers.ErrIDToken},
		{m: providertest.Expired, want: providers.ErrIDToken},
		{m: providertest.MissingIat, want: providers.ErrIDToken},
		{m: providertest.FutureIat, want: providers.ErrIDToken},
		{m: providertest.MissingSub, want: providers.ErrIDToken},
		{m: providertest.WrongNonce, want: providers.ErrIDToken},
		{m: providertest.MissingNonce, want: providers.ErrIDToken},
		{m: providertest.BadAtHash, want: providers.ErrIDToken},
		{m: providertest.NoIDToken, want: providers.ErrIDToken},
		{m: providertest.UserinfoSubMismatch, userinfo: true, want: providers.ErrInvalidResponse, notWant: providers.ErrIDToken},
	}
	for _, tt := range tests {
		for _, alg := range []string{"RS256", "ES256"} {
			t.Run(misbehaviorName(tt.m)+"/"+alg, func(t *testing.T) {
				t.Parallel()
				o := providertest.NewOIDC(t, providertest.OIDCOptions{Keys: keys, Alg: alg})
				c := config(o)
				c.Userinfo = tt.userinfo
				p := open(t, o, c)
				a, code := login(t, o, p)
				o.SetMisbehavior(tt.m)
				id, err := p.Exchange(t.Context(), a, code)
				if err == nil {
					t.Fatalf("Exchange accepted it: %+v", id)
				}
				t.Logf("refused: %v", err)
				if !errors.Is(err, tt.want) || !errors.Is(err, providers.ErrProvider) {
					t.Errorf("error = %v; want %v and ErrProvider", err, tt.want)
				}
				if tt.notWant != nil && errors.Is(err, tt.notWant) {
					t.Errorf("error = %v; should not match %v", err, tt.notWant)
				}
				if errors.Is(err, providers.ErrInvalidGrant) || errors.Is(err, providers.ErrPolicy) {
					t.Errorf("error = %v; matches ErrInvalidGrant or ErrPolicy", err)
				}
				var pe *providers.ProviderError
				if !errors.As(err, &pe) || pe.Provider != "dex" {
					t.Errorf("error = %v; want a *ProviderError from dex", err)
				}
				if tt.m == providertest.Expired {
					var te *gooidc.TokenExpiredError
					if !errors.As(err, &te) {
						t.Errorf("error = %v; want *oidc.TokenExpiredError inside", err)
					}
				}
			})
		}
	}
}

func misbehaviorName(m providertest.Misbehavior) string {
	return map[providertest.Misbehavior]string{
		providertest.AlgNone: "AlgNone", providertest.HS256: "HS256", providertest.BadSignature: "BadSignature",
		providertest.WrongIssuer: "WrongIssuer", providertest.WrongAudience: "WrongAudience",
		providertest.WrongAZP: "WrongAZP", providertest.Expired: "Expired", providertest.MissingIat: "MissingIat",
		providertest.FutureIat: "FutureIat", providertest.MissingSub: "MissingSub",
		providertest.WrongNonce: "WrongNonce", providertest.MissingNonce: "MissingNonce",
		providertest.BadAtHash: "BadAtHash", providertest.NoIDToken: "NoIDToken",
		providertest.UserinfoSubMismatch: "UserinfoSubMismatch",
	}[m]
}

// TestNonceOfAnotherAttempt redeems a code with an attempt whose nonce is not
// the one sent at authorization (a code injected into another flow).
func TestNonceOfAnotherAttempt(t *testing.T) {
	o := providertest.NewOIDC(t, providertest.OIDCOptions{})
	p := open(t, o, config(o))
	a, code := login(t, o, p)
	a.Nonce = "the-nonce-of-another-attempt"
	if _, err := p.Exchange(t.Context(), a, code); !errors.Is(err, providers.ErrIDToken) {
		t.Fatalf("Exchange: %v; want ErrIDToken", err)
	}
}

func TestDiscoveryLazyAndRetried(t *testing.T) {
	o := providertest.NewOIDC(t, providertest.OIDCOptions{})
	o.SetDiscoveryDown(true)
	clk := &clock{}
	p := openWith(t, o, config(o), providers.Deps{Now: clk.Now})
	if n := len(o.Requests()); n != 0 {
		t.Fatalf("Open made %d requests; want none (lazy discovery)", n)
	}
	a := providertest.NewAttempt(callback)

	discoveries := func() int {
		n := 0
		for _, r := range o.Requests() {
			if r.Path == "/.well-known/openid-configuration" {
				n++
			}
		}
		return n
	}
	// First failure: the next use tries again at once.
	for i := 1; i <= 2; i++ {
		_, err := p.AuthCodeURL(t.Context(), a)
		var pe *providers.ProviderError
		if !errors.As(err, &pe) || pe.Op != "discover" || pe.Status != http.StatusServiceUnavailable {
			t.Fatalf("AuthCodeURL #%d with issuer down: %v; want a 503 from discover", i, err)
		}
		if got := discoveries(); got != i {
			t.Fatalf("discovery requests = %d; want %d", got, i)
		}
	}
	// Second failure: back off; the last error comes back at once.
	_, err := p.AuthCodeURL(t.Context(), a)
	var pe *providers.ProviderError
	if !errors.As(err, &pe) || pe.Status != http.StatusServiceUnavailable || pe.RetryAfter <= 0 {
		t.Fatalf("AuthCodeURL during backoff: %v; want the 503 with RetryAfter", err)
	}
	if got := discoveries(); got != 2 {
		t.Fatalf("discovery requests during backoff = %d; want still 2", got)
	}
	if _, err := p.Exchange(t.Context(), a, "code"); !errors.Is(err, providers.ErrProvider) {
		t.Fatalf("Exchange during outage: %v; want ErrProvider", err)
	}

	// The issuer comes back; after the backoff the same provider works.
	o.SetDiscoveryDown(false)
	clk.Advance(time.Second)
	a, code := login(t, o, p)
	id, err := p.Exchange(t.Context(), a, code)
	if err != nil {
		t.Fatalf("Exchange after recovery: %v", err)
	}
	if id.Subject != "oidc-user-1" {
		t.Errorf("Subject = %q", id.Subject)
	}
	// Discovery is kept: going down again does not matter.
	o.SetDiscoveryDown(true)
	before := discoveries()
	a, code = login(t, o, p)
	if _, err := p.Exchange(t.Context(), a, code); err != nil {
		t.Fatalf("Exchange after discovery went down again: %v", err)
	}
	if got := discoveries(); got != before {
		t.Errorf("discovery repeated after success")
	}
}

func TestDiscoveryConcurrent(t *testing.T) {
	o := providertest.NewOIDC(t, providertest.OIDCOptions{})
	p := open(t, o, config(o))
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := p.AuthCodeURL(context.Background(), providertest.NewAttempt(callback)); err != nil {
				t.Errorf("AuthCodeURL: %v", err)
			}
		})
	}
	wg.Wait()
	n := 0
	for _, r := range o.Requests() {
		if r.Path == "/.well-known/openid-configuration" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("discovery requests = %d; want 1", n)
	}
}

func TestIssuerMismatch(t *testing.T) {
	o := providertest.NewOIDC(t, providertest.OIDCOptions{})
	c := config(o)
	c.Issuer = o.Issuer() + "/" // the document names the issuer without the slash
	p := open(t, o, c)
	_, err := p.AuthCodeURL(t.Context(), providertest.NewAttempt(callback))
	if !errors.Is(err, providers.ErrInvalidResponse) {
		t.Fatalf("AuthCodeURL: %v; want ErrInvalidResponse", err)
	}
}

func TestHang(t *testing.T) {
	keys := providertest.NewKeys(t)
	for _, e := range []providertest.Endpoint{providertest.Discovery, providertest.Token, providertest.JWKS, providertest.Userinfo} {
		t.Run(string(e), func(t *testing.T) {
			t.Parallel()
			o := providertest.NewOIDC(t, providertest.OIDCOptions{Keys: keys})
			c := config(o)
			c.Userinfo = true
			p := openWith(t, o, c, providers.Deps{HTTPClient: &http.Client{Transport: o.Client().Transport, Timeout: 10 * time.Second}})
			a := providertest.NewAttempt(callback)
			code := "unused"
			if e != providertest.Discovery {
				a, code = login(t, o, p)
			}
			o.SetFault(e, providertest.Fault{Hang: true})
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
			if errors.Is(err, providers.ErrIDToken) {
				t.Errorf("error = %v; a timeout is not a bad id token", err)
			}
		})
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	keys := providertest.NewKeys(t)
	t.Run("500", func(t *testing.T) {
		o := providertest.NewOIDC(t, providertest.OIDCOptions{Keys: keys})
		p := open(t, o, config(o))
		a, code := login(t, o, p)
		o.SetFault(providertest.Token, providertest.Fault{Status: 500})
		_, err := p.Exchange(t.Context(), a, code)
		var pe *providers.ProviderError
		if !errors.As(err, &pe) || pe.Status != 500 || pe.Op != "exchange code" || errors.Is(err, providers.ErrInvalidGrant) {
			t.Fatalf("Exchange: %v; want a 500 ProviderError from exchange code", err)
		}
	})
	t.Run("rate limit", func(t *testing.T) {
		o := providertest.NewOIDC(t, providertest.OIDCOptions{Keys: keys})
		p := open(t, o, config(o))
		a, code := login(t, o, p)
		o.SetFault(providertest.Token, providertest.Fault{RateLimit: 20 * time.Second})
		_, err := p.Exchange(t.Context(), a, code)
		var pe *providers.ProviderError
		if !errors.As(err, &pe) || pe.Status != 429 || pe.RetryAfter != 20*time.Second {
			t.Fatalf("Exchange: %v; want 429 with RetryAfter 20s", err)
		}
	})
	t.Run("replayed code", func(t *testing.T) {
		o := providertest.NewOIDC(t, providertest.OIDCOptions{Keys: keys})
		p := open(t, o, config(o))
		a, code := login(t, o, p)
		if _, err := p.Exchange(t.Context(), a, code); err != nil {
			t.Fatal(err)
		}
		_, err := p.Exchange(t.Context(), a, code)
		var pe *providers.ProviderError
		if !errors.Is(err, providers.ErrInvalidGrant) || !errors.As(err, &pe) || pe.Code != "invalid_grant" || pe.Status != 400 {
			t.Fatalf("replayed code: %v; want invalid_grant (400)", err)
		}
	})
	t.Run("wrong client secret", func(t *testing.T) {
		o := providertest.NewOIDC(t, providertest.OIDCOptions{Keys: keys})
		c := config(o)
		c.ClientSecret = "wrong"
		p := open(t, o, c)
		a, code := login(t, o, p)
		_, err := p.Exchange(t.Context(), a, code)
		var pe *providers.ProviderError
		if !errors.As(err, &pe) || pe.Code != "invalid_client" || errors.Is(err, providers.ErrInvalidGrant) {
			t.Fatalf("Exchange: %v; want invalid_client", err)
		}
	})
}

func TestClientAuthStyle(t *testing.T) {
	keys := providertest.NewKeys(t)
	for _, tt := range []struct {
		methods    []string
		wantBasic  bool
		wantSecret bool
	}{
		{methods: nil, wantBasic: true},
		{methods: []string{"client_secret_post"}, wantSecret: true},
		{methods: []string{"client_secret_post", "client_secret_basic"}, wantBasic: true},
	} {
		t.Run(strings.Join(tt.methods, ","), func(t *testing.T) {
			o := providertest.NewOIDC(t, providertest.OIDCOptions{Keys: keys, AuthMethods: tt.methods})
			p := open(t, o, config(o))
			a, code := login(t, o, p)
			if _, err := p.Exchange(t.Context(), a, code); err != nil {
				t.Fatal(err)
			}
			for _, r := range o.Requests() {
				if r.Path != "/token" {
					continue
				}
				_, _, basic := (&http.Request{Header: r.Header}).BasicAuth()
				if basic != tt.wantBasic || (r.Form.Get("client_secret") != "") != tt.wantSecret {
					t.Errorf("token request: basic %v, client_secret in form %v; want %v, %v",
						basic, r.Form.Get("client_secret") != "", tt.wantBasic, tt.wantSecret)
				}
			}
		})
	}
}

func TestUserinfoAndMapping(t *testing.T) {
	o := providertest.NewOIDC(t, providertest.OIDCOptions{User: providertest.OIDCUser{
		Subject: "sub-1",
		Email:   "e@example.com",
		Claims: map[string]any{
			"email_verified": "true", // AWS Cognito style
			"employee_id":    12345678901234567,
			"display":        "Employee Name",
			"groups":         []string{"g1"},
		},
	}})
	c := config(o)
	c.Userinfo = true
	c.ClaimMapping = oidc.ClaimMapping{UserID: "employee_id", Name: "display"}
	p := open(t, o, c)
	a, code := login(t, o, p)
	id, err := p.Exchange(t.Context(), a, code)
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "12345678901234567" {
		t.Errorf("Subject = %q; want every digit of employee_id", id.Subject)
	}
	if id.Name != "Employee Name" || id.Email != "e@example.com" || !id.EmailVerified {
		t.Errorf("Name, Email, EmailVerified = %q, %q, %v", id.Name, id.Email, id.EmailVerified)
	}
	var userinfo int
	for _, r := range o.Requests() {
		if r.Path == "/userinfo" {
			userinfo++
			if r.Header.Get("Authorization") != "Bearer "+id.Tokens.AccessToken {
				t.Errorf("userinfo without the access token")
			}
		}
	}
	if userinfo != 1 {
		t.Errorf("userinfo requests = %d; want 1", userinfo)
	}

	// A user id claim that is missing refuses the login.
	c.ClaimMapping.UserID = "no_such_claim"
	p = open(t, o, c)
	a, code = login(t, o, p)
	if _, err := p.Exchange(t.Context(), a, code); !errors.Is(err, providers.ErrIDToken) {
		t.Errorf("Exchange with a missing user id claim: %v; want ErrIDToken", err)
	}
}

func TestEmailVerified(t *testing.T) {
	keys := providertest.NewKeys(t)
	for _, tt := range []struct {
		name  string
		value any
		want  bool
	}{
		{"bool true", true, true},
		{"bool false", false, false},
		{"string true", "true", true},
		{"string false", "false", false},
		{"garbage", "yes", false},
		{"absent", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			claims := map[string]any{}
			if tt.value != nil {
				claims["email_verified"] = tt.value
			}
			o := providertest.NewOIDC(t, providertest.OIDCOptions{Keys: keys, User: providertest.OIDCUser{Subject: "s", Email: "x@example.com", Claims: claims}})
			if tt.value == nil {
				o.SetUser(providertest.OIDCUser{Subject: "s", Claims: map[string]any{"email": "x@example.com"}})
			}
			p := open(t, o, config(o))
			a, code := login(t, o, p)
			id, err := p.Exchange(t.Context(), a, code)
			if err != nil {
				t.Fatal(err)
			}
			if id.EmailVerified != tt.want {
				t.Errorf("EmailVerified = %v; want %v", id.EmailVerified, tt.want)
			}
		})
	}
}

func TestRefresh(t *testing.T) {
	keys := providertest.NewKeys(t)
	for _, rotate := range []bool{false, true} {
		name := "stable"
		if rotate {
			name = "rotating"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			o := providertest.NewOIDC(t, providertest.OIDCOptions{Keys: keys})
			o.RotateRefreshTokens(rotate)
			p := open(t, o, config(o))
			r := p.(providers.Refresher)
			a, code := login(t, o, p)
			id, err := p.Exchange(t.Context(), a, code)
			if err != nil {
				t.Fatal(err)
			}
			rt := id.Tokens.RefreshToken
			tok, err := r.Refresh(t.Context(), rt)
			if err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if tok.AccessToken == "" || tok.AccessToken == id.Tokens.AccessToken {
				t.Errorf("access token not renewed")
			}
			if s, _ := tok.Extra("id_token").(string); s == "" {
				t.Errorf("refreshed tokens lack the id token")
			}
			if (tok.RefreshToken != rt) != rotate {
				t.Errorf("refresh token %q → %q; rotation want %v", rt, tok.RefreshToken, rotate)
			}
			_, err = r.Refresh(t.Context(), rt)
			if rotate != errors.Is(err, providers.ErrInvalidGrant) {
				t.Errorf("reusing the first refresh token: %v; want ErrInvalidGrant: %v", err, rotate)
			}
			if got := o.RefreshCalls(); got != 2 {
				t.Errorf("RefreshCalls = %d; want 2", got)
			}
			// A refreshed id token is verified too.
			o.SetMisbehavior(providertest.WrongAudience)
			if _, err := r.Refresh(t.Context(), tok.RefreshToken); !errors.Is(err, providers.ErrIDToken) {
				t.Errorf("refresh with a bad id token: %v; want ErrIDToken", err)
			}
		})
	}
}

func TestIssuer(t *testing.T) {
	o := providertest.NewOIDC(t, providertest.OIDCOptions{IssParam: true})
	p := open(t, o, config(o))
	is, ok := p.(providers.Issuer)
	if !ok || is.Issuer() != o.Issuer() {
		t.Fatalf("Issuer() = %v; want %q", p, o.Issuer())
	}
	a := providertest.NewAttempt(callback)
	u, err := p.AuthCodeURL(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	if got := providertest.Authorize(t, o.Client(), u).Query().Get("iss"); got != is.Issuer() {
		t.Errorf("callback iss = %q; want %q", got, is.Issuer())
	}
}

func TestValidate(t *testing.T) {
	ok := oidc.Config{Issuer: "https://issuer.example", ClientID: "id", ClientSecret: "secret"}
	tests := []struct {
		name string
		edit func(*oidc.Config)
		want []string
	}{
		{"minimal", func(*oidc.Config) {}, nil},
		{"http issuer", func(c *oidc.Config) { c.Issuer = "http://127.0.0.1:5556/dex" }, nil},
		{"missing", func(c *oidc.Config) { *c = oidc.Config{} }, []string{"issuer: required", "client_id: required", "client_secret: required"}},
		{"relative issuer", func(c *oidc.Config) { c.Issuer = "issuer.example" }, []string{"issuer:"}},
		{"issuer with query", func(c *oidc.Config) { c.Issuer = "https://issuer.example?x=1" }, []string{"issuer:"}},
		{"no openid scope", func(c *oidc.Config) { c.Scopes = []string{"email"} }, []string{"must include openid"}},
		{"reserved auth param", func(c *oidc.Config) { c.AuthParams = map[string]string{"nonce": "x"} }, []string{"auth_params.nonce"}},
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
		})
	}
}
