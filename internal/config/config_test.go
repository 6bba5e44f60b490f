package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"
)

// Sample keys: base64 of 32 bytes.
var (
	key1 = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	key2 = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32))
	key3 = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{3}, 32))
	raw1 = bytes.Repeat([]byte{1}, 32)
	raw2 = bytes.Repeat([]byte{2}, 32)
	raw3 = bytes.Repeat([]byte{3}, 32)
)

// env returns a getenv over m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeFile writes a file under dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// load writes yml to a temporary file and loads it.
func load(t *testing.T, yml string, getenv func(string) string) (*Config, error) {
	t.Helper()
	return Load(writeFile(t, t.TempDir(), "broker.yaml", yml), getenv)
}

// fieldErrors lists the FieldErrors inside err.
func fieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *FieldError:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner)
			}
		default:
			walk(errors.Unwrap(err))
		}
	}
	walk(err)
	return out
}

// paths lists the paths of the FieldErrors inside err.
func paths(err error) []string {
	var ps []string
	for _, fe := range fieldErrors(err) {
		ps = append(ps, fe.Path)
	}
	return ps
}

// problemAt returns the problem reported at path, if any.
func problemAt(err error, path string) (string, bool) {
	for _, fe := range fieldErrors(err) {
		if fe.Path == path {
			return fe.Problem, true
		}
	}
	return "", false
}

var equateEmpty = cmpopts.EquateEmpty()

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := load(t, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Source = c.Source
	if diff := cmp.Diff(want, c, equateEmpty); diff != "" {
		t.Errorf("Load(empty file) differs from Defaults() (-want +got):\n%s", diff)
	}
	// Defaults() itself, against SPEC §8.
	tests := []struct {
		key       string
		got, want any
	}{
		{"server.listen", c.Server.Listen, "127.0.0.1:8080"},
		{"server.public_url", c.Server.PublicURL, "http://localhost:8080"},
		{"server.trusted_proxies", len(c.Server.TrustedProxies), 0},
		{"server.metrics_listen", c.Server.MetricsListen, ""},
		{"server.provider_timeout", c.Server.ProviderTimeout, 10 * time.Second},
		{"server.shutdown_grace", c.Server.ShutdownGrace, 20 * time.Second},
		{"server.max_body_bytes", c.Server.MaxBodyBytes, int64(65536)},
		{"server.fast_auth", c.Server.FastAuth, true},
		{"database.url", c.Database.URL, ""},
		{"database.auto_migrate", c.Database.AutoMigrate, false},
		{"session.cookie_name", c.Session.CookieName, "auth_session"},
		{"session.cookie_domain", c.Session.CookieDomain, ""},
		{"session.active_period", c.Session.ActivePeriod, 24 * time.Hour},
		{"session.idle_period", c.Session.IdlePeriod, 14 * 24 * time.Hour},
		{"session.cache_size", c.Session.CacheSize, 32768},
		{"session.cache_ttl", c.Session.CacheTTL, 10 * time.Second},
		{"redirect.allowed_origins", len(c.Redirect.AllowedOrigins), 0},
		{"redirect.default", c.Redirect.Default, "/"},
		{"providers.github.scopes", c.Providers.GitHub.Scopes, []string{"read:user", "user:email"}},
		{"providers.github.link_verified_email", c.Providers.GitHub.LinkVerifiedEmail, false},
		{"providers.google.issuer", c.Providers.Google.Issuer, "https://accounts.google.com"},
		{"providers.google.scopes", c.Providers.Google.Scopes, []string{"openid", "email", "profile"}},
		{"webauthn.rp_id", c.WebAuthn.RPID, ""},
		{"webauthn.rp_name", c.WebAuthn.RPName, "Broker"},
		{"webauthn.user_verification", c.WebAuthn.UserVerification, "required"},
		{"email.sender", c.Email.Sender, ""},
		{"email.link_ttl", c.Email.LinkTTL, 10 * time.Minute},
		{"email.smtp.port", c.Email.SMTP.Port, 587},
		{"email.smtp.tls", c.Email.SMTP.TLS, "starttls"},
		{"password.enabled", c.Password.Enabled, false},
		{"password.min_length", c.Password.MinLength, 8},
		{"limits.login_failures", c.Limits.LoginFailures, Limit{Max: 5, Window: 15 * time.Minute}},
		{"limits.email_sends", c.Limits.EmailSends, Limit{Max: 5, Window: time.Hour}},
		{"limits.signups", c.Limits.Signups, Limit{Max: 100, Window: time.Hour}},
		{"log.format", c.Log.Format, "json"},
		{"log.level", c.Log.Level, "info"},
		{"audit.retention", c.Audit.Retention, 90 * 24 * time.Hour},
		{"dev", c.Dev, false},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %v; want %v", tt.key, tt.got, tt.want)
		}
	}
	o := DefaultOIDC("dex")
	want2 := OIDC{
		Scopes:       []string{"openid", "email", "profile"},
		DisplayName:  "dex",
		ClaimMapping: ClaimMapping{UserID: "sub", Email: "email", Name: "name", Picture: "picture"},
	}
	if diff := cmp.Diff(want2, o); diff != "" {
		t.Errorf("DefaultOIDC (-want +got):\n%s", diff)
	}
}

func TestEmptyBlocksKeepDefaults(t *testing.T) {
	t.Parallel()
	c, err := load(t, "server:\nproviders:\n  github:\n  oidc:\n    dex:\nsession:\n  cookie_name:\n", env(map[string]string{
		"BROKER_SERVER_LISTEN":                   ":9999",
		"BROKER_PROVIDERS_OIDC_DEX_CLIENT_ID":    "from-env",
		"BROKER_PROVIDERS_GITHUB_CLIENT_ID":      "gh",
		"BROKER_PROVIDERS_OIDC_DEX_DISPLAY_NAME": "Dex!",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Server.Listen, ":9999"; got != want {
		t.Errorf("server.listen = %q; want %q", got, want)
	}
	if got, want := c.Server.PublicURL, "http://localhost:8080"; got != want {
		t.Errorf("server.public_url = %q; want %q", got, want)
	}
	if got, want := c.Session.CookieName, "auth_session"; got != want {
		t.Errorf("session.cookie_name = %q; want %q (an empty key keeps its default)", got, want)
	}
	dex, ok := c.Providers.OIDC["dex"]
	if !ok {
		t.Fatalf("providers.oidc.dex missing: an empty instance block still declares the instance")
	}
	want := DefaultOIDC("dex")
	want.ClientID = "from-env"
	want.DisplayName = "Dex!"
	if diff := cmp.Diff(want, dex); diff != "" {
		t.Errorf("providers.oidc.dex (-want +got):\n%s", diff)
	}
	if got, want := c.ProvidersEnabled(), []string{"github", "dex"}; !slices.Equal(got, want) {
		t.Errorf("ProvidersEnabled() = %v; want %v", got, want)
	}
}

const fullYAML = `
server:
  listen: 0.0.0.0:9090
  public_url: https://auth.example.com
  trusted_proxies: [10.0.0.0/8, 192.168.1.1]
  metrics_listen: 127.0.0.1:9091
  provider_timeout: 5s
  shutdown_grace: 30s
  max_body_bytes: 1024
  fast_auth: false
database:
  url: postgres://broker@db:5432/broker?sslmode=disable
  auto_migrate: true
secrets:
  cookie_key: ` + "\"" + "KEY1" + "\"" + `
  cookie_keys: [` + "\"" + "KEY3" + "\"" + `]
  token_key: ` + "\"" + "KEY2" + "\"" + `
  token_keys: []
session:
  cookie_name: sid
  cookie_domain: example.com
  active_period: 1h
  idle_period: 48h
  cache_size: 0
  cache_ttl: 2s
redirect:
  allowed_origins: [https://app.example.com, "https://*.apps.example.com"]
  default: https://app.example.com/home
providers:
  github:
    client_id: gh-id
    client_secret: gh-secret
    scopes: [read:user, "user:email", "read:org"]
    auth_url: https://ghe.example.com/login/oauth/authorize
    token_url: https://ghe.example.com/login/oauth/access_token
    api_url: https://ghe.example.com/api/v3
    allow: '"example" in identity.orgs'
    attributes: {orgs: identity.orgs}
    link_verified_email: true
  google:
    client_id: g-id
    client_secret: g-secret
    issuer: https://accounts.example.com
    scopes: [openid, email]
    hosted_domain: example.com
    allow: identity.email_verified
    attributes: {hd: identity.claims.hd}
    link_verified_email: true
  oidc:
    dex:
      issuer: https://dex.example.com
      client_id: dex-id
      client_secret: dex-secret
      scopes: [openid, email, groups]
      display_name: Company SSO
      claim_mapping: {user_id: uid, email: mail, name: cn, picture: avatar}
      userinfo: true
      allow: '"staff" in identity.claims.groups'
      attributes: {groups: identity.claims.groups}
      link_verified_email: true
webauthn:
  rp_id: example.com
  rp_name: Example
  origins: [https://auth.example.com, https://app.example.com]
  user_verification: preferred
email:
  sender: smtp
  from: Example <login@example.com>
  link_ttl: 15m
  smtp: {host: smtp.example.com, port: 465, username: u, password: p, tls: tls}
password:
  enabled: true
  min_length: 12
limits:
  login_failures: {max: 3, window: 10m}
  email_sends: {max: 2, window: 30m}
  signups: {max: 4, window: 2h}
claims:
  role: user.attributes.role
  is_admin: '"admin" in user.attributes.groups'
access:
  - {host: app.example.com, path_prefix: /admin, allow: 'claims.role == "admin"'}
  - {path_prefix: /public}
log: {format: text, level: debug}
audit: {retention: 720h}
`

func fullConfigWant() *Config {
	return &Config{
		Server: Server{
			Listen:          "0.0.0.0:9090",
			PublicURL:       "https://auth.example.com",
			TrustedProxies:  []string{"10.0.0.0/8", "192.168.1.1"},
			MetricsListen:   "127.0.0.1:9091",
			ProviderTimeout: 5 * time.Second,
			ShutdownGrace:   30 * time.Second,
			MaxBodyBytes:    1024,
		},
		Database: Database{URL: "postgres://broker@db:5432/broker?sslmode=disable", AutoMigrate: true},
		Secrets:  Secrets{CookieKey: key1, CookieKeys: []string{key3}, TokenKey: key2},
		Session: Session{CookieName: "sid", CookieDomain: "example.com", ActivePeriod: time.Hour, IdlePeriod: 48 * time.Hour,
			CacheSize: 0, CacheTTL: 2 * time.Second},
		Redirect: Redirect{
			AllowedOrigins: []string{"https://app.example.com", "https://*.apps.example.com"},
			Default:        "https://app.example.com/home",
		},
		Providers: Providers{
			GitHub: GitHub{
				ClientID: "gh-id", ClientSecret: "gh-secret",
				Scopes:   []string{"read:user", "user:email", "read:org"},
				AuthURL:  "https://ghe.example.com/login/oauth/authorize",
				TokenURL: "https://ghe.example.com/login/oauth/access_token",
				APIURL:   "https://ghe.example.com/api/v3",
				Allow:    `"example" in identity.orgs`, Attributes: map[string]string{"orgs": "identity.orgs"},
				LinkVerifiedEmail: true,
			},
			Google: Google{
				ClientID: "g-id", ClientSecret: "g-secret", Issuer: "https://accounts.example.com",
				Scopes: []string{"openid", "email"}, HostedDomain: "example.com",
				Allow: "identity.email_verified", Attributes: map[string]string{"hd": "identity.claims.hd"},
				LinkVerifiedEmail: true,
			},
			OIDC: map[string]OIDC{"dex": {
				Issuer: "https://dex.example.com", ClientID: "dex-id", ClientSecret: "dex-secret",
				Scopes: []string{"openid", "email", "groups"}, DisplayName: "Company SSO",
				ClaimMapping: ClaimMapping{UserID: "uid", Email: "mail", Name: "cn", Picture: "avatar"},
				UserInfo:     true, Allow: `"staff" in identity.claims.groups`,
				Attributes:        map[string]string{"groups": "identity.claims.groups"},
				LinkVerifiedEmail: true,
			}},
		},
		WebAuthn: WebAuthn{
			RPID: "example.com", RPName: "Example",
			Origins:          []string{"https://auth.example.com", "https://app.example.com"},
			UserVerification: "preferred",
		},
		Email: Email{
			Sender: "smtp", From: "Example <login@example.com>", LinkTTL: 15 * time.Minute,
			SMTP: SMTP{Host: "smtp.example.com", Port: 465, Username: "u", Password: "p", TLS: "tls"},
		},
		Password: Password{Enabled: true, MinLength: 12},
		Limits: Limits{
			LoginFailures: Limit{Max: 3, Window: 10 * time.Minute},
			EmailSends:    Limit{Max: 2, Window: 30 * time.Minute},
			Signups:       Limit{Max: 4, Window: 2 * time.Hour},
		},
		Claims: map[string]string{"role": "user.attributes.role", "is_admin": `"admin" in user.attributes.groups`},
		Access: []AccessRule{
			{Host: "app.example.com", PathPrefix: "/admin", Allow: `claims.role == "admin"`},
			{PathPrefix: "/public"},
		},
		Log:        Log{Format: "text", Level: "debug"},
		Audit:      Audit{Retention: 720 * time.Hour},
		CookieKeys: [][]byte{raw1, raw3},
		TokenKeys:  [][]byte{raw2},
	}
}

func fullYAMLWithKeys() string {
	return strings.NewReplacer("KEY1", key1, "KEY2", key2, "KEY3", key3).Replace(fullYAML)
}

func TestFullFileRoundTrip(t *testing.T) {
	t.Parallel()
	c, err := load(t, fullYAMLWithKeys(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := fullConfigWant()
	want.Source = c.Source
	if diff := cmp.Diff(want, c, equateEmpty); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() = %v; want nil", err)
	}
	if got, want := c.ProvidersEnabled(), []string{"github", "google", "dex"}; !slices.Equal(got, want) {
		t.Errorf("ProvidersEnabled() = %v; want %v", got, want)
	}
	if !c.PasswordEnabled() || !c.EmailEnabled() || !c.WebAuthnEnabled() {
		t.Errorf("PasswordEnabled, EmailEnabled, WebAuthnEnabled = %v, %v, %v; want all true",
			c.PasswordEnabled(), c.EmailEnabled(), c.WebAuthnEnabled())
	}
	if got, want := len(c.Server.TrustedProxyPrefixes()), 2; got != want {
		t.Errorf("len(TrustedProxyPrefixes()) = %d; want %d", got, want)
	}

	// Writing the decoded struct back out as YAML and loading it again gives
	// the same Config: the tags are the file's keys.
	c2, err := load(t, toYAML(t, c), nil)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	c2.Source = c.Source
	if diff := cmp.Diff(c, c2, equateEmpty); diff != "" {
		t.Errorf("reload (-first +second):\n%s", diff)
	}
}

// toYAML renders c with its mapstructure keys and durations as Go strings.
func toYAML(t *testing.T, c *Config) string {
	t.Helper()
	var conv func(v reflect.Value) any
	conv = func(v reflect.Value) any {
		switch {
		case v.Type() == durationType:
			return time.Duration(v.Int()).String()
		case v.Kind() == reflect.Struct:
			m := map[string]any{}
			for i := range v.NumField() {
				tag := v.Type().Field(i).Tag.Get("mapstructure")
				if tag != "" && tag != "-" {
					m[tag] = conv(v.Field(i))
				}
			}
			return m
		case v.Kind() == reflect.Map:
			m := map[string]any{}
			for _, k := range v.MapKeys() {
				m[k.String()] = conv(v.MapIndex(k))
			}
			return m
		case v.Kind() == reflect.Slice:
			s := []any{}
			for i := range v.Len() {
				s = append(s, conv(v.Index(i)))
			}
			return s
		}
		return v.Interface()
	}
	out, err := yaml.Marshal(conv(reflect.ValueOf(*c)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestEnvOverrides(t *testing.T) {
	t.Parallel()
	const file = `
providers:
  oidc:
    dex: {issuer: https://dex.example.com, client_id: dex}
    my-idp: {issuer: https://idp.example.com, client_id: idp}
claims:
  role: user.attributes.role
`
	tests := []struct {
		name  string
		env   map[string]string
		check func(*Config) (got, want any)
	}{
		{"scalar string", map[string]string{"BROKER_SERVER_LISTEN": "0.0.0.0:1234"},
			func(c *Config) (any, any) { return c.Server.Listen, "0.0.0.0:1234" }},
		{"database url", map[string]string{"BROKER_DATABASE_URL": "postgres://x@y/z"},
			func(c *Config) (any, any) { return c.Database.URL, "postgres://x@y/z" }},
		{"bool", map[string]string{"BROKER_PASSWORD_ENABLED": "true"},
			func(c *Config) (any, any) { return c.Password.Enabled, true }},
		{"int", map[string]string{"BROKER_EMAIL_SMTP_PORT": "2525"},
			func(c *Config) (any, any) { return c.Email.SMTP.Port, 2525 }},
		{"duration", map[string]string{"BROKER_SESSION_IDLE_PERIOD": "72h"},
			func(c *Config) (any, any) { return c.Session.IdlePeriod, 72 * time.Hour }},
		{"cache size", map[string]string{"BROKER_SESSION_CACHE_SIZE": "0"},
			func(c *Config) (any, any) { return c.Session.CacheSize, 0 }},
		{"nested limit", map[string]string{"BROKER_LIMITS_LOGIN_FAILURES_MAX": "9"},
			func(c *Config) (any, any) { return c.Limits.LoginFailures.Max, 9 }},
		{"signup limit window", map[string]string{"BROKER_LIMITS_SIGNUPS_WINDOW": "30m"},
			func(c *Config) (any, any) { return c.Limits.Signups.Window, 30 * time.Minute }},
		{"list comma-separated and trimmed", map[string]string{"BROKER_REDIRECT_ALLOWED_ORIGINS": "https://a.example.com, https://b.example.com"},
			func(c *Config) (any, any) {
				return c.Redirect.AllowedOrigins, []string{"https://a.example.com", "https://b.example.com"}
			}},
		{"list replaces default", map[string]string{"BROKER_PROVIDERS_GITHUB_SCOPES": "read:user"},
			func(c *Config) (any, any) { return c.Providers.GitHub.Scopes, []string{"read:user"} }},
		{"oidc instance key in file", map[string]string{"BROKER_PROVIDERS_OIDC_DEX_CLIENT_ID": "other"},
			func(c *Config) (any, any) { return c.Providers.OIDC["dex"].ClientID, "other" }},
		{"oidc instance key only in defaults", map[string]string{"BROKER_PROVIDERS_OIDC_DEX_CLIENT_SECRET": "s3cret"},
			func(c *Config) (any, any) { return c.Providers.OIDC["dex"].ClientSecret, "s3cret" }},
		{"oidc nested default", map[string]string{"BROKER_PROVIDERS_OIDC_DEX_CLAIM_MAPPING_EMAIL": "mail"},
			func(c *Config) (any, any) { return c.Providers.OIDC["dex"].ClaimMapping.Email, "mail" }},
		{"oidc instance with hyphen", map[string]string{"BROKER_PROVIDERS_OIDC_MY_IDP_USERINFO": "true"},
			func(c *Config) (any, any) { return c.Providers.OIDC["my-idp"].UserInfo, true }},
		{"oidc instance absent from file is not created", map[string]string{"BROKER_PROVIDERS_OIDC_OTHER_ISSUER": "https://x"},
			func(c *Config) (any, any) { return len(c.Providers.OIDC), 2 }},
		{"claim in file", map[string]string{"BROKER_CLAIMS_ROLE": "user.attributes.other"},
			func(c *Config) (any, any) { return c.Claims["role"], "user.attributes.other" }},
		{"secret keyring", map[string]string{"BROKER_SECRETS_COOKIE_KEYS": key1 + "," + key2},
			func(c *Config) (any, any) { return c.CookieKeys, [][]byte{raw1, raw2} }},
		{"empty value is unset", map[string]string{"BROKER_SERVER_LISTEN": ""},
			func(c *Config) (any, any) { return c.Server.Listen, "127.0.0.1:8080" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(t, file, env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := tt.check(c); !reflect.DeepEqual(got, want) {
				t.Errorf("got %v; want %v", got, want)
			}
		})
	}
}

func TestEnvBadValueNamesKeyAndVariable(t *testing.T) {
	t.Parallel()
	_, err := load(t, "", env(map[string]string{
		"BROKER_SERVER_PROVIDER_TIMEOUT": "10",
		"BROKER_SERVER_MAX_BODY_BYTES":   "lots",
	}))
	for path, want := range map[string]string{
		"server.provider_timeout": "from BROKER_SERVER_PROVIDER_TIMEOUT",
		"server.max_body_bytes":   "from BROKER_SERVER_MAX_BODY_BYTES",
	} {
		got, ok := problemAt(err, path)
		if !ok || !strings.Contains(got, want) {
			t.Errorf("problem at %s = %q; want it to contain %q (err: %v)", path, got, want, err)
		}
	}
}

func TestEnvName(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]string{
		"database.url":                     "BROKER_DATABASE_URL",
		"server.listen":                    "BROKER_SERVER_LISTEN",
		"providers.oidc.dex.client_secret": "BROKER_PROVIDERS_OIDC_DEX_CLIENT_SECRET",
		"providers.oidc.my-idp.issuer":     "BROKER_PROVIDERS_OIDC_MY_IDP_ISSUER",
	} {
		if got := EnvName(key); got != want {
			t.Errorf("EnvName(%q) = %q; want %q", key, got, want)
		}
	}
}

func TestSecretFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir, "cookie.key", key1+"\n")
	writeFile(t, dir, "token.keys", key2+"\n"+key3+"\n")
	writeFile(t, dir, "dex.secret", "  dex-secret\n")
	writeFile(t, dir, "db.url", "postgres://u:pw@db/broker\n")
	abs := writeFile(t, dir, "smtp.pw", "smtp-pw")
	cfg := writeFile(t, dir, "broker.yaml", `
database: {url_file: db.url}
secrets:
  cookie_key_file: cookie.key
  token_keys_file: token.keys
providers:
  oidc:
    dex: {issuer: https://dex.example.com, client_id: dex, client_secret_file: dex.secret}
email:
  smtp: {password_file: `+abs+`}
`)
	other := t.TempDir()
	envGH := writeFile(t, other, "gh.secret", "gh-secret")
	c, err := Load(cfg, env(map[string]string{"BROKER_PROVIDERS_GITHUB_CLIENT_SECRET_FILE": envGH}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key       string
		got, want any
	}{
		{"database.url", c.Database.URL, "postgres://u:pw@db/broker"},
		{"secrets.cookie_key", c.Secrets.CookieKey, key1},
		{"secrets.token_keys", c.Secrets.TokenKeys, []string{key2, key3}},
		{"providers.oidc.dex.client_secret", c.Providers.OIDC["dex"].ClientSecret, "dex-secret"},
		{"providers.github.client_secret (path from env)", c.Providers.GitHub.ClientSecret, "gh-secret"},
		{"email.smtp.password (absolute path)", c.Email.SMTP.Password, "smtp-pw"},
		{"CookieKeys", c.CookieKeys, [][]byte{raw1}},
		{"TokenKeys (first encrypts)", c.TokenKeys, [][]byte{raw2, raw3}},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %v; want %v", tt.key, tt.got, tt.want)
		}
	}
}

func TestSecretFileErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yml, path, problem string
	}{
		{"missing file", "secrets: {cookie_key_file: /nonexistent/cookie.key}", "secrets.cookie_key_file", "cannot read"},
		{"both set", "secrets: {token_key: " + key1 + ", token_key_file: /x}", "secrets.token_key_file", "not both"},
		{"empty file", "providers: {github: {client_secret_file: empty}}", "providers.github.client_secret_file", "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeFile(t, dir, "empty", "\n")
			cfg := writeFile(t, dir, "broker.yaml", tt.yml)
			_, err := Load(cfg, nil)
			got, ok := problemAt(err, tt.path)
			if !ok || !strings.Contains(got, tt.problem) {
				t.Errorf("problem at %s = %q; want it to contain %q (err: %v)", tt.path, got, tt.problem, err)
			}
			if err != nil && !strings.Contains(err.Error(), cfg) {
				t.Errorf("error %q does not name the file %s", err, cfg)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		yml   string
		paths []string // FieldError paths, in order
		msg   string   // substring of the message
	}{
		{"unknown top-level key", "databse: {url: x}\n", []string{"databse"}, "databse: unknown key (did you mean database?)"},
		{"unknown nested key", "server:\n  lisen: :80\n", []string{"server.lisen"}, "server.lisen: unknown key (did you mean listen?)"},
		{"unknown key in oidc instance", "providers: {oidc: {dex: {issuer: x, isser: y}}}\n", []string{"providers.oidc.dex.isser"}, "unknown key"},
		{"unknown provider", "providers: {gitlab: {client_id: x}}\n", []string{"providers.gitlab"}, "unknown key"},
		{"unknown key in access rule", "access: [{hots: a}]\n", []string{"access[0].hots"}, "did you mean host?"},
		{"unknown key with null value", "server:\n  lisen:\n", []string{"server.lisen"}, "unknown key"},
		{"wrong type", "server: {max_body_bytes: lots}\n", []string{"server.max_body_bytes"}, `cannot read "lots" as a whole number`},
		{"list for a string", "server: {listen: [a, b]}\n", []string{"server.listen"}, "server.listen"},
		{"bare number duration", "session: {idle_period: 3600}\n", []string{"session.idle_period"}, "has no unit"},
		{"bad duration", "email: {link_ttl: 10 minutes}\n", []string{"email.link_ttl"}, "is not a duration"},
		{"block not a mapping", "providers: {github: true}\n", []string{"providers.github"}, "providers.github"},
		{"unknown and wrong type together", "server: {lisen: x, max_body_bytes: lots}\n",
			[]string{"server.lisen", "server.max_body_bytes"}, "server.lisen"},
		{"not YAML", "server: [\n", nil, "not YAML"},
		{"not a mapping", "- a\n- b\n", nil, "not a YAML mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, t.TempDir(), "broker.yaml", tt.yml)
			c, err := Load(path, nil)
			if err == nil {
				t.Fatalf("Load() = %+v, nil; want error", c)
			}
			var le *LoadError
			if !errors.As(err, &le) || le.File != path {
				t.Errorf("error %T does not carry the file %s", err, path)
			}
			for _, line := range Explain(err) {
				if !strings.HasPrefix(line, "config file "+path+": ") {
					t.Errorf("line %q does not name the file", line)
				}
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error = %q; want it to contain %q", err, tt.msg)
			}
			if got := paths(err); tt.paths != nil && !slices.Equal(got, tt.paths) {
				t.Errorf("paths = %q; want %q", got, tt.paths)
			}
		})
	}
}

func TestLoadFileNotFound(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "missing.yaml")
	_, err := Load(path, nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(err, fs.ErrNotExist) = false for %v", err)
	}
	if got, want := err.Error(), "config file "+path+": not found"; got != want {
		t.Errorf("error = %q; want %q", got, want)
	}
}

// validConfig returns a configuration that passes Validate: passwords only.
func validConfig() *Config {
	c := Defaults()
	c.Database.URL = "sqlite::memory:"
	c.Password.Enabled = true
	c.Secrets.CookieKey = key1
	c.Secrets.TokenKey = key2
	return c
}

func TestValidate(t *testing.T) {
	t.Parallel()
	withDex := func(c *Config, f func(*OIDC)) {
		o := DefaultOIDC("dex")
		o.Issuer, o.ClientID = "https://dex.example.com", "dex"
		f(&o)
		c.Providers.OIDC = map[string]OIDC{"dex": o}
	}
	passkeys := func(c *Config) {
		c.WebAuthn.RPID = "localhost"
		c.WebAuthn.Origins = []string{"http://localhost:8080"}
	}
	tests := []struct {
		name    string
		mutate  func(*Config)
		path    string // "" means valid
		problem string // substring
	}{
		{"valid", func(c *Config) {}, "", ""},
		{"valid full", func(c *Config) {
			c.Redirect.AllowedOrigins = []string{"https://app.example.com", "https://*.example.org"}
			c.Redirect.Default = "https://x.example.org/home"
			c.Server.TrustedProxies = []string{"10.0.0.0/8", "::1", "fd00::/8"}
			passkeys(c)
			withDex(c, func(o *OIDC) { o.Allow = `identity.email.lowerAscii().endsWith("@example.com")` })
			c.Claims = map[string]string{"role": "user.attributes.role", "is-admin": "user.attributes.role == 'admin'"}
			c.Access = []AccessRule{{Host: "app.example.com", PathPrefix: "/admin", Allow: "request.method == 'GET'"}}
		}, "", ""},

		{"listen not host:port", func(c *Config) { c.Server.Listen = "8080" }, "server.listen", "not host:port"},
		{"listen bad port", func(c *Config) { c.Server.Listen = "127.0.0.1:99999" }, "server.listen", "port"},
		{"public_url not absolute", func(c *Config) { c.Server.PublicURL = "localhost:8080" }, "server.public_url", "absolute http(s) URL"},
		{"public_url ftp", func(c *Config) { c.Server.PublicURL = "ftp://example.com" }, "server.public_url", "absolute http(s) URL"},
		{"public_url with path", func(c *Config) { c.Server.PublicURL = "https://example.com/auth" }, "server.public_url", "path"},
		{"public_url empty", func(c *Config) { c.Server.PublicURL = "" }, "server.public_url", "required"},
		{"trusted proxy", func(c *Config) { c.Server.TrustedProxies = []string{"10.0.0.0/8", "proxy.local"} }, "server.trusted_proxies[1]", "CIDR"},
		{"metrics_listen", func(c *Config) { c.Server.MetricsListen = "nope" }, "server.metrics_listen", "host:port"},
		{"metrics_listen same as listen", func(c *Config) { c.Server.MetricsListen = c.Server.Listen }, "server.metrics_listen", "differ"},
		{"provider_timeout", func(c *Config) { c.Server.ProviderTimeout = 0 }, "server.provider_timeout", "positive"},
		{"shutdown_grace", func(c *Config) { c.Server.ShutdownGrace = -time.Second }, "server.shutdown_grace", "positive"},
		{"max_body_bytes", func(c *Config) { c.Server.MaxBodyBytes = 0 }, "server.max_body_bytes", "positive"},

		{"database url missing", func(c *Config) { c.Database.URL = "" }, "database.url", "required"},
		{"database url scheme", func(c *Config) { c.Database.URL = "mysql://u:secret@h/db" }, "database.url", `scheme "mysql"`},
		{"database url sqlite without path", func(c *Config) { c.Database.URL = "sqlite:" }, "database.url", "needs a path"},
		{"database url from file", func(c *Config) { c.Database.URL, c.Database.URLFile = "redis://x", "db.url" }, "database.url_file", "scheme"},

		{"cookie key not base64", func(c *Config) { c.Secrets.CookieKey = "not base64!" }, "secrets.cookie_key", "not base64"},
		{"cookie key short", func(c *Config) { c.Secrets.CookieKey = base64.StdEncoding.EncodeToString(make([]byte, 16)) }, "secrets.cookie_key", "32 bytes, not 16"},
		{"cookie key from file", func(c *Config) { c.Secrets.CookieKey, c.Secrets.CookieKeyFile = "abc", "k" }, "secrets.cookie_key_file", "base64"},
		{"cookie keys entry", func(c *Config) { c.Secrets.CookieKeys = []string{key3, "short"} }, "secrets.cookie_keys[1]", "base64"},
		{"token key short", func(c *Config) { c.Secrets.TokenKey = base64.RawURLEncoding.EncodeToString(make([]byte, 31)) }, "secrets.token_key", "not 31"},
		{"token keys entry", func(c *Config) { c.Secrets.TokenKeys = []string{"x"} }, "secrets.token_keys[0]", "base64"},
		{"same cookie and token key", func(c *Config) { c.Secrets.TokenKey = key1 }, "secrets.token_key", "differ"},
		{"cookie key required for oauth", func(c *Config) {
			c.Secrets.CookieKey = ""
			withDex(c, func(*OIDC) {})
		}, "secrets.cookie_key", "required"},
		{"cookie key required for passkeys", func(c *Config) {
			c.Secrets.CookieKey = ""
			passkeys(c)
		}, "secrets.cookie_key", "required"},
		{"token key required for oauth", func(c *Config) {
			c.Secrets.TokenKey = ""
			c.Providers.GitHub.ClientID, c.Providers.GitHub.ClientSecret = "id", "secret"
		}, "secrets.token_key", "required"},
		{"keys from keyring lists suffice", func(c *Config) {
			c.Secrets.CookieKey, c.Secrets.TokenKey = "", ""
			c.Secrets.CookieKeys, c.Secrets.TokenKeys = []string{key1}, []string{key2}
			withDex(c, func(*OIDC) {})
		}, "", ""},
		{"keys not required in dev mode", func(c *Config) {
			c.Dev = true
			c.Secrets.CookieKey, c.Secrets.TokenKey = "", ""
			withDex(c, func(*OIDC) {})
		}, "", ""},
		{"keys not required for passwords", func(c *Config) { c.Secrets.CookieKey, c.Secrets.TokenKey = "", "" }, "", ""},

		{"cookie name", func(c *Config) { c.Session.CookieName = "bad name" }, "session.cookie_name", "not a valid cookie name"},
		{"cookie name empty", func(c *Config) { c.Session.CookieName = "" }, "session.cookie_name", "required"},
		{"cookie domain outside public host", func(c *Config) { c.Session.CookieDomain = "example.com" }, "session.cookie_domain", "not example.com or a subdomain"},
		{"cookie domain parent", func(c *Config) {
			c.Server.PublicURL = "https://auth.example.com"
			c.Session.CookieDomain = ".example.com"
		}, "", ""},
		{"active period", func(c *Config) { c.Session.ActivePeriod = 0 }, "session.active_period", "positive"},
		{"cache size", func(c *Config) { c.Session.CacheSize = -1 }, "session.cache_size", "at least 0"},
		{"cache ttl", func(c *Config) { c.Session.CacheTTL = 0 }, "session.cache_ttl", "positive"},
		{"idle period", func(c *Config) { c.Session.IdlePeriod = -time.Hour }, "session.idle_period", "positive"},

		{"allowed origin with path", func(c *Config) { c.Redirect.AllowedOrigins = []string{"https://a.example.com/app"} }, "redirect.allowed_origins[0]", "no user, path"},
		{"allowed origin trailing slash", func(c *Config) {
			c.Redirect.AllowedOrigins = []string{"https://ok.example.com", "https://a.example.com/"}
		}, "redirect.allowed_origins[1]", "trailing slash"},
		{"allowed origin bare host", func(c *Config) { c.Redirect.AllowedOrigins = []string{"a.example.com"} }, "redirect.allowed_origins[0]", "not an origin"},
		{"allowed origin bad wildcard", func(c *Config) { c.Redirect.AllowedOrigins = []string{"https://a*.example.com"} }, "redirect.allowed_origins[0]", "wildcard"},
		{"redirect default protocol-relative", func(c *Config) { c.Redirect.Default = "//evil.example.com" }, "redirect.default", "leave"},
		{"redirect default foreign origin", func(c *Config) { c.Redirect.Default = "https://evil.example.com/" }, "redirect.default", "neither"},
		{"redirect default on public origin", func(c *Config) { c.Redirect.Default = "http://localhost:8080/account" }, "", ""},
		{"redirect default relative without slash", func(c *Config) { c.Redirect.Default = "account" }, "redirect.default", "must be a path"},
		{"redirect default empty", func(c *Config) { c.Redirect.Default = "" }, "redirect.default", "required"},

		{"github without secret", func(c *Config) { c.Providers.GitHub.ClientID = "id" }, "providers.github.client_secret", "required when client_id"},
		{"github secret without id", func(c *Config) { c.Providers.GitHub.ClientSecret = "s" }, "providers.github.client_id", "required when client_secret"},
		{"github auth_url", func(c *Config) { c.Providers.GitHub.AuthURL = "ghe.example.com/login" }, "providers.github.auth_url", "absolute"},
		{"github api_url", func(c *Config) { c.Providers.GitHub.APIURL = "file:///etc" }, "providers.github.api_url", "absolute"},
		{"github allow does not compile", func(c *Config) { c.Providers.GitHub.Allow = "identity.email.endsWith(" }, "providers.github.allow", "does not compile"},
		{"github allow not bool", func(c *Config) { c.Providers.GitHub.Allow = `"yes"` }, "providers.github.allow", "true or false"},
		{"github allow unknown variable", func(c *Config) { c.Providers.GitHub.Allow = "user.email == ''" }, "providers.github.allow", "undeclared reference to 'user'"},
		{"github attribute", func(c *Config) { c.Providers.GitHub.Attributes = map[string]string{"orgs": "identity.orgs +"} }, "providers.github.attributes.orgs", "does not compile"},
		{"github attribute empty", func(c *Config) { c.Providers.GitHub.Attributes = map[string]string{"orgs": " "} }, "providers.github.attributes.orgs", "empty expression"},
		{"google without secret", func(c *Config) { c.Providers.Google.ClientID = "id" }, "providers.google.client_secret", "required"},
		{"google issuer", func(c *Config) {
			c.Providers.Google.ClientID, c.Providers.Google.ClientSecret, c.Providers.Google.Issuer = "id", "s", ""
		}, "providers.google.issuer", "required"},
		{"google scopes", func(c *Config) {
			c.Providers.Google.ClientID, c.Providers.Google.ClientSecret = "id", "s"
			c.Providers.Google.Scopes = []string{"email"}
		}, "providers.google.scopes", "openid"},
		{"google allow", func(c *Config) { c.Providers.Google.Allow = "identity.hd ==" }, "providers.google.allow", "does not compile"},
		{"oidc bad name", func(c *Config) {
			c.Providers.OIDC = map[string]OIDC{"my_idp": {Issuer: "https://x", ClientID: "x", Scopes: []string{"openid"}, ClaimMapping: ClaimMapping{UserID: "sub"}}}
		}, "providers.oidc.my_idp", "lowercase letters"},
		{"oidc issuer missing", func(c *Config) { withDex(c, func(o *OIDC) { o.Issuer = "" }) }, "providers.oidc.dex.issuer", "required"},
		{"oidc issuer not a URL", func(c *Config) { withDex(c, func(o *OIDC) { o.Issuer = "dex.example.com" }) }, "providers.oidc.dex.issuer", "absolute"},
		{"oidc client_id", func(c *Config) { withDex(c, func(o *OIDC) { o.ClientID = "" }) }, "providers.oidc.dex.client_id", "required"},
		{"oidc public client", func(c *Config) { withDex(c, func(o *OIDC) { o.ClientSecret = "" }) }, "", ""},
		{"oidc scopes", func(c *Config) { withDex(c, func(o *OIDC) { o.Scopes = []string{"email"} }) }, "providers.oidc.dex.scopes", "openid"},
		{"oidc user_id claim", func(c *Config) { withDex(c, func(o *OIDC) { o.ClaimMapping.UserID = "" }) }, "providers.oidc.dex.claim_mapping.user_id", "required"},
		{"oidc allow", func(c *Config) { withDex(c, func(o *OIDC) { o.Allow = "identity.claims.groups.exists(g, )" }) }, "providers.oidc.dex.allow", "does not compile"},
		{"oidc attribute", func(c *Config) {
			withDex(c, func(o *OIDC) { o.Attributes = map[string]string{"groups": "nope.groups"} })
		}, "providers.oidc.dex.attributes.groups", "undeclared reference"},

		{"rp_id without origins", func(c *Config) { c.WebAuthn.RPID = "localhost" }, "webauthn.origins", "required when webauthn.rp_id"},
		{"origins without rp_id", func(c *Config) { c.WebAuthn.Origins = []string{"http://localhost:8080"} }, "webauthn.rp_id", "required when webauthn.origins"},
		{"rp_id with port", func(c *Config) { passkeys(c); c.WebAuthn.RPID = "localhost:8080" }, "webauthn.rp_id", "bare domain"},
		{"rp_id IP", func(c *Config) { passkeys(c); c.WebAuthn.RPID = "127.0.0.1" }, "webauthn.rp_id", "IP address"},
		{"origin outside rp_id", func(c *Config) {
			passkeys(c)
			c.WebAuthn.Origins = []string{"http://localhost:8080", "https://evil-localhost.com"}
		}, "webauthn.origins[1]", "not the rp_id localhost"},
		{"origin subdomain of rp_id", func(c *Config) {
			c.Server.PublicURL = "https://auth.example.com"
			c.WebAuthn.RPID = "example.com"
			c.WebAuthn.Origins = []string{"https://auth.example.com", "https://app.example.com:8443"}
		}, "", ""},
		{"origin is not an origin", func(c *Config) {
			passkeys(c)
			c.WebAuthn.Origins = append(c.WebAuthn.Origins, "http://localhost:3000/login")
		}, "webauthn.origins[1]", "not an origin"},
		{"origins miss public_url", func(c *Config) {
			passkeys(c)
			c.WebAuthn.Origins = []string{"http://localhost:3000"}
		}, "webauthn.origins", "public URL's origin http://localhost:8080"},
		{"user_verification", func(c *Config) { c.WebAuthn.UserVerification = "always" }, "webauthn.user_verification", `"always" is not one of`},
		{"rp_name", func(c *Config) { passkeys(c); c.WebAuthn.RPName = "" }, "webauthn.rp_name", "required"},

		{"email sender", func(c *Config) { c.Email.Sender = "sendgrid" }, "email.sender", "not one of"},
		{"smtp host", func(c *Config) { c.Email.Sender, c.Email.From = "smtp", "a@example.com" }, "email.smtp.host", "required"},
		{"smtp from", func(c *Config) { c.Email.Sender, c.Email.SMTP.Host = "smtp", "smtp.example.com" }, "email.from", "required"},
		{"smtp tls", func(c *Config) { c.Email.SMTP.TLS = "ssl" }, "email.smtp.tls", "not one of"},
		{"smtp port", func(c *Config) { c.Email.SMTP.Port = 0 }, "email.smtp.port", "between 1 and 65535"},
		{"email from", func(c *Config) { c.Email.From = "not an address" }, "email.from", "not an email address"},
		{"link_ttl", func(c *Config) { c.Email.LinkTTL = 0 }, "email.link_ttl", "positive"},

		{"password min_length", func(c *Config) { c.Password.MinLength = 6 }, "password.min_length", "at least 8"},
		{"limit max", func(c *Config) { c.Limits.LoginFailures.Max = 0 }, "limits.login_failures.max", "at least 1"},
		{"limit window", func(c *Config) { c.Limits.EmailSends.Window = 0 }, "limits.email_sends.window", "positive"},
		{"signup limit", func(c *Config) { c.Limits.Signups.Max = -1 }, "limits.signups.max", "at least 1"},

		{"claim does not compile", func(c *Config) { c.Claims = map[string]string{"role": "user.attributes.role ==="} }, "claims.role", "does not compile"},
		{"claim unknown variable", func(c *Config) { c.Claims = map[string]string{"role": "identity.role"} }, "claims.role", "undeclared reference to 'identity'"},
		// A claim is computed from user, keys and session; claims and
		// request are the access rules' (the broker could not start).
		{"claim reads claims", func(c *Config) { c.Claims = map[string]string{"admin": "claims.role == 'admin'"} }, "claims.admin", "undeclared reference to 'claims'"},
		{"claim reads request", func(c *Config) { c.Claims = map[string]string{"host": "request.host"} }, "claims.host", "undeclared reference to 'request'"},
		{"keys is a list", func(c *Config) { c.Claims = map[string]string{"k": "keys.provider"} }, "claims.k", "does not support field selection"},
		{"claim name", func(c *Config) { c.Claims = map[string]string{"is admin": "true"} }, "claims.is admin", "X-Auth-Claim"},
		{"claim empty", func(c *Config) { c.Claims = map[string]string{"role": ""} }, "claims.role", "empty expression"},
		{"access rule without match", func(c *Config) { c.Access = []AccessRule{{Allow: "true"}} }, "access[0]", "needs host or path_prefix"},
		{"access path_prefix", func(c *Config) {
			c.Access = []AccessRule{{Host: "a.example.com"}, {PathPrefix: "admin"}}
		}, "access[1].path_prefix", "must start with /"},
		{"access host with port", func(c *Config) { c.Access = []AccessRule{{Host: "a.example.com:443"}} }, "access[0].host", "bare host"},
		{"access allow", func(c *Config) { c.Access = []AccessRule{{Host: "a", Allow: "claims.role = 'admin'"}} }, "access[0].allow", "does not compile"},
		{"access allow not bool", func(c *Config) { c.Access = []AccessRule{{Host: "a", Allow: "1 + 2"}} }, "access[0].allow", "true or false"},

		{"log format", func(c *Config) { c.Log.Format = "xml" }, "log.format", `"xml" is not one of "json", "text"`},
		{"log level", func(c *Config) { c.Log.Level = "trace" }, "log.level", "not one of"},
		{"audit retention", func(c *Config) { c.Audit.Retention = 0 }, "audit.retention", "positive"},
		{"no sign-in method", func(c *Config) { c.Password.Enabled = false }, "providers", "no sign-in method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := validConfig()
			tt.mutate(c)
			err := c.Validate()
			if tt.path == "" {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				return
			}
			got, ok := problemAt(err, tt.path)
			if !ok {
				t.Fatalf("Validate() reported %q; want a problem at %s", paths(err), tt.path)
			}
			if !strings.Contains(got, tt.problem) {
				t.Errorf("problem at %s = %q; want it to contain %q", tt.path, got, tt.problem)
			}
			if n := len(fieldErrors(err)); n != 1 {
				t.Errorf("Validate() reported %d problems %q; want only the one at %s", n, paths(err), tt.path)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	c := validConfig()
	c.Server.Listen = "nope"
	c.Database.URL = "mysql://x"
	c.Log.Level = "loud"
	c.Claims = map[string]string{"role": "(("}
	c.Access = []AccessRule{{}}
	err := c.Validate()
	want := []string{"server.listen", "database.url", "claims.role", "access[0]", "log.level"}
	if got := paths(err); !slices.Equal(got, want) {
		t.Errorf("paths = %q; want %q", got, want)
	}
	lines := Explain(err)
	if len(lines) != len(want) {
		t.Fatalf("Explain() = %q; want %d lines", lines, len(want))
	}
	for i, line := range lines {
		if !strings.HasPrefix(line, want[i]+": ") {
			t.Errorf("Explain()[%d] = %q; want it to start with %q", i, line, want[i]+": ")
		}
	}
}

func TestReservedOIDCNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"github", "google", "email", "password", "webauthn"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := load(t, "database: {url: 'sqlite::memory:'}\nsecrets: {cookie_key: "+key1+", token_key: "+key2+"}\n"+
				"providers:\n  oidc:\n    "+name+": {issuer: https://idp.example.com, client_id: x}\n", nil)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			got, ok := problemAt(err, "providers.oidc."+name)
			if !ok || !strings.Contains(got, "reserved") {
				t.Errorf("problem at providers.oidc.%s = %q; want it reserved (err: %v)", name, got, err)
			}
		})
	}
}

func TestBadCELNamesClaimPath(t *testing.T) {
	t.Parallel()
	c, err := load(t, "database: {url: 'sqlite::memory:'}\npassword: {enabled: true}\nclaims:\n  role: user.attributes.role ==\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	lines := Explain(err)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "claims.role: CEL expression does not compile: 1:") {
		t.Errorf("Explain(Validate()) = %q; want one line about claims.role", lines)
	}
}

func TestDev(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	c1, err := Dev(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c1.Validate(); err != nil {
		t.Fatalf("Dev config: Validate() = %v", err)
	}
	tests := []struct {
		key       string
		got, want any
	}{
		{"dev", c1.Dev, true},
		{"database.url", c1.Database.URL, "sqlite://" + filepath.ToSlash(filepath.Join(dir, "broker.db"))},
		{"database.auto_migrate", c1.Database.AutoMigrate, true},
		{"server.public_url", c1.Server.PublicURL, "http://localhost:8080"},
		{"webauthn.rp_id", c1.WebAuthn.RPID, "localhost"},
		{"webauthn.origins", c1.WebAuthn.Origins, []string{"http://localhost:8080"}},
		{"password.enabled", c1.Password.Enabled, true},
		{"email.sender", c1.Email.Sender, "log"},
		{"log.format", c1.Log.Format, "text"},
		{"len(CookieKeys)", len(c1.CookieKeys), 1},
		{"len(TokenKeys)", len(c1.TokenKeys), 1},
		{"source", c1.Source, ""},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %v; want %v", tt.key, tt.got, tt.want)
		}
	}
	if bytes.Equal(c1.CookieKeys[0], c1.TokenKeys[0]) {
		t.Errorf("cookie key and token key are equal")
	}
	fi, err := os.Stat(filepath.Join(dir, DevSecretsFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("secrets file mode = %o; want 600", got)
	}

	c2, err := Dev(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c1.CookieKeys, c2.CookieKeys) || !reflect.DeepEqual(c1.TokenKeys, c2.TokenKeys) {
		t.Errorf("second Dev() generated new keys; want the stored ones reused")
	}
	if c3, err := Dev(t.TempDir(), nil); err != nil || bytes.Equal(c3.CookieKeys[0], c1.CookieKeys[0]) {
		t.Errorf("Dev() in another directory: err %v, same key %v; want fresh keys", err, err == nil)
	}
}

func TestDevEnvOverrides(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, err := Dev(dir, env(map[string]string{
		"BROKER_SERVER_LISTEN":     "127.0.0.1:9000",
		"BROKER_DATABASE_URL":      "postgres://u@db/broker",
		"BROKER_SECRETS_TOKEN_KEY": key2,
		"BROKER_LOG_LEVEL":         "debug",
	}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key       string
		got, want any
	}{
		{"server.listen", c.Server.Listen, "127.0.0.1:9000"},
		{"server.public_url follows the port", c.Server.PublicURL, "http://localhost:9000"},
		{"webauthn.origins follow", c.WebAuthn.Origins, []string{"http://localhost:9000"}},
		{"database.url", c.Database.URL, "postgres://u@db/broker"},
		{"TokenKeys", c.TokenKeys, [][]byte{raw2}},
		{"log.level", c.Log.Level, "debug"},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %v; want %v", tt.key, tt.got, tt.want)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}

	c, err = Dev(dir, env(map[string]string{"BROKER_SERVER_PUBLIC_URL": "https://broker.example.com"}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.WebAuthn.RPID, "broker.example.com"; got != want {
		t.Errorf("webauthn.rp_id = %q; want %q", got, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
}

func TestDevCorruptSecrets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir, DevSecretsFile, `{"cookie_key": "short", "token_key": "short"}`)
	_, err := Dev(dir, nil)
	if err == nil || !strings.Contains(err.Error(), DevSecretsFile) {
		t.Errorf("Dev() = %v; want an error naming %s", err, DevSecretsFile)
	}
}

func TestExampleConfig(t *testing.T) {
	t.Parallel()
	path := filepath.Join("..", "..", "config.example.yaml")
	c, err := Load(path, nil)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate(): %v", err)
	}
	if got, want := c.ProvidersEnabled(), []string{"github", "google", "dex"}; !slices.Equal(got, want) {
		t.Errorf("ProvidersEnabled() = %v; want %v", got, want)
	}

	// Every key of the Config type appears in the example.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]any
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	var missing []string
	var walk func(prefix string, tp reflect.Type, node any)
	walk = func(prefix string, tp reflect.Type, node any) {
		m, ok := node.(map[string]any)
		if !ok {
			missing = append(missing, prefix+" (not a mapping)")
			return
		}
		for i := range tp.NumField() {
			f := tp.Field(i)
			tag := f.Tag.Get("mapstructure")
			if tag == "" || tag == "-" {
				continue
			}
			key := joinKey(prefix, tag)
			v, ok := m[tag]
			switch {
			case !ok:
				missing = append(missing, key)
			case f.Type.Kind() == reflect.Struct && f.Type != durationType:
				walk(key, f.Type, v)
			case f.Type == reflect.TypeFor[map[string]OIDC]():
				inst, _ := v.(map[string]any)
				for name, iv := range inst {
					walk(key+"."+name, reflect.TypeFor[OIDC](), iv)
				}
				if len(inst) == 0 {
					missing = append(missing, key+".<name>")
				}
			case f.Type == reflect.TypeFor[[]AccessRule]():
				rules, _ := v.([]any)
				if len(rules) == 0 {
					missing = append(missing, key+"[0]")
				}
				for i, r := range rules {
					walk(key+"["+string(rune('0'+i))+"]", reflect.TypeFor[AccessRule](), r)
				}
			}
		}
	}
	walk("", reflect.TypeFor[Config](), file)
	if len(missing) > 0 {
		t.Errorf("config.example.yaml lacks keys: %s", strings.Join(missing, ", "))
	}
}

func TestExplain(t *testing.T) {
	t.Parallel()
	err := errors.Join(
		&FieldError{Path: "a.b", Problem: "bad"},
		&LoadError{File: "x.yaml", Err: errors.Join(&FieldError{Path: "c", Problem: "worse"}, errors.New("two\nlines"))},
		&LoadError{Err: &FieldError{Path: "d", Problem: "dev"}},
	)
	want := []string{"a.b: bad", "config file x.yaml: c: worse", "config file x.yaml: two", "config file x.yaml: lines", "development config: d: dev"}
	if got := Explain(err); !slices.Equal(got, want) {
		t.Errorf("Explain() = %q; want %q", got, want)
	}
	if got := Explain(nil); got != nil {
		t.Errorf("Explain(nil) = %q; want nil", got)
	}
}

func TestAllowsOrigin(t *testing.T) {
	t.Parallel()
	r := Redirect{AllowedOrigins: []string{"https://app.example.com", "https://*.example.org", "http://localhost:3000"}}
	tests := []struct {
		origin string
		want   bool
	}{
		{"https://app.example.com", true},
		{"HTTPS://APP.EXAMPLE.COM", true},
		{"http://app.example.com", false},
		{"https://app.example.com:8443", false},
		{"https://a.example.org", true},
		{"https://a.b.example.org", true},
		{"https://example.org", false},
		{"https://evilexample.org", false},
		{"https://a.example.org:444", false},
		{"https://a.example.org.evil.com", false},
		{"http://localhost:3000", true},
		{"http://localhost:3001", false},
	}
	for _, tt := range tests {
		if got := r.AllowsOrigin(tt.origin); got != tt.want {
			t.Errorf("AllowsOrigin(%q) = %v; want %v", tt.origin, got, tt.want)
		}
	}
}

func TestEnabled(t *testing.T) {
	t.Parallel()
	c := Defaults()
	if got := c.ProvidersEnabled(); len(got) != 0 {
		t.Errorf("ProvidersEnabled() = %v; want none by default", got)
	}
	if c.PasswordEnabled() || c.EmailEnabled() || c.WebAuthnEnabled() {
		t.Errorf("a default config has a sign-in method on")
	}
	c.Providers.Google.ClientID = "g"
	c.Providers.OIDC = map[string]OIDC{"zeta": {}, "alpha": {}}
	if got, want := c.ProvidersEnabled(), []string{"google", "alpha", "zeta"}; !slices.Equal(got, want) {
		t.Errorf("ProvidersEnabled() = %v; want %v", got, want)
	}
}
