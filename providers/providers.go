package providers

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/oauth2"
)

// Provider is one configured upstream identity provider. Implementations are
// safe for concurrent use.
type Provider interface {
	// AuthCodeURL returns the URL that starts a login for attempt a: the
	// provider's authorization endpoint with client_id, redirect_uri, scope,
	// state, the PKCE S256 code_challenge derived from a.CodeVerifier and,
	// for OpenID Connect, the nonce.
	//
	// It takes a ctx and may fail because an OpenID Connect provider
	// discovers its endpoints lazily, on first use (SPEC §4): the first call
	// after start, or after the issuer was down, does network I/O. An
	// incomplete Attempt gives [ErrInvalidInput]; an unreachable issuer a
	// [*ProviderError].
	AuthCodeURL(ctx context.Context, a Attempt) (string, error)

	// Exchange redeems the authorization code of the callback that finishes
	// attempt a and returns who signed in. a must be the Attempt given to
	// AuthCodeURL (same verifier, nonce and redirect URL). ctx bounds all
	// upstream I/O; give it a deadline (server.provider_timeout).
	Exchange(ctx context.Context, a Attempt, code string) (Identity, error)
}

// Attempt is the per-login secret material minted by providersession and
// sealed in the flow cookie. Every field is required, except Nonce for
// providers that are not OpenID Connect (GitHub ignores it).
type Attempt struct {
	// State is the OAuth state parameter (RFC 6749 §10.12).
	State string
	// CodeVerifier is the PKCE verifier (RFC 7636, 43 to 128 characters);
	// providers send its S256 challenge, never the verifier, in the
	// authorization URL.
	CodeVerifier string
	// Nonce binds the OpenID Connect id token to this attempt.
	Nonce string
	// RedirectURL is the callback: {public_url}/login/{id}/callback.
	RedirectURL string
}

// Identity is a signed-in upstream user.
//
// Subject is the stable, provider-unique user id: the key id is
// providerID + ":" + Subject. Never use Email as an id.
type Identity struct {
	// Subject is GitHub's numeric user id in decimal, or the OpenID
	// Connect claim mapped to the user id (default "sub").
	Subject string
	// Email is the user's address, or "" when the provider gave none.
	// For GitHub it is the primary address, and only when it is verified.
	Email string
	// EmailVerified reports that the provider vouches for Email. Only a
	// verified email may be used to link accounts.
	EmailVerified bool
	// Name is the display name ("" when unknown).
	Name string
	// Picture is an avatar URL ("" when unknown).
	Picture string
	// Username is the provider's handle: GitHub's login, OpenID Connect's
	// preferred_username. It is not unique across providers.
	Username string
	// Claims are the raw attributes for CEL rules (identity.claims): the
	// OpenID Connect id-token claims, merged with the userinfo claims when
	// userinfo is on; for GitHub, the JSON object of GET /user.
	Claims map[string]any
	// Orgs are the GitHub organization logins of the user when the token
	// was granted the read:org scope; nil otherwise and for other providers.
	Orgs []string
	// Profile is the provider's typed profile (the seed's ProviderUser):
	// github.User, oidc.Profile or google.Profile.
	Profile any
	// Tokens are the provider tokens: access, refresh, expiry and token type;
	// the raw id token in Tokens.Extra("id_token") and the granted scope in
	// Tokens.Extra("scope"). Store them encrypted; never log them.
	Tokens *oauth2.Token
}

// Deps are what a provider needs from its host. Use [Deps.WithDefaults] to
// fill the nil ones.
type Deps struct {
	// HTTPClient makes every upstream call (token, API, discovery, JWKS,
	// userinfo). Tests pass an httptest server's client. Give it a Timeout:
	// background key-set refreshes only stop at the client's timeout.
	HTTPClient *http.Client
	// Logger is already tagged with the provider id.
	Logger *slog.Logger
	// Now is the clock used to validate id tokens and pace retries.
	Now func() time.Time
}

// DefaultHTTPTimeout is the Timeout of the HTTP client [Deps.WithDefaults]
// creates when none is given.
const DefaultHTTPTimeout = 30 * time.Second

// WithDefaults returns d with nil fields filled: a new http.Client with
// [DefaultHTTPTimeout] (never http.DefaultClient), a logger that discards, and
// time.Now.
func (d Deps) WithDefaults() Deps {
	if d.HTTPClient == nil {
		d.HTTPClient = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return d
}

// Config is one provider's decoded settings (a block under providers: in the
// configuration file). Provider packages implement it with value receivers,
// so both T and *T satisfy it.
type Config interface {
	// Validate reports every problem in the settings (joined with
	// errors.Join). It is fast, has no side effects and does no I/O.
	Validate() error
	// Open returns the provider with id (the path segment of /login/{id}
	// and the key prefix). It calls Validate first. Open may do I/O but
	// does not fail because an upstream is down: OpenID Connect discovery
	// is lazy and retried.
	Open(ctx context.Context, id string, d Deps) (Provider, error)
}

// Refresher is implemented by providers that can renew provider tokens with
// a refresh token (all of github, google and oidc do). Check for it with a
// type assertion.
type Refresher interface {
	// Refresh redeems refreshToken for new tokens. The result keeps
	// refreshToken when the provider does not rotate it. A refused refresh
	// token (revoked, expired or reused after rotation) gives an error that
	// matches [ErrInvalidGrant]: drop the stored token.
	Refresh(ctx context.Context, refreshToken string) (*oauth2.Token, error)
}

// Issuer is implemented by providers that have an issuer identifier (OpenID
// Connect, Google). The server uses it for RFC 9207: when the callback carries
// an iss parameter, it must equal Issuer(). GitHub does not implement it.
type Issuer interface {
	// Issuer returns the configured issuer URL, exactly as ID tokens carry it.
	Issuer() string
}
