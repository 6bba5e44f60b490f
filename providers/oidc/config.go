package oidc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/brokerauth/broker/providers"
)

// ClaimMapping names the id-token (or userinfo) claims that fill the
// Identity. Empty fields take the defaults of [DefaultConfig].
type ClaimMapping struct {
	// UserID is the claim that becomes Identity.Subject and the key id
	// (default "sub"). It must be stable and unique at the issuer; the id
	// token's sub must be present whatever this says.
	UserID string `mapstructure:"user_id"`
	// Email is the address claim (default "email"). EmailVerified always
	// comes from the email_verified claim.
	Email string `mapstructure:"email"`
	// Name is the display-name claim (default "name").
	Name string `mapstructure:"name"`
	// Picture is the avatar-URL claim (default "picture").
	Picture string `mapstructure:"picture"`
}

// Config is one providers.oidc.<name> block of the configuration file.
type Config struct {
	// Issuer is the issuer identifier, exactly as id tokens carry it in iss
	// (https://host/path, no trailing slash unless the issuer has one).
	// Discovery reads {Issuer}/.well-known/openid-configuration. Required.
	Issuer string `mapstructure:"issuer"`
	// ClientID and ClientSecret are the client's credentials. Required.
	ClientID     string `mapstructure:"client_id"`
	ClientSecret string `mapstructure:"client_secret"`
	// Scopes to request; must include openid. Default openid, email,
	// profile.
	Scopes []string `mapstructure:"scopes"`
	// ClaimMapping maps claims to Identity fields.
	ClaimMapping ClaimMapping `mapstructure:"claim_mapping"`
	// Userinfo makes Exchange also read the userinfo endpoint and merge its
	// claims (the id token's registered claims win; its sub must equal the
	// id token's). For issuers whose id tokens are thin.
	Userinfo bool `mapstructure:"userinfo"`
	// DisplayName labels the login button ("Sign in with Dex"). The
	// provider does not use it.
	DisplayName string `mapstructure:"display_name"`
	// AuthParams are extra authorization request parameters, such as
	// prompt: login, or Google's access_type: offline (needed for refresh
	// tokens). The parameters the flow owns (state, nonce, PKCE,
	// redirect_uri, client_id, response_type, scope) cannot be set here.
	AuthParams map[string]string `mapstructure:"auth_params"`
}

// reservedParams are set by the flow itself.
var reservedParams = []string{
	"client_id", "redirect_uri", "response_type", "scope", "state", "nonce",
	"code_challenge", "code_challenge_method",
}

var _ providers.Config = Config{}

// DefaultConfig returns a Config with every default filled in: scopes
// openid, email, profile and claim mapping sub, email, name, picture.
func DefaultConfig() Config {
	return Config{
		Scopes: []string{"openid", "email", "profile"},
		ClaimMapping: ClaimMapping{
			UserID:  "sub",
			Email:   "email",
			Name:    "name",
			Picture: "picture",
		},
	}
}

// withDefaults fills empty fields from DefaultConfig.
func (c Config) withDefaults() Config {
	def := DefaultConfig()
	if c.Scopes == nil {
		c.Scopes = def.Scopes
	}
	m := &c.ClaimMapping
	if m.UserID == "" {
		m.UserID = def.ClaimMapping.UserID
	}
	if m.Email == "" {
		m.Email = def.ClaimMapping.Email
	}
	if m.Name == "" {
		m.Name = def.ClaimMapping.Name
	}
	if m.Picture == "" {
		m.Picture = def.ClaimMapping.Picture
	}
	return c
}

// LogValue keeps the client secret out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("issuer", c.Issuer),
		slog.String("client_id", c.ClientID),
		slog.Any("scopes", c.Scopes),
		slog.Bool("userinfo", c.Userinfo),
	)
}

// Validate reports every problem in c. It does no I/O.
func (c Config) Validate() error {
	var errs []error
	if c.Issuer == "" {
		errs = append(errs, errors.New("issuer: required"))
	} else if u, err := url.Parse(c.Issuer); err != nil {
		errs = append(errs, fmt.Errorf("issuer: %w", err))
	} else if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		// OpenID Connect Discovery §2: a URL using https with no query or
		// fragment. http is tolerated for development issuers.
		errs = append(errs, fmt.Errorf("issuer: %q is not an http(s) URL without query or fragment", c.Issuer))
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("client_id: required"))
	}
	if c.ClientSecret == "" {
		errs = append(errs, errors.New("client_secret: required"))
	}
	if c.Scopes != nil && !slices.Contains(c.Scopes, "openid") {
		errs = append(errs, errors.New("scopes: must include openid"))
	}
	for i, s := range c.Scopes {
		if strings.TrimSpace(s) == "" || strings.Contains(s, " ") {
			errs = append(errs, fmt.Errorf("scopes[%d]: %q is not a scope", i, s))
		}
	}
	for k := range c.AuthParams {
		if slices.Contains(reservedParams, k) {
			errs = append(errs, fmt.Errorf("auth_params.%s: set by the broker, cannot be configured", k))
		}
	}
	return errors.Join(errs...)
}

// Open returns the provider. It does no I/O: discovery happens on first use
// and is retried after a failure (see the package doc), so an issuer that is
// down at start does not stop the broker.
func (c Config) Open(_ context.Context, id string, d providers.Deps) (providers.Provider, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("oidc %s: %w", id, err)
	}
	d = d.WithDefaults()
	c = c.withDefaults()
	if u, _ := url.Parse(c.Issuer); u.Scheme != "https" && !isLoopback(u.Hostname()) {
		d.Logger.Warn("issuer is not https; use this for development only", slog.String("issuer", c.Issuer))
	}
	return &provider{
		id:   id,
		cfg:  c,
		http: d.HTTPClient,
		log:  d.Logger,
		now:  d.Now,
		sem:  make(chan struct{}, 1),
	}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
