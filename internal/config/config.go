package config

import (
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
)

// Config is the broker's whole configuration, the shape of SPEC §8. The
// mapstructure tags are the YAML keys; fields tagged "-" are filled by [Load]
// and [Dev], never read from the file.
type Config struct {
	Server    Server            `mapstructure:"server"`
	Database  Database          `mapstructure:"database"`
	Secrets   Secrets           `mapstructure:"secrets"`
	Session   Session           `mapstructure:"session"`
	Redirect  Redirect          `mapstructure:"redirect"`
	Providers Providers         `mapstructure:"providers"`
	WebAuthn  WebAuthn          `mapstructure:"webauthn"`
	Email     Email             `mapstructure:"email"`
	Password  Password          `mapstructure:"password"`
	Limits    Limits            `mapstructure:"limits"`
	Claims    map[string]string `mapstructure:"claims"` // claim name → CEL expression
	Access    []AccessRule      `mapstructure:"access"` // forward-auth rules, first match wins
	Log       Log               `mapstructure:"log"`
	Audit     Audit             `mapstructure:"audit"`

	// CookieKeys is the decoded cookie keyring (secrets.cookie_key, then
	// secrets.cookie_keys): the first key seals flow-state cookies, every key
	// opens them. Filled by [Load] and [Dev].
	CookieKeys [][]byte `mapstructure:"-"`
	// TokenKeys is the decoded token keyring (secrets.token_key, then
	// secrets.token_keys): the first key encrypts provider tokens at rest,
	// every key decrypts them. Filled by [Load] and [Dev].
	TokenKeys [][]byte `mapstructure:"-"`
	// Dev reports development mode ([Dev]), so that the server can warn.
	Dev bool `mapstructure:"-"`
	// Source is the path of the file [Load] read; empty in development mode.
	Source string `mapstructure:"-"`
}

// Server configures the HTTP listener.
type Server struct {
	// Listen is the host:port the broker listens on.
	Listen string `mapstructure:"listen"`
	// PublicURL is the broker's external URL (scheme, host and port, no
	// path); callbacks are {public_url}/login/{provider}/callback.
	PublicURL string `mapstructure:"public_url"`
	// TrustedProxies lists the CIDRs (or single IPs) of reverse proxies whose
	// X-Forwarded-For is believed when finding the client IP.
	TrustedProxies []string `mapstructure:"trusted_proxies"`
	// MetricsListen, when set, serves /metrics on its own host:port; when
	// empty, /metrics is on the main listener for loopback peers only.
	MetricsListen string `mapstructure:"metrics_listen"`
	// ProviderTimeout bounds each outbound call to a provider.
	ProviderTimeout time.Duration `mapstructure:"provider_timeout"`
	// ShutdownGrace is how long in-flight requests may take after SIGTERM.
	ShutdownGrace time.Duration `mapstructure:"shutdown_grace"`
	// MaxBodyBytes caps request bodies (413 REQUEST_TOO_LARGE beyond).
	MaxBodyBytes int64 `mapstructure:"max_body_bytes"`
	// FastAuth answers keep-alive GET /auth requests on the broker's own
	// lean HTTP/1.1 connection loop, and everything else with net/http
	// (see internal/fastlane). False: net/http answers everything.
	FastAuth bool `mapstructure:"fast_auth"`
}

// Database configures storage.
type Database struct {
	// URL is postgres://… / postgresql://… or sqlite:path, sqlite:///abs/path,
	// sqlite::memory:.
	URL string `mapstructure:"url"`
	// URLFile is a file holding URL (it may contain a password).
	URLFile string `mapstructure:"url_file"`
	// AutoMigrate runs the embedded migrations on start.
	AutoMigrate bool `mapstructure:"auto_migrate"`
}

// Secrets holds the broker's own keys as base64 of 32 bytes. The decoded
// keyrings are [Config.CookieKeys] and [Config.TokenKeys].
type Secrets struct {
	CookieKey      string   `mapstructure:"cookie_key"`       // seals flow-state cookies
	CookieKeyFile  string   `mapstructure:"cookie_key_file"`  // file holding cookie_key
	CookieKeys     []string `mapstructure:"cookie_keys"`      // more cookie keys, for rotation
	CookieKeysFile string   `mapstructure:"cookie_keys_file"` // file holding cookie_keys
	TokenKey       string   `mapstructure:"token_key"`        // encrypts provider tokens at rest
	TokenKeyFile   string   `mapstructure:"token_key_file"`   // file holding token_key
	TokenKeys      []string `mapstructure:"token_keys"`       // more token keys, for rotation
	TokenKeysFile  string   `mapstructure:"token_keys_file"`  // file holding token_keys
}

// Session configures broker sessions and their cookie.
type Session struct {
	CookieName   string        `mapstructure:"cookie_name"`
	CookieDomain string        `mapstructure:"cookie_domain"` // empty: host-only cookie
	ActivePeriod time.Duration `mapstructure:"active_period"`
	IdlePeriod   time.Duration `mapstructure:"idle_period"` // idle_expires = active_expires + idle_period
	// CacheSize bounds the in-process cache of validated sessions (0 turns
	// it off); CacheTTL is how long a cached session is used before
	// validation reads the database again.
	CacheSize int           `mapstructure:"cache_size"`
	CacheTTL  time.Duration `mapstructure:"cache_ttl"`
}

// Redirect configures where the broker may send users after login and which
// origins may call it from the browser (CORS, origin checks).
type Redirect struct {
	// AllowedOrigins are scheme://host[:port] origins; a host starting with
	// "*." allows its subdomains.
	AllowedOrigins []string `mapstructure:"allowed_origins"`
	// Default is where a login without redirect_to ends: a path on the
	// broker, or a URL on an allowed origin.
	Default string `mapstructure:"default"`
}

// Providers configures the OAuth2 and OpenID Connect sign-in providers.
type Providers struct {
	GitHub GitHub          `mapstructure:"github"`
	Google Google          `mapstructure:"google"`
	OIDC   map[string]OIDC `mapstructure:"oidc"` // instance name → settings
}

// GitHub configures sign-in with GitHub (or GitHub Enterprise). It is on when
// ClientID is set.
type GitHub struct {
	ClientID         string   `mapstructure:"client_id"`
	ClientSecret     string   `mapstructure:"client_secret"`
	ClientSecretFile string   `mapstructure:"client_secret_file"`
	Scopes           []string `mapstructure:"scopes"`
	// AuthURL, TokenURL and APIURL override github.com's endpoints, for
	// GitHub Enterprise and tests; empty means github.com.
	AuthURL  string `mapstructure:"auth_url"`
	TokenURL string `mapstructure:"token_url"`
	APIURL   string `mapstructure:"api_url"`
	// Allow is an optional CEL sign-in restriction over identity.
	Allow string `mapstructure:"allow"`
	// Attributes maps user attribute names to CEL expressions over identity,
	// evaluated at every login.
	Attributes map[string]string `mapstructure:"attributes"`
	// LinkVerifiedEmail links a new identity to the existing user owning its
	// verified email.
	LinkVerifiedEmail bool `mapstructure:"link_verified_email"`
}

// Google configures sign-in with Google. It is on when ClientID is set.
type Google struct {
	ClientID         string   `mapstructure:"client_id"`
	ClientSecret     string   `mapstructure:"client_secret"`
	ClientSecretFile string   `mapstructure:"client_secret_file"`
	Issuer           string   `mapstructure:"issuer"` // overridable for tests
	Scopes           []string `mapstructure:"scopes"`
	// HostedDomain, when set, is sent as the hd hint and required in the
	// id token's hd claim (a Google Workspace domain).
	HostedDomain      string            `mapstructure:"hosted_domain"`
	Allow             string            `mapstructure:"allow"`
	Attributes        map[string]string `mapstructure:"attributes"`
	LinkVerifiedEmail bool              `mapstructure:"link_verified_email"`
}

// OIDC configures one OpenID Connect instance, served at /login/<name>. An
// instance is on when it exists.
type OIDC struct {
	Issuer           string   `mapstructure:"issuer"`
	ClientID         string   `mapstructure:"client_id"`
	ClientSecret     string   `mapstructure:"client_secret"` // empty for a public client
	ClientSecretFile string   `mapstructure:"client_secret_file"`
	Scopes           []string `mapstructure:"scopes"`
	// DisplayName labels the login button; it defaults to the instance name.
	DisplayName  string       `mapstructure:"display_name"`
	ClaimMapping ClaimMapping `mapstructure:"claim_mapping"`
	// UserInfo fetches the userinfo endpoint in addition to the id token.
	UserInfo          bool              `mapstructure:"userinfo"`
	Allow             string            `mapstructure:"allow"`
	Attributes        map[string]string `mapstructure:"attributes"`
	LinkVerifiedEmail bool              `mapstructure:"link_verified_email"`
}

// ClaimMapping names the id token (or userinfo) claims that hold each part of
// the identity.
type ClaimMapping struct {
	UserID  string `mapstructure:"user_id"`
	Email   string `mapstructure:"email"`
	Name    string `mapstructure:"name"`
	Picture string `mapstructure:"picture"`
}

// WebAuthn configures passkeys. They are on when RPID is set.
type WebAuthn struct {
	RPID             string   `mapstructure:"rp_id"`
	RPName           string   `mapstructure:"rp_name"`
	Origins          []string `mapstructure:"origins"`
	UserVerification string   `mapstructure:"user_verification"` // required | preferred | discouraged
}

// Email configures magic-link sign-in. It is on when Sender is set.
type Email struct {
	Sender  string        `mapstructure:"sender"` // "" (off) | log | smtp
	From    string        `mapstructure:"from"`   // RFC 5322 address, required for smtp
	LinkTTL time.Duration `mapstructure:"link_ttl"`
	SMTP    SMTP          `mapstructure:"smtp"`
}

// SMTP configures the smtp sender.
type SMTP struct {
	Host         string `mapstructure:"host"`
	Port         int    `mapstructure:"port"`
	Username     string `mapstructure:"username"`
	Password     string `mapstructure:"password"`
	PasswordFile string `mapstructure:"password_file"`
	TLS          string `mapstructure:"tls"` // none | starttls | tls
}

// Password configures email + password sign-up and login.
type Password struct {
	Enabled   bool `mapstructure:"enabled"`
	MinLength int  `mapstructure:"min_length"`
}

// Limits configures rate limits, shared by replicas.
type Limits struct {
	// LoginFailures limits failed password logins per key and per client IP.
	LoginFailures Limit `mapstructure:"login_failures"`
	// EmailSends limits sign-in emails per address and per client IP.
	EmailSends Limit `mapstructure:"email_sends"`
	// Signups limits sign-ups per client IP: password sign-ups (each costs
	// an argon2id hash and a new account) and passkey sign-up ceremonies.
	Signups Limit `mapstructure:"signups"`
}

// Limit allows Max events per Window.
type Limit struct {
	Max    int           `mapstructure:"max"`
	Window time.Duration `mapstructure:"window"`
}

// AccessRule is a forward-auth rule (SPEC §9): a request matching Host (when
// set) and PathPrefix (when set) is allowed when Allow, a CEL expression over
// user, keys, session, claims and request, is true. An empty Allow lets every
// signed-in user through.
type AccessRule struct {
	Host       string `mapstructure:"host"`
	PathPrefix string `mapstructure:"path_prefix"`
	Allow      string `mapstructure:"allow"`
}

// Log configures the slog handler.
type Log struct {
	Format string `mapstructure:"format"` // json | text
	Level  string `mapstructure:"level"`  // debug | info | warn | error
}

// Audit configures the audit log.
type Audit struct {
	Retention time.Duration `mapstructure:"retention"`
}

// Defaults returns the configuration every key starts from (SPEC §8).
func Defaults() *Config {
	return &Config{
		Server: Server{
			Listen:          "127.0.0.1:8080",
			PublicURL:       "http://localhost:8080",
			TrustedProxies:  []string{},
			ProviderTimeout: 10 * time.Second,
			ShutdownGrace:   20 * time.Second,
			MaxBodyBytes:    65536,
			FastAuth:        true,
		},
		Secrets: Secrets{CookieKeys: []string{}, TokenKeys: []string{}},
		Session: Session{
			CookieName:   "auth_session",
			ActivePeriod: 24 * time.Hour,
			IdlePeriod:   336 * time.Hour,
			CacheSize:    32_768,
			CacheTTL:     10 * time.Second,
		},
		Redirect: Redirect{AllowedOrigins: []string{}, Default: "/"},
		Providers: Providers{
			GitHub: GitHub{Scopes: []string{"read:user", "user:email"}},
			Google: Google{
				Issuer: "https://accounts.google.com",
				Scopes: []string{"openid", "email", "profile"},
			},
		},
		WebAuthn: WebAuthn{RPName: "Broker", Origins: []string{}, UserVerification: "required"},
		Email: Email{
			LinkTTL: 10 * time.Minute,
			SMTP:    SMTP{Port: 587, TLS: "starttls"},
		},
		Password: Password{MinLength: 8},
		Limits: Limits{
			LoginFailures: Limit{Max: 5, Window: 15 * time.Minute},
			EmailSends:    Limit{Max: 5, Window: time.Hour},
			Signups:       Limit{Max: 100, Window: time.Hour},
		},
		Log:   Log{Format: "json", Level: "info"},
		Audit: Audit{Retention: 2160 * time.Hour},
	}
}

// DefaultOIDC returns the settings an OIDC instance called name starts from.
func DefaultOIDC(name string) OIDC {
	return OIDC{
		Scopes:      []string{"openid", "email", "profile"},
		DisplayName: name,
		ClaimMapping: ClaimMapping{
			UserID:  "sub",
			Email:   "email",
			Name:    "name",
			Picture: "picture",
		},
	}
}

// ProvidersEnabled returns the ids of the OAuth2/OIDC providers that are on:
// "github" and "google" when they have a client_id, then every OIDC instance,
// sorted by name.
func (c *Config) ProvidersEnabled() []string {
	var ids []string
	if c.Providers.GitHub.ClientID != "" {
		ids = append(ids, "github")
	}
	if c.Providers.Google.ClientID != "" {
		ids = append(ids, "google")
	}
	names := make([]string, 0, len(c.Providers.OIDC))
	for name := range c.Providers.OIDC {
		names = append(names, name)
	}
	sort.Strings(names)
	return append(ids, names...)
}

// PasswordEnabled reports whether password sign-up and login are on.
func (c *Config) PasswordEnabled() bool { return c.Password.Enabled }

// EmailEnabled reports whether email magic links are on.
func (c *Config) EmailEnabled() bool { return c.Email.Sender != "" }

// WebAuthnEnabled reports whether passkeys are on.
func (c *Config) WebAuthnEnabled() bool { return c.WebAuthn.RPID != "" }

// TrustedProxyPrefixes returns [Server.TrustedProxies] parsed, a single IP
// becoming a full-length prefix. Entries that do not parse are skipped
// ([Config.Validate] reports them).
func (s Server) TrustedProxyPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s.TrustedProxies {
		if pfx, err := parseProxy(p); err == nil {
			out = append(out, pfx)
		}
	}
	return out
}

func parseProxy(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// AllowsOrigin reports whether origin (scheme://host[:port], as in an Origin
// header) is in [Redirect.AllowedOrigins]: equal to an entry (ignoring case),
// or, for an entry https://*.example.com, a subdomain of example.com with the
// same scheme and port. Labels match whole: evilexample.com never matches.
func (r Redirect) AllowsOrigin(origin string) bool {
	return slices.ContainsFunc(r.AllowedOrigins, func(allowed string) bool {
		return originMatches(allowed, origin)
	})
}

func originMatches(allowed, origin string) bool {
	allowed, origin = strings.ToLower(allowed), strings.ToLower(origin)
	if allowed == origin {
		return true
	}
	scheme, rest, ok := strings.Cut(allowed, "://*.")
	if !ok {
		return false
	}
	oscheme, ohostport, ok := strings.Cut(origin, "://")
	if !ok || oscheme != scheme {
		return false
	}
	// rest is "example.com[:port]"; the origin must be "<labels>.example.com[:port]".
	sub, found := strings.CutSuffix(ohostport, "."+rest)
	return found && sub != "" && !strings.ContainsAny(sub, ":/@") && !strings.HasPrefix(sub, ".") && !strings.Contains(sub, "..")
}
