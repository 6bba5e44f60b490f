// Package oidc implements a login provider for any OpenID Connect issuer,
// found by discovery (OpenID Connect Discovery 1.0), over go-oidc and
// x/oauth2. Several named instances may be configured
// (providers.oidc.<name>); each is one [Config].
//
// # Discovery
//
// Open does no I/O. The provider discovers the issuer's metadata on first use
// (AuthCodeURL, Exchange or Refresh) and keeps it. A failed discovery is not
// remembered for good: the next use tries again, so an issuer that is down
// when the broker starts works once it is back, without a restart. Between
// consecutive failures the provider waits a little (no wait after the first
// failure, then 500ms doubling up to 30s, on the Deps.Now clock) and answers
// the last error at once, with its RetryAfter set, so that a burst of logins
// does not hammer an issuer that is down. Only one discovery runs at a time;
// concurrent callers wait for it, each bounded by its own ctx.
//
// # Id token checks
//
// The code flow uses PKCE (S256) and a nonce. The id token is verified with
// go-oidc's verifier (signature against the issuer's JWKS, iss, aud, exp,
// nbf) restricted to asymmetric algorithms, so alg none and HS256 (a token
// signed with the client secret) are refused. On top of go-oidc the provider
// requires iat (and refuses one more than 5 minutes in the future) and sub,
// checks azp when present, compares the nonce in constant time (go-oidc does
// not check it), and checks at_hash when present. Every failure matches
// providers.ErrIDToken. The verifier's clock is Deps.Now.
//
// # Claims
//
// Identity.Claims holds every id-token claim; with Userinfo on, the userinfo
// claims are merged in (the userinfo sub must equal the id token's; the id
// token's registered claims such as iss, sub, aud and nonce are never
// overridden). email_verified is honoured as a JSON boolean or the strings
// "true" / "false" (AWS Cognito sends strings). Signed (application/jwt)
// userinfo answers are not supported.
package oidc

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/brokerauth/broker/providers"
	"github.com/brokerauth/broker/providers/internal/upstream"
	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// SigningAlgs are the id-token signature algorithms the provider accepts
// (those the issuer advertises, intersected with this list). All are
// asymmetric: a symmetric HS256 token is signed with the client secret,
// which the broker shares with the issuer, and "none" is no signature.
func SigningAlgs() []string {
	return []string{
		gooidc.RS256, gooidc.RS384, gooidc.RS512,
		gooidc.ES256, gooidc.ES384, gooidc.ES512,
		gooidc.PS256, gooidc.PS384, gooidc.PS512,
		gooidc.EdDSA,
	}
}

// Discovery retry pacing.
const (
	firstBackoff = 500 * time.Millisecond
	maxBackoff   = 30 * time.Second
	// iatLeeway tolerates clock skew between the issuer and us.
	iatLeeway = 5 * time.Minute
)

// registeredClaims are id-token claims that userinfo never overrides.
var registeredClaims = []string{
	"iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "azp", "at_hash",
	"c_hash", "auth_time", "acr", "amr", "jti", "sid",
}

type provider struct {
	id   string
	cfg  Config
	http *http.Client
	log  *slog.Logger
	now  func() time.Time

	// disc is set once discovery has succeeded.
	disc atomic.Pointer[discovered]
	// sem (capacity 1) serializes discovery attempts; the fields below are
	// only touched while holding it.
	sem      chan struct{}
	failures int
	nextTry  time.Time
	lastErr  *providers.ProviderError
}

var (
	_ providers.Provider  = (*provider)(nil)
	_ providers.Refresher = (*provider)(nil)
	_ providers.Issuer    = (*provider)(nil)
)

// discovered is what discovery yields.
type discovered struct {
	oauth       oauth2.Config
	verifier    *gooidc.IDTokenVerifier
	userinfoURL string
}

// metadata is the part of the discovery document we use.
type metadata struct {
	Issuer      string   `json:"issuer"`
	AuthURL     string   `json:"authorization_endpoint"`
	TokenURL    string   `json:"token_endpoint"`
	JWKSURL     string   `json:"jwks_uri"`
	UserinfoURL string   `json:"userinfo_endpoint"`
	Algorithms  []string `json:"id_token_signing_alg_values_supported"`
	AuthMethods []string `json:"token_endpoint_auth_methods_supported"`
}

// Issuer returns the configured issuer, for the RFC 9207 iss check.
func (p *provider) Issuer() string { return p.cfg.Issuer }

// discover returns the issuer's metadata, discovering it if needed.
func (p *provider) discover(ctx context.Context) (*discovered, error) {
	if d := p.disc.Load(); d != nil {
		return d, nil
	}
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, &providers.ProviderError{Provider: p.id, Op: "discover", Err: ctx.Err()}
	}
	defer func() { <-p.sem }()
	if d := p.disc.Load(); d != nil {
		return d, nil
	}
	now := p.now()
	if p.lastErr != nil && now.Before(p.nextTry) {
		e := *p.lastErr
		e.RetryAfter = max(e.RetryAfter, p.nextTry.Sub(now))
		return nil, &e
	}
	d, err := p.fetchMetadata(ctx)
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			// The caller gave up (the browser went away); that says
			// nothing about the issuer, so it does not count.
			return nil, err
		}
		p.failures++
		wait := time.Duration(0)
		if p.failures > 1 {
			wait = min(firstBackoff<<min(p.failures-2, 10), maxBackoff)
		}
		p.nextTry = p.now().Add(wait) // after the attempt, which may have hung
		p.lastErr = err
		p.log.Warn("oidc discovery failed; will retry on next use",
			slog.String("issuer", p.cfg.Issuer), slog.Int("failures", p.failures), slog.Any("error", err))
		return nil, err
	}
	if p.failures > 0 {
		p.log.Info("oidc discovery succeeded after failures", slog.String("issuer", p.cfg.Issuer), slog.Int("failures", p.failures))
	}
	p.failures, p.lastErr = 0, nil
	p.disc.Store(d)
	return d, nil
}

func (p *provider) fetchMetadata(ctx context.Context) (*discovered, *providers.ProviderError) {
	const op = "discover"
	wellKnown := strings.TrimSuffix(p.cfg.Issuer, "/") + "/.well-known/openid-configuration"
	var m metadata
	rest := upstream.Client{HTTP: p.http, Provider: p.id, Now: p.now}
	if _, err := rest.GetJSON(ctx, op, wellKnown, "", "application/json", &m); err != nil {
		var pe *providers.ProviderError
		if errors.As(err, &pe) {
			return nil, pe
		}
		return nil, &providers.ProviderError{Provider: p.id, Op: op, Err: err}
	}
	invalid := func(format string, args ...any) *providers.ProviderError {
		return &providers.ProviderError{Provider: p.id, Op: op,
			Err: fmt.Errorf(format+": %w", append(args, providers.ErrInvalidResponse)...)}
	}
	// OpenID Connect Discovery §4.3: the issuer in the document must be
	// identical to the one the document was fetched for.
	if m.Issuer != p.cfg.Issuer {
		return nil, invalid("discovery document names issuer %q, want %q", m.Issuer, p.cfg.Issuer)
	}
	for _, e := range []struct{ name, url string }{
		{"authorization_endpoint", m.AuthURL}, {"token_endpoint", m.TokenURL}, {"jwks_uri", m.JWKSURL},
	} {
		if u, err := url.Parse(e.url); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, invalid("discovery document: %s %q is not an absolute URL", e.name, e.url)
		}
	}
	if p.cfg.Userinfo && m.UserinfoURL == "" {
		return nil, invalid("userinfo is on but the issuer has no userinfo_endpoint")
	}

	algs := SigningAlgs()
	if len(m.Algorithms) > 0 {
		var both []string
		for _, a := range m.Algorithms {
			if slices.Contains(algs, a) {
				both = append(both, a)
			}
		}
		if len(both) > 0 {
			algs = both
		}
	}
	// The key set only uses this context to find the HTTP client; go-oidc
	// drops its cancellation. Background refreshes are bounded by the
	// client's Timeout.
	keys := gooidc.NewRemoteKeySet(gooidc.ClientContext(context.Background(), p.http), m.JWKSURL)
	verifier := gooidc.NewVerifier(p.cfg.Issuer, keys, &gooidc.Config{
		ClientID:             p.cfg.ClientID,
		SupportedSigningAlgs: algs,
		Now:                  p.now,
	})

	// RFC 8414 §2 / Discovery §3: client_secret_basic is the default when
	// the issuer does not list its methods. A fixed style also avoids
	// x/oauth2's probing, which would send the code twice after a failure.
	style := oauth2.AuthStyleInHeader
	if len(m.AuthMethods) > 0 && !slices.Contains(m.AuthMethods, "client_secret_basic") && slices.Contains(m.AuthMethods, "client_secret_post") {
		style = oauth2.AuthStyleInParams
	}
	return &discovered{
		oauth: oauth2.Config{
			ClientID:     p.cfg.ClientID,
			ClientSecret: p.cfg.ClientSecret,
			Scopes:       slices.Clone(p.cfg.Scopes),
			Endpoint:     oauth2.Endpoint{AuthURL: m.AuthURL, TokenURL: m.TokenURL, AuthStyle: style},
		},
		verifier:    verifier,
		userinfoURL: m.UserinfoURL,
	}, nil
}

// clientContext attaches Deps.HTTPClient for x/oauth2 and go-oidc, right
// before calling them (STYLE "Context").
func (p *provider) clientContext(ctx context.Context) context.Context {
	return gooidc.ClientContext(ctx, p.http)
}

// AuthCodeURL returns the issuer's authorization URL for a: response_type
// code, scope, state, nonce and the PKCE S256 challenge. The first call
// discovers the issuer.
func (p *provider) AuthCodeURL(ctx context.Context, a providers.Attempt) (string, error) {
	if err := upstream.CheckAttempt(p.id, a, true); err != nil {
		return "", err
	}
	d, err := p.discover(ctx)
	if err != nil {
		return "", err
	}
	c := d.oauth
	c.RedirectURL = a.RedirectURL
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(a.CodeVerifier), gooidc.Nonce(a.Nonce)}
	keys := make([]string, 0, len(p.cfg.AuthParams))
	for k := range p.cfg.AuthParams {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		opts = append(opts, oauth2.SetAuthURLParam(k, p.cfg.AuthParams[k]))
	}
	return c.AuthCodeURL(a.State, opts...), nil
}

// Exchange redeems code, verifies the id token against a, and (with
// Userinfo) reads the userinfo endpoint.
func (p *provider) Exchange(ctx context.Context, a providers.Attempt, code string) (providers.Identity, error) {
	if err := upstream.CheckAttempt(p.id, a, true); err != nil {
		return providers.Identity{}, err
	}
	if code == "" {
		return providers.Identity{}, fmt.Errorf("%s: empty code: %w", p.id, providers.ErrInvalidInput)
	}
	d, err := p.discover(ctx)
	if err != nil {
		return providers.Identity{}, err
	}
	c := d.oauth
	c.RedirectURL = a.RedirectURL
	tok, err := c.Exchange(p.clientContext(ctx), code, oauth2.VerifierOption(a.CodeVerifier))
	if err != nil {
		return providers.Identity{}, upstream.TokenError(p.id, "exchange code", err, p.now())
	}

	idt, raw, err := p.verifyIDToken(ctx, d, tok)
	if err != nil {
		return providers.Identity{}, err
	}
	// OpenID Connect Core §3.1.3.7 step 11; go-oidc leaves the nonce to us.
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(a.Nonce)) != 1 {
		return providers.Identity{}, p.idTokenError("nonce does not match the attempt's")
	}
	// §3.1.3.8: at_hash is optional in the code flow, but when present it
	// must match the access token.
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return providers.Identity{}, p.idTokenError("at_hash: %v", err)
		}
	}

	claims, err := decodeClaims(raw)
	if err != nil {
		return providers.Identity{}, p.idTokenError("claims: %v", err)
	}
	if p.cfg.Userinfo {
		info, err := p.userinfo(ctx, d, tok.AccessToken)
		if err != nil {
			return providers.Identity{}, err
		}
		// Core §5.3.2: the userinfo sub must be verified to exactly match
		// the id token's; otherwise the answer may be substituted.
		if sub, _ := info.plain["sub"].(string); sub != idt.Subject {
			return providers.Identity{}, &providers.ProviderError{Provider: p.id, Op: "userinfo",
				Err: fmt.Errorf("userinfo sub %q differs from id token sub %q: %w", sub, idt.Subject, providers.ErrInvalidResponse)}
		}
		claims.merge(info)
	}

	subject := claimString(claims.precise[p.cfg.ClaimMapping.UserID])
	if subject == "" {
		return providers.Identity{}, p.idTokenError("user id claim %q is missing or empty", p.cfg.ClaimMapping.UserID)
	}
	prof := profile(claims.plain)
	return providers.Identity{
		Subject:       subject,
		Email:         stringClaim(claims.plain, p.cfg.ClaimMapping.Email),
		EmailVerified: prof.EmailVerified,
		Name:          stringClaim(claims.plain, p.cfg.ClaimMapping.Name),
		Picture:       stringClaim(claims.plain, p.cfg.ClaimMapping.Picture),
		Username:      prof.PreferredUsername,
		Claims:        claims.plain,
		Profile:       prof,
		Tokens:        tok,
	}, nil
}

// verifyIDToken runs go-oidc's verifier and our extra checks on the
// id_token of tok (all but nonce and at_hash) and returns the token and its
// raw claims.
func (p *provider) verifyIDToken(ctx context.Context, d *discovered, tok *oauth2.Token) (*gooidc.IDToken, []byte, error) {
	rawIDToken, _ := tok.Extra("id_token").(string)
	if rawIDToken == "" {
		return nil, nil, p.idTokenError("token response has no id_token")
	}
	idt, err := d.verifier.Verify(p.clientContext(ctx), rawIDToken)
	if err != nil {
		if ctx.Err() != nil {
			// Fetching the key set was cut short: a timeout, not a bad token.
			return nil, nil, &providers.ProviderError{Provider: p.id, Op: "verify id token", Err: ctx.Err()}
		}
		return nil, nil, &providers.ProviderError{Provider: p.id, Op: "verify id token",
			Err: fmt.Errorf("%w: %w", err, providers.ErrIDToken)}
	}
	if idt.IssuedAt.IsZero() {
		return nil, nil, p.idTokenError("iat is missing")
	}
	if idt.IssuedAt.After(p.now().Add(iatLeeway)) {
		return nil, nil, p.idTokenError("iat %s is in the future", idt.IssuedAt.UTC().Format(time.RFC3339))
	}
	if idt.Subject == "" {
		return nil, nil, p.idTokenError("sub is missing")
	}
	var azp struct {
		AZP string `json:"azp"`
	}
	if err := idt.Claims(&azp); err != nil {
		return nil, nil, p.idTokenError("claims: %v", err)
	}
	// Core §3.1.3.7 steps 4-5: when present, azp must be our client id.
	if azp.AZP != "" && azp.AZP != p.cfg.ClientID {
		return nil, nil, p.idTokenError("azp %q is not our client id", azp.AZP)
	}
	var raw json.RawMessage
	if err := idt.Claims(&raw); err != nil {
		return nil, nil, p.idTokenError("claims: %v", err)
	}
	return idt, raw, nil
}

func (p *provider) idTokenError(format string, args ...any) error {
	return &providers.ProviderError{Provider: p.id, Op: "verify id token",
		Err: fmt.Errorf(format+": %w", append(args, providers.ErrIDToken)...)}
}

// Refresh redeems refreshToken at the token endpoint. When the answer
// carries a new id token it is verified (signature, iss, aud, exp, iat, sub;
// a refreshed id token has no nonce to check).
func (p *provider) Refresh(ctx context.Context, refreshToken string) (*oauth2.Token, error) {
	if refreshToken == "" {
		return nil, fmt.Errorf("%s: empty refresh token: %w", p.id, providers.ErrInvalidInput)
	}
	d, err := p.discover(ctx)
	if err != nil {
		return nil, err
	}
	old := &oauth2.Token{RefreshToken: refreshToken, Expiry: time.Unix(1, 0)}
	tok, err := d.oauth.TokenSource(p.clientContext(ctx), old).Token()
	if err != nil {
		return nil, upstream.TokenError(p.id, "refresh", err, p.now())
	}
	if s, _ := tok.Extra("id_token").(string); s != "" {
		if _, _, err := p.verifyIDToken(ctx, d, tok); err != nil {
			return nil, err
		}
	}
	return tok, nil
}

// claimSet holds claims decoded twice: plain (numbers as float64, for
// Identity.Claims and CEL) and precise (numbers as json.Number, so that a
// numeric user id claim keeps every digit).
type claimSet struct {
	plain   map[string]any
	precise map[string]any
}

func decodeClaims(raw []byte) (claimSet, error) {
	var cs claimSet
	if err := json.Unmarshal(raw, &cs.plain); err != nil {
		return cs, err
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&cs.precise); err != nil {
		return cs, err
	}
	if cs.plain == nil {
		return cs, errors.New("not a json object")
	}
	return cs, nil
}

// merge adds userinfo claims, except the id token's registered ones.
func (cs claimSet) merge(info claimSet) {
	for k, v := range info.plain {
		if !slices.Contains(registeredClaims, k) {
			cs.plain[k] = v
			cs.precise[k] = info.precise[k]
		}
	}
}

func (p *provider) userinfo(ctx context.Context, d *discovered, accessToken string) (claimSet, error) {
	rest := upstream.Client{HTTP: p.http, Provider: p.id, Now: p.now}
	var raw json.RawMessage
	if _, err := rest.GetJSON(ctx, "userinfo", d.userinfoURL, accessToken, "application/json", &raw); err != nil {
		return claimSet{}, err
	}
	cs, err := decodeClaims(raw)
	if err != nil {
		return claimSet{}, &providers.ProviderError{Provider: p.id, Op: "userinfo",
			Err: fmt.Errorf("decode: %v: %w", err, providers.ErrInvalidResponse)}
	}
	return cs, nil
}

// claimString renders a user id claim: a string as is, an integer in
// decimal. Anything else (objects, lists, booleans) is not an id.
func claimString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		if _, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return string(v)
		}
	}
	return ""
}

func stringClaim(m map[string]any, name string) string {
	s, _ := m[name].(string)
	return s
}

// boolClaim reads a boolean claim sent as true/false or "true"/"false".
func boolClaim(m map[string]any, name string) bool {
	switch v := m[name].(type) {
	case bool:
		return v
	case string:
		return strings.EqualFold(v, "true")
	}
	return false
}
