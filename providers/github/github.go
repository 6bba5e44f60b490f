// Package github implements the GitHub login provider: the OAuth 2.0
// authorization code flow with PKCE over x/oauth2, the profile from the REST
// API's GET /user, the address from GET /user/emails (primary and verified
// only) and, when the read:org scope is granted, the organizations from GET
// /user/orgs. The endpoints are configurable for GitHub Enterprise Server.
//
// Identity.Subject is GitHub's numeric user id in decimal: logins can be
// renamed and reused, emails changed; the id cannot. Identity.Email is the
// primary address only when GitHub says it is verified. Identity.Claims is
// the GET /user object as GitHub sends it: its "email" is the public profile
// address, which GitHub does not verify, so allow rules should use
// identity.email and identity.email_verified instead. Identity.Name falls
// back to the login when the profile has no name.
package github

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/brokerauth/broker/providers"
	"github.com/brokerauth/broker/providers/internal/upstream"
	"golang.org/x/oauth2"
)

// The public GitHub endpoints, used when Config leaves them empty.
const (
	DefaultAuthURL  = "https://github.com/login/oauth/authorize"
	DefaultTokenURL = "https://github.com/login/oauth/access_token"
	DefaultAPIURL   = "https://api.github.com"
)

// apiAccept asks for the documented, versioned REST representation.
const apiAccept = "application/vnd.github+json"

// maxOrgPages bounds the GET /user/orgs pagination (100 per page).
const maxOrgPages = 10

// Config is the providers.github block of the configuration file.
type Config struct {
	// ClientID and ClientSecret are the OAuth app's credentials. Required.
	ClientID     string `mapstructure:"client_id"`
	ClientSecret string `mapstructure:"client_secret"`
	// Scopes to request. Default read:user and user:email. Add read:org to
	// fill Identity.Orgs (identity.orgs in allow rules).
	Scopes []string `mapstructure:"scopes"`
	// AuthURL, TokenURL and APIURL are for GitHub Enterprise Server and
	// tests: https://HOST/login/oauth/authorize,
	// https://HOST/login/oauth/access_token and https://HOST/api/v3. Set
	// all three or none (none means github.com).
	AuthURL  string `mapstructure:"auth_url"`
	TokenURL string `mapstructure:"token_url"`
	APIURL   string `mapstructure:"api_url"`
	// AllowUnverifiedEmail lets accounts without a verified primary email
	// sign in, with Identity.Email "" and EmailVerified false. By default
	// (false) Exchange refuses them with a *providers.PolicyError matching
	// providers.ErrUnverifiedEmail ("github account has no verified primary
	// email"), answered 403.
	AllowUnverifiedEmail bool `mapstructure:"allow_unverified_email"`
}

var (
	_ providers.Config    = Config{}
	_ providers.Provider  = (*provider)(nil)
	_ providers.Refresher = (*provider)(nil)
)

// DefaultConfig returns a Config with every default filled in: the
// github.com endpoints and scopes read:user and user:email.
func DefaultConfig() Config {
	return Config{
		Scopes:   []string{"read:user", "user:email"},
		AuthURL:  DefaultAuthURL,
		TokenURL: DefaultTokenURL,
		APIURL:   DefaultAPIURL,
	}
}

// LogValue keeps the client secret out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("client_id", c.ClientID),
		slog.Any("scopes", c.Scopes),
		slog.String("auth_url", c.AuthURL),
		slog.String("token_url", c.TokenURL),
		slog.String("api_url", c.APIURL),
		slog.Bool("allow_unverified_email", c.AllowUnverifiedEmail),
	)
}

// Validate reports every problem in c. It does no I/O.
func (c Config) Validate() error {
	var errs []error
	if c.ClientID == "" {
		errs = append(errs, errors.New("client_id: required"))
	}
	if c.ClientSecret == "" {
		errs = append(errs, errors.New("client_secret: required"))
	}
	urls := []struct{ key, val string }{{"auth_url", c.AuthURL}, {"token_url", c.TokenURL}, {"api_url", c.APIURL}}
	set := 0
	for _, u := range urls {
		if u.val == "" {
			continue
		}
		set++
		if err := checkURL(u.val); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u.key, err))
		}
	}
	if set != 0 && set != len(urls) {
		// Half a GitHub Enterprise setup would send an Enterprise code or
		// token to github.com, or the reverse.
		errs = append(errs, errors.New("auth_url, token_url and api_url: set all three (GitHub Enterprise) or none (github.com)"))
	}
	for i, s := range c.Scopes {
		if strings.TrimSpace(s) == "" || strings.ContainsAny(s, " ,") {
			errs = append(errs, fmt.Errorf("scopes[%d]: %q is not a scope", i, s))
		}
	}
	return errors.Join(errs...)
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must not have a query or fragment", s)
	}
	return nil
}

// Open returns the provider. It does no I/O.
func (c Config) Open(_ context.Context, id string, d providers.Deps) (providers.Provider, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("github %s: %w", id, err)
	}
	d = d.WithDefaults()
	def := DefaultConfig()
	if c.AuthURL == "" {
		c.AuthURL, c.TokenURL, c.APIURL = def.AuthURL, def.TokenURL, def.APIURL
	}
	if c.Scopes == nil {
		c.Scopes = def.Scopes
	}
	return &provider{
		id: id,
		oauth: oauth2.Config{
			ClientID:     c.ClientID,
			ClientSecret: c.ClientSecret,
			Scopes:       slices.Clone(c.Scopes),
			Endpoint: oauth2.Endpoint{
				AuthURL:  c.AuthURL,
				TokenURL: c.TokenURL,
				// GitHub documents client_id and client_secret as form
				// parameters; a fixed style also avoids x/oauth2's probing,
				// which would send the code twice after a failure.
				AuthStyle: oauth2.AuthStyleInParams,
			},
		},
		api:                  strings.TrimRight(c.APIURL, "/"),
		allowUnverifiedEmail: c.AllowUnverifiedEmail,
		// GitHub's token endpoint answers form-encoded unless asked for
		// JSON; JSON keeps the scope and any refresh_token_expires_in.
		tokenHTTP: upstream.WithHeader(d.HTTPClient, "Accept", "application/json"),
		rest:      upstream.Client{HTTP: d.HTTPClient, Provider: id, Now: d.Now},
		now:       d.Now,
	}, nil
}

type provider struct {
	id                   string
	oauth                oauth2.Config
	api                  string
	allowUnverifiedEmail bool
	tokenHTTP            *http.Client
	rest                 upstream.Client
	now                  func() time.Time
}

func (p *provider) config(redirectURL string) *oauth2.Config {
	c := p.oauth
	c.RedirectURL = redirectURL
	return &c
}

// AuthCodeURL returns GitHub's authorization URL for a, with the PKCE S256
// challenge. It does no I/O.
func (p *provider) AuthCodeURL(_ context.Context, a providers.Attempt) (string, error) {
	if err := upstream.CheckAttempt(p.id, a, false); err != nil {
		return "", err
	}
	return p.config(a.RedirectURL).AuthCodeURL(a.State, oauth2.S256ChallengeOption(a.CodeVerifier)), nil
}

// Exchange redeems code, then reads the user, the emails and (with read:org)
// the organizations.
func (p *provider) Exchange(ctx context.Context, a providers.Attempt, code string) (providers.Identity, error) {
	if err := upstream.CheckAttempt(p.id, a, false); err != nil {
		return providers.Identity{}, err
	}
	if code == "" {
		return providers.Identity{}, fmt.Errorf("%s: empty code: %w", p.id, providers.ErrInvalidInput)
	}
	tok, err := p.config(a.RedirectURL).Exchange(p.tokenContext(ctx), code, oauth2.VerifierOption(a.CodeVerifier))
	if err != nil {
		// GitHub answers a bad or reused code with 200 and
		// error=bad_verification_code; x/oauth2 turns that into a
		// RetrieveError, so it arrives here with its Code.
		return providers.Identity{}, upstream.TokenError(p.id, "exchange code", err, p.now())
	}

	var raw json.RawMessage
	if _, err := p.rest.GetJSON(ctx, "get user", p.api+"/user", tok.AccessToken, apiAccept, &raw); err != nil {
		return providers.Identity{}, err
	}
	var user User
	var claims map[string]any
	if err := json.Unmarshal(raw, &user); err != nil {
		return providers.Identity{}, p.invalid("get user", fmt.Errorf("decode user: %v", err))
	}
	if err := json.Unmarshal(raw, &claims); err != nil || claims == nil {
		return providers.Identity{}, p.invalid("get user", errors.New("user is not a json object"))
	}
	if user.ID <= 0 {
		return providers.Identity{}, p.invalid("get user", errors.New("user has no id"))
	}

	scope, hasScope := upstream.GrantedScope(tok)
	granted := upstream.Scopes(scope)

	email := ""
	// Without user:email (or user) GET /user/emails answers 404; GitHub
	// always reports the granted scope, so skip the call rather than fail.
	if !hasScope || slices.Contains(granted, "user:email") || slices.Contains(granted, "user") {
		email, err = p.primaryVerifiedEmail(ctx, tok.AccessToken)
		if err != nil {
			return providers.Identity{}, err
		}
	}
	if email == "" && !p.allowUnverifiedEmail {
		return providers.Identity{}, &providers.PolicyError{
			Provider: p.id,
			Reason:   "github account has no verified primary email",
			Err:      providers.ErrUnverifiedEmail,
		}
	}

	var orgs []string
	if slices.Contains(granted, "read:org") || slices.Contains(granted, "write:org") || slices.Contains(granted, "admin:org") {
		if orgs, err = p.orgs(ctx, tok.AccessToken); err != nil {
			return providers.Identity{}, err
		}
	}

	name := user.Name
	if name == "" {
		name = user.Login
	}
	return providers.Identity{
		Subject:       strconv.FormatInt(user.ID, 10),
		Email:         email,
		EmailVerified: email != "",
		Name:          name,
		Picture:       user.AvatarURL,
		Username:      user.Login,
		Claims:        claims,
		Orgs:          orgs,
		Profile:       user,
		Tokens:        tok,
	}, nil
}

// Refresh renews tokens of a GitHub App with expiring user tokens (OAuth apps
// issue no refresh tokens). GitHub rotates the refresh token on every use; a
// reused one gives bad_refresh_token, which matches providers.ErrInvalidGrant.
func (p *provider) Refresh(ctx context.Context, refreshToken string) (*oauth2.Token, error) {
	if refreshToken == "" {
		return nil, fmt.Errorf("%s: empty refresh token: %w", p.id, providers.ErrInvalidInput)
	}
	// An already expired token makes the source refresh at once.
	old := &oauth2.Token{RefreshToken: refreshToken, Expiry: time.Unix(1, 0)}
	tok, err := p.oauth.TokenSource(p.tokenContext(ctx), old).Token()
	if err != nil {
		return nil, upstream.TokenError(p.id, "refresh", err, p.now())
	}
	return tok, nil
}

// tokenContext attaches the token-endpoint client for x/oauth2, right before
// calling it (STYLE "Context").
func (p *provider) tokenContext(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, p.tokenHTTP)
}

func (p *provider) invalid(op string, err error) error {
	return &providers.ProviderError{Provider: p.id, Op: op, Err: fmt.Errorf("%w: %w", err, providers.ErrInvalidResponse)}
}

type email struct {
	Email    string `json:"email"`
	Primary  bool   `json:"primary"`
	Verified bool   `json:"verified"`
}

// primaryVerifiedEmail returns the primary address when it is verified, ""
// otherwise. A verified secondary address is not used: the primary one is
// the address the user chose to be reached at, and picking among
// secondaries would make the result depend on their order.
func (p *provider) primaryVerifiedEmail(ctx context.Context, token string) (string, error) {
	var emails []email
	if _, err := p.rest.GetJSON(ctx, "list emails", p.api+"/user/emails?per_page=100", token, apiAccept, &emails); err != nil {
		return "", err
	}
	for _, e := range emails {
		if e.Primary && e.Verified && e.Email != "" {
			return e.Email, nil
		}
	}
	return "", nil
}

// orgs lists the user's organization logins, following Link rel="next"
// within the API. It returns a non-nil slice.
func (p *provider) orgs(ctx context.Context, token string) ([]string, error) {
	orgs := []string{}
	next := p.api + "/user/orgs?per_page=100"
	for page := 0; next != "" && page < maxOrgPages; page++ {
		var batch []struct {
			Login string `json:"login"`
		}
		h, err := p.rest.GetJSON(ctx, "list orgs", next, token, apiAccept, &batch)
		if err != nil {
			return nil, err
		}
		for _, o := range batch {
			if o.Login != "" {
				orgs = append(orgs, o.Login)
			}
		}
		next = nextLink(h.Get("Link"))
		if next != "" && !strings.HasPrefix(next, p.api+"/") {
			// Never send the token anywhere but the configured API.
			next = ""
		}
	}
	return orgs, nil
}

// nextLink returns the rel="next" target of an RFC 8288 Link header.
func nextLink(h string) string {
	for part := range strings.SplitSeq(h, ",") {
		segs := strings.Split(part, ";")
		if len(segs) < 2 {
			continue
		}
		target := strings.TrimSpace(segs[0])
		if !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
			continue
		}
		for _, param := range segs[1:] {
			if strings.ReplaceAll(strings.TrimSpace(param), " ", "") == `rel="next"` {
				return target[1 : len(target)-1]
			}
		}
	}
	return ""
}
