// Package google implements the Google login provider: the generic OpenID
// Connect provider of package oidc with Google's defaults (issuer
// https://accounts.google.com, scopes openid, email, profile) and one
// Google-only check, the Workspace hosted domain (hd claim).
//
// The issuer can be overridden so that tests run against a local fake; the
// discovery, id-token checks and errors are those of package oidc. For
// refresh tokens Google needs auth_params access_type: offline (and
// prompt: consent to get one again for a returning user).
package google

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"

	"github.com/brokerauth/broker/providers"
	"github.com/brokerauth/broker/providers/oidc"
	"golang.org/x/oauth2"
)

// DefaultIssuer is Google's issuer identifier.
const DefaultIssuer = "https://accounts.google.com"

// Config is the providers.google block of the configuration file.
type Config struct {
	// ClientID and ClientSecret are the OAuth client's credentials.
	// Required.
	ClientID     string `mapstructure:"client_id"`
	ClientSecret string `mapstructure:"client_secret"`
	// Issuer defaults to [DefaultIssuer]; override it for tests.
	Issuer string `mapstructure:"issuer"`
	// Scopes default to openid, email, profile; must include openid.
	Scopes []string `mapstructure:"scopes"`
	// HostedDomain, when set, admits only Google Workspace accounts of that
	// domain: the id token's hd claim must equal it (case-insensitively).
	// "*" admits any Workspace account (hd present) and refuses consumer
	// accounts. It is also sent as the hd hint, which only filters the
	// account chooser and proves nothing by itself. A refused account gets
	// a *providers.PolicyError matching providers.ErrDomainNotAllowed (403).
	HostedDomain string `mapstructure:"hosted_domain"`
	// AuthParams are extra authorization request parameters, e.g.
	// access_type: offline; see oidc.Config.AuthParams.
	AuthParams map[string]string `mapstructure:"auth_params"`
}

// Profile is the typed Google profile (Identity.Profile).
type Profile struct {
	oidc.Profile
	// HostedDomain is the hd claim: the Workspace domain, "" for consumer
	// accounts.
	HostedDomain string `json:"hd"`
}

var _ providers.Config = Config{}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	return Config{
		Issuer: DefaultIssuer,
		Scopes: []string{"openid", "email", "profile"},
	}
}

// LogValue keeps the client secret out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("issuer", c.Issuer),
		slog.String("client_id", c.ClientID),
		slog.Any("scopes", c.Scopes),
		slog.String("hosted_domain", c.HostedDomain),
	)
}

func (c Config) oidcConfig() oidc.Config {
	issuer := c.Issuer
	if issuer == "" {
		issuer = DefaultIssuer
	}
	params := maps.Clone(c.AuthParams)
	if c.HostedDomain != "" {
		if params == nil {
			params = map[string]string{}
		}
		if _, ok := params["hd"]; !ok {
			params["hd"] = c.HostedDomain
		}
	}
	return oidc.Config{
		Issuer:       issuer,
		ClientID:     c.ClientID,
		ClientSecret: c.ClientSecret,
		Scopes:       c.Scopes,
		AuthParams:   params,
	}
}

// Validate reports every problem in c. It does no I/O.
func (c Config) Validate() error {
	var errs []error
	if err := c.oidcConfig().Validate(); err != nil {
		errs = append(errs, err)
	}
	if hd := c.HostedDomain; hd != "" && hd != "*" && (strings.ContainsAny(hd, "@/: ") || !strings.Contains(hd, ".")) {
		errs = append(errs, fmt.Errorf("hosted_domain: %q is not a domain (like example.com) or *", hd))
	}
	return errors.Join(errs...)
}

// Open returns the provider. It does no I/O (discovery is lazy, as in
// package oidc).
func (c Config) Open(ctx context.Context, id string, d providers.Deps) (providers.Provider, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("google %s: %w", id, err)
	}
	inner, err := c.oidcConfig().Open(ctx, id, d)
	if err != nil {
		return nil, err
	}
	p := &provider{id: id, inner: inner, hostedDomain: c.HostedDomain}
	var ok bool
	if p.refresher, ok = inner.(providers.Refresher); !ok {
		return nil, fmt.Errorf("google %s: oidc provider cannot refresh", id)
	}
	if p.issuer, ok = inner.(providers.Issuer); !ok {
		return nil, fmt.Errorf("google %s: oidc provider has no issuer", id)
	}
	return p, nil
}

type provider struct {
	id           string
	inner        providers.Provider
	refresher    providers.Refresher
	issuer       providers.Issuer
	hostedDomain string
}

var (
	_ providers.Provider  = (*provider)(nil)
	_ providers.Refresher = (*provider)(nil)
	_ providers.Issuer    = (*provider)(nil)
)

// AuthCodeURL returns Google's authorization URL for a.
func (p *provider) AuthCodeURL(ctx context.Context, a providers.Attempt) (string, error) {
	return p.inner.AuthCodeURL(ctx, a)
}

// Exchange redeems code as the oidc provider does, then applies the hosted
// domain rule and returns a [Profile].
func (p *provider) Exchange(ctx context.Context, a providers.Attempt, code string) (providers.Identity, error) {
	id, err := p.inner.Exchange(ctx, a, code)
	if err != nil {
		return providers.Identity{}, err
	}
	hd, _ := id.Claims["hd"].(string)
	switch {
	case p.hostedDomain == "":
	case p.hostedDomain == "*" && hd == "":
		return providers.Identity{}, &providers.PolicyError{Provider: p.id,
			Reason: "google account is not a workspace account", Err: providers.ErrDomainNotAllowed}
	case p.hostedDomain != "*" && !strings.EqualFold(hd, p.hostedDomain):
		return providers.Identity{}, &providers.PolicyError{Provider: p.id,
			Reason: fmt.Sprintf("google account is not in the %s domain", p.hostedDomain), Err: providers.ErrDomainNotAllowed}
	}
	op, _ := id.Profile.(oidc.Profile)
	id.Profile = Profile{Profile: op, HostedDomain: hd}
	return id, nil
}

// Refresh renews Google tokens; see the package doc for getting a refresh
// token at all.
func (p *provider) Refresh(ctx context.Context, refreshToken string) (*oauth2.Token, error) {
	return p.refresher.Refresh(ctx, refreshToken)
}

// Issuer returns the configured issuer, for the RFC 9207 iss check.
func (p *provider) Issuer() string { return p.issuer.Issuer() }
