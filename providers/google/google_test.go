package google_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/brokerauth/broker/internal/providertest"
	"github.com/brokerauth/broker/providers"
	"github.com/brokerauth/broker/providers/google"
	"github.com/brokerauth/broker/providers/oidc"
	"github.com/google/go-cmp/cmp"
)

const callback = "http://broker.test/login/google/callback"

// newGoogle starts the OIDC fake with a Google-like account.
func newGoogle(t *testing.T, keys *providertest.Keys, hd string) *providertest.OIDC {
	t.Helper()
	claims := map[string]any{"given_name": "Ada", "family_name": "Lovelace", "locale": "en"}
	domain := "gmail.com"
	if hd != "" {
		claims["hd"] = hd
		domain = hd
	}
	return providertest.NewOIDC(t, providertest.OIDCOptions{
		Keys:     keys,
		ClientID: "123-abc.apps.googleusercontent.com",
		User: providertest.OIDCUser{
			Subject:       "110169484474386276334",
			Email:         "ada@" + domain,
			EmailVerified: true,
			Name:          "Ada Lovelace",
			Picture:       "https://lh3.googleusercontent.com/a/ada",
			Claims:        claims,
		},
	})
}

func open(t *testing.T, o *providertest.OIDC, edit func(*google.Config)) providers.Provider {
	t.Helper()
	c := google.Config{Issuer: o.Issuer(), ClientID: o.ClientID, ClientSecret: o.ClientSecret}
	if edit != nil {
		edit(&c)
	}
	p, err := c.Open(t.Context(), "google", providers.Deps{HTTPClient: o.Client()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return p
}

func signIn(t *testing.T, o *providertest.OIDC, p providers.Provider) (providers.Identity, error) {
	t.Helper()
	a := providertest.NewAttempt(callback)
	u, err := p.AuthCodeURL(t.Context(), a)
	if err != nil {
		t.Fatalf("AuthCodeURL: %v", err)
	}
	back := providertest.Authorize(t, o.Client(), u)
	return p.Exchange(t.Context(), a, back.Query().Get("code"))
}

func TestExchange(t *testing.T) {
	o := newGoogle(t, nil, "")
	p := open(t, o, nil)
	id, err := signIn(t, o, p)
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	want := providers.Identity{
		Subject:       "110169484474386276334",
		Email:         "ada@gmail.com",
		EmailVerified: true,
		Name:          "Ada Lovelace",
		Picture:       "https://lh3.googleusercontent.com/a/ada",
		Profile: google.Profile{Profile: oidc.Profile{
			Issuer: o.Issuer(), Subject: "110169484474386276334", Email: "ada@gmail.com", EmailVerified: true,
			Name: "Ada Lovelace", GivenName: "Ada", FamilyName: "Lovelace", Picture: "https://lh3.googleusercontent.com/a/ada", Locale: "en",
		}},
	}
	got := id
	got.Claims, got.Tokens = nil, nil
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("identity (-want +got):\n%s", diff)
	}
	if s, _ := id.Tokens.Extra("id_token").(string); s == "" {
		t.Errorf("no raw id token in Tokens")
	}
}

func TestHostedDomain(t *testing.T) {
	keys := providertest.NewKeys(t)
	tests := []struct {
		name    string
		want    string // HostedDomain setting
		hd      string // the account's hd claim
		wantErr bool
	}{
		{name: "match", want: "example.com", hd: "example.com"},
		{name: "case-insensitive", want: "Example.COM", hd: "example.com"},
		{name: "other domain", want: "example.com", hd: "evil.com", wantErr: true},
		{name: "consumer account", want: "example.com", hd: "", wantErr: true},
		{name: "any workspace", want: "*", hd: "example.org"},
		{name: "any workspace, consumer", want: "*", hd: "", wantErr: true},
		{name: "not required", want: "", hd: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := newGoogle(t, keys, tt.hd)
			p := open(t, o, func(c *google.Config) { c.HostedDomain = tt.want })
			id, err := signIn(t, o, p)
			if tt.wantErr {
				var pe *providers.PolicyError
				if !errors.Is(err, providers.ErrDomainNotAllowed) || !errors.Is(err, providers.ErrPolicy) || !errors.As(err, &pe) {
					t.Fatalf("Exchange: %v; want a *PolicyError matching ErrDomainNotAllowed", err)
				}
				if errors.Is(err, providers.ErrProvider) {
					t.Errorf("policy error %v matches ErrProvider", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if got := id.Profile.(google.Profile).HostedDomain; got != tt.hd {
				t.Errorf("Profile.HostedDomain = %q; want %q", got, tt.hd)
			}
		})
	}
}

func TestAuthCodeURLHostedDomainHint(t *testing.T) {
	o := newGoogle(t, nil, "example.com")
	p := open(t, o, func(c *google.Config) {
		c.HostedDomain = "example.com"
		c.AuthParams = map[string]string{"access_type": "offline"}
	})
	a := providertest.NewAttempt(callback)
	got, err := p.AuthCodeURL(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(got)
	q := u.Query()
	for k, want := range map[string]string{
		"hd": "example.com", "access_type": "offline", "scope": "openid email profile",
		"nonce": a.Nonce, "state": a.State, "code_challenge_method": "S256",
	} {
		if q.Get(k) != want {
			t.Errorf("%s = %q; want %q", k, q.Get(k), want)
		}
	}
}

func TestHostileIDTokenRefused(t *testing.T) {
	keys := providertest.NewKeys(t)
	for _, m := range []providertest.Misbehavior{providertest.WrongAudience, providertest.BadSignature, providertest.WrongNonce} {
		o := newGoogle(t, keys, "")
		p := open(t, o, nil)
		o.SetMisbehavior(m)
		if _, err := signIn(t, o, p); !errors.Is(err, providers.ErrIDToken) {
			t.Errorf("misbehavior %d: %v; want ErrIDToken", m, err)
		}
	}
}

func TestRefreshAndIssuer(t *testing.T) {
	o := newGoogle(t, nil, "")
	o.RotateRefreshTokens(true)
	p := open(t, o, nil)
	id, err := signIn(t, o, p)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := p.(providers.Refresher)
	if !ok {
		t.Fatal("google provider is not a Refresher")
	}
	if _, err := r.Refresh(t.Context(), id.Tokens.RefreshToken); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if _, err := r.Refresh(t.Context(), id.Tokens.RefreshToken); !errors.Is(err, providers.ErrInvalidGrant) {
		t.Errorf("reused refresh token: %v; want ErrInvalidGrant", err)
	}
	if got := p.(providers.Issuer).Issuer(); got != o.Issuer() {
		t.Errorf("Issuer() = %q; want %q", got, o.Issuer())
	}
}

func TestDefaults(t *testing.T) {
	c := google.Config{ClientID: "id", ClientSecret: "secret"}
	p, err := c.Open(t.Context(), "google", providers.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.(providers.Issuer).Issuer(); got != google.DefaultIssuer {
		t.Errorf("Issuer() = %q; want %q", got, google.DefaultIssuer)
	}
	if d := google.DefaultConfig(); d.Issuer != google.DefaultIssuer || len(d.Scopes) != 3 {
		t.Errorf("DefaultConfig() = %+v", d)
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		c    google.Config
		want string
	}{
		{"ok", google.Config{ClientID: "id", ClientSecret: "s", HostedDomain: "example.com"}, ""},
		{"missing id", google.Config{ClientSecret: "s"}, "client_id: required"},
		{"bad domain", google.Config{ClientID: "id", ClientSecret: "s", HostedDomain: "user@example.com"}, "hosted_domain"},
		{"bad issuer", google.Config{ClientID: "id", ClientSecret: "s", Issuer: "accounts.google.com"}, "issuer"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v; want it to mention %q", err, tt.want)
			}
		})
	}
}
