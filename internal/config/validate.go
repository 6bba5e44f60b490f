package config

import (
	"errors"
	"fmt"
	"github.com/brokerauth/broker/internal/rules"
	"net"
	"net/http"
	"net/mail"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FieldError is one configuration problem: the key's path as written in the
// file (providers.oidc.dex.issuer, access[0].allow) and what is wrong with it.
type FieldError struct {
	Path    string
	Problem string
}

// Error returns "<path>: <problem>".
func (e *FieldError) Error() string { return e.Path + ": " + e.Problem }

// Explain turns an error from [Load], [Dev] or [Config.Validate] into one line
// per problem, in order, for `broker check-config`. Problems found while
// loading a file name the file.
func Explain(err error) []string {
	var lines []string
	var walk func(err error, prefix string)
	walk = func(err error, prefix string) {
		switch e := err.(type) {
		case nil:
		case *LoadError:
			walk(e.Err, prefix+e.prefix())
		case *FieldError:
			lines = append(lines, prefix+e.Error())
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner, prefix)
			}
		default:
			for line := range strings.SplitSeq(err.Error(), "\n") {
				lines = append(lines, prefix+line)
			}
		}
	}
	walk(err, "")
	return lines
}

var (
	oidcName  = regexp.MustCompile(`^[a-z0-9-]+$`)
	claimName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	reserved  = []string{"github", "google", "email", "password", "webauthn"}
)

// checker collects problems.
type checker struct {
	errs []error
}

func (ck *checker) add(path, format string, args ...any) {
	ck.errs = append(ck.errs, &FieldError{Path: path, Problem: fmt.Sprintf(format, args...)})
}

// Validate reports every problem in c, joined with [errors.Join], each a
// [*FieldError] naming the key. It has no side effects and does no I/O (the
// _file secrets were read by [Load]); CEL expressions are compiled, not run.
func (c *Config) Validate() error {
	ck := &checker{}
	c.checkServer(ck)
	c.checkDatabase(ck)
	c.checkSecrets(ck)
	c.checkSession(ck)
	c.checkRedirect(ck)
	c.checkProviders(ck)
	c.checkWebAuthn(ck)
	c.checkEmail(ck)
	ck.atLeast("password.min_length", c.Password.MinLength, 8)
	ck.limit("limits.login_failures", c.Limits.LoginFailures)
	ck.limit("limits.email_sends", c.Limits.EmailSends)
	ck.limit("limits.signups", c.Limits.Signups)
	c.checkClaims(ck)
	c.checkAccess(ck)
	ck.oneOf("log.format", c.Log.Format, "json", "text")
	ck.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	ck.positive("audit.retention", c.Audit.Retention)
	if len(c.ProvidersEnabled()) == 0 && !c.WebAuthnEnabled() && !c.EmailEnabled() && !c.PasswordEnabled() {
		ck.add("providers", "no sign-in method is on: configure a provider (providers.github.client_id, providers.google.client_id, providers.oidc.<name>), passkeys (webauthn.rp_id), email links (email.sender) or passwords (password.enabled)")
	}
	return errors.Join(ck.errs...)
}

func (c *Config) checkServer(ck *checker) {
	s := c.Server
	ck.hostPort("server.listen", s.Listen)
	if ck.httpURL("server.public_url", s.PublicURL, true) {
		u, _ := url.Parse(s.PublicURL)
		switch {
		case u.User != nil || u.RawQuery != "" || u.Fragment != "":
			ck.add("server.public_url", "must be scheme://host[:port] without user, query or fragment")
		case u.Path != "" && u.Path != "/":
			ck.add("server.public_url", "must not have a path: the broker serves its routes at the root of its host")
		}
	}
	for i, p := range s.TrustedProxies {
		if _, err := parseProxy(strings.TrimSpace(p)); err != nil {
			ck.add(fmt.Sprintf("server.trusted_proxies[%d]", i), "%q is not a CIDR (10.0.0.0/8) or IP address", p)
		}
	}
	if s.MetricsListen != "" {
		ck.hostPort("server.metrics_listen", s.MetricsListen)
		if s.MetricsListen == s.Listen {
			ck.add("server.metrics_listen", "must differ from server.listen (leave it empty to serve /metrics on the main listener to loopback peers)")
		}
	}
	ck.positive("server.provider_timeout", s.ProviderTimeout)
	ck.positive("server.shutdown_grace", s.ShutdownGrace)
	if s.MaxBodyBytes <= 0 {
		ck.add("server.max_body_bytes", "must be positive, got %d", s.MaxBodyBytes)
	}
}

func (c *Config) checkDatabase(ck *checker) {
	path := "database.url"
	if c.Database.URLFile != "" {
		path = "database.url_file"
	}
	raw := c.Database.URL
	if raw == "" {
		ck.add("database.url", "required: postgres://user@host:5432/db, sqlite:broker.db, sqlite:///abs/path/broker.db or sqlite::memory:")
		return
	}
	scheme, rest, ok := strings.Cut(raw, ":")
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		if _, err := url.Parse(raw); err != nil {
			// The URL may hold a password: never echo it.
			ck.add(path, "not a valid PostgreSQL URL")
		}
	case "sqlite":
		if strings.TrimPrefix(rest, "//") == "" {
			ck.add(path, "a SQLite URL needs a path: sqlite:broker.db, sqlite:///abs/path/broker.db or sqlite::memory:")
		}
	default:
		if !ok {
			scheme = ""
		}
		ck.add(path, "scheme %q is not postgres, postgresql or sqlite", scheme)
	}
}

func (c *Config) checkSecrets(ck *checker) {
	s := c.Secrets
	oauth := len(c.ProvidersEnabled()) > 0
	cookie := ck.keys("cookie_key", s.CookieKey, s.CookieKeyFile, "cookie_keys", s.CookieKeys, s.CookieKeysFile)
	token := ck.keys("token_key", s.TokenKey, s.TokenKeyFile, "token_keys", s.TokenKeys, s.TokenKeysFile)
	if c.Dev {
		return
	}
	if cookie == 0 && (oauth || c.WebAuthnEnabled()) {
		ck.add("secrets.cookie_key", "required when an OAuth/OIDC provider or passkeys are on, to seal flow-state cookies (base64 of 32 bytes: openssl rand -base64 32; or set cookie_key_file or cookie_keys)")
	}
	if token == 0 && oauth {
		ck.add("secrets.token_key", "required when an OAuth/OIDC provider is on, to encrypt provider tokens at rest (base64 of 32 bytes: openssl rand -base64 32; or set token_key_file or token_keys)")
	}
	if s.CookieKey != "" && s.CookieKey == s.TokenKey {
		ck.add("secrets.token_key", "must differ from secrets.cookie_key: one key per purpose")
	}
}

// keys checks one keyring's entries and returns how many there are.
func (ck *checker) keys(one, value, valueFile, many string, values []string, valuesFile string) int {
	n := 0
	if value != "" {
		n++
		if _, err := decodeKey(value); err != nil {
			path := "secrets." + one
			if valueFile != "" {
				path += "_file"
			}
			ck.add(path, "%v", err)
		}
	}
	for i, v := range values {
		n++
		path := fmt.Sprintf("secrets.%s[%d]", many, i)
		if valuesFile != "" {
			path = fmt.Sprintf("secrets.%s_file (key %d)", many, i+1)
		}
		if _, err := decodeKey(v); err != nil {
			ck.add(path, "%v", err)
		}
	}
	return n
}

func (c *Config) checkSession(ck *checker) {
	s := c.Session
	if s.CookieName == "" {
		ck.add("session.cookie_name", "required")
	} else if err := (&http.Cookie{Name: s.CookieName, Value: "x"}).Valid(); err != nil {
		ck.add("session.cookie_name", "%q is not a valid cookie name", s.CookieName)
	}
	if d := strings.TrimPrefix(s.CookieDomain, "."); d != "" {
		if strings.ContainsAny(d, ":/ ") {
			ck.add("session.cookie_domain", "must be a bare domain such as example.com")
		} else if u, err := url.Parse(c.Server.PublicURL); err == nil && u.Host != "" && !domainWithin(u.Hostname(), d) {
			ck.add("session.cookie_domain", "the public URL's host %s is not %s or a subdomain of it, so browsers would refuse the cookie", u.Hostname(), d)
		}
	}
	ck.positive("session.active_period", s.ActivePeriod)
	ck.positive("session.idle_period", s.IdlePeriod)
	ck.atLeast("session.cache_size", s.CacheSize, 0)
	ck.positive("session.cache_ttl", s.CacheTTL)
}

func (c *Config) checkRedirect(ck *checker) {
	r := c.Redirect
	for i, o := range r.AllowedOrigins {
		ck.origin(fmt.Sprintf("redirect.allowed_origins[%d]", i), o, true)
	}
	d := r.Default
	switch {
	case d == "":
		ck.add("redirect.default", "required: a path on the broker such as /, or a URL on an allowed origin")
	case strings.HasPrefix(d, "/"):
		if strings.HasPrefix(d, "//") || strings.HasPrefix(d, `/\`) {
			ck.add("redirect.default", "%q would leave the broker's host: write a path such as /account, or a full URL on an allowed origin", d)
		}
	default:
		u, err := url.Parse(d)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			ck.add("redirect.default", "must be a path starting with / or an absolute http(s) URL")
			return
		}
		o := u.Scheme + "://" + u.Host
		if !r.AllowsOrigin(o) && !strings.EqualFold(o, publicOrigin(c.Server.PublicURL)) {
			ck.add("redirect.default", "origin %s is neither the public URL's nor in redirect.allowed_origins", o)
		}
	}
}

func (c *Config) checkProviders(ck *checker) {
	gh := c.Providers.GitHub
	const ghp = "providers.github"
	ck.clientPair(ghp, gh.ClientID, gh.ClientSecret)
	ck.httpURL(ghp+".auth_url", gh.AuthURL, false)
	ck.httpURL(ghp+".token_url", gh.TokenURL, false)
	ck.httpURL(ghp+".api_url", gh.APIURL, false)
	ck.identityExprs(ghp, gh.Allow, gh.Attributes)

	g := c.Providers.Google
	const gp = "providers.google"
	ck.clientPair(gp, g.ClientID, g.ClientSecret)
	ck.httpURL(gp+".issuer", g.Issuer, g.ClientID != "")
	if g.ClientID != "" {
		ck.scopesOpenID(gp+".scopes", g.Scopes)
	}
	ck.identityExprs(gp, g.Allow, g.Attributes)

	for _, name := range sortedNames(c.Providers.OIDC) {
		p := c.Providers.OIDC[name]
		path := "providers.oidc." + name
		switch {
		case slices.Contains(reserved, name):
			ck.add(path, "%q is reserved (github, google, email, password and webauthn are built in); choose another instance name", name)
		case !oidcName.MatchString(name):
			ck.add(path, "instance name %q must be lowercase letters, digits and hyphens", name)
		}
		ck.httpURL(path+".issuer", p.Issuer, true)
		if p.ClientID == "" {
			ck.add(path+".client_id", "required")
		}
		ck.scopesOpenID(path+".scopes", p.Scopes)
		if p.ClaimMapping.UserID == "" {
			ck.add(path+".claim_mapping.user_id", "required (the claim holding a stable user id, usually sub)")
		}
		ck.identityExprs(path, p.Allow, p.Attributes)
	}
}

// clientPair checks an OAuth client: on when client_id is set, which then
// needs a client_secret.
func (ck *checker) clientPair(prefix, id, secret string) {
	switch {
	case id != "" && secret == "":
		ck.add(prefix+".client_secret", "required when client_id is set (or set client_secret_file)")
	case id == "" && secret != "":
		ck.add(prefix+".client_id", "required when client_secret is set (the provider is on when client_id is set)")
	}
}

func (ck *checker) scopesOpenID(path string, scopes []string) {
	if !slices.Contains(scopes, "openid") {
		ck.add(path, "must include openid")
	}
}

func (c *Config) checkWebAuthn(ck *checker) {
	w := c.WebAuthn
	ck.oneOf("webauthn.user_verification", w.UserVerification, "required", "preferred", "discouraged")
	if w.RPID == "" {
		if len(w.Origins) > 0 {
			ck.add("webauthn.rp_id", "required when webauthn.origins is set")
		}
		return
	}
	rp := strings.ToLower(w.RPID)
	if strings.ContainsAny(rp, ":/ ") {
		ck.add("webauthn.rp_id", "must be a bare domain such as example.com (no scheme, port or path)")
		return
	}
	if _, err := netip.ParseAddr(rp); err == nil {
		ck.add("webauthn.rp_id", "must be a domain name: browsers refuse an IP address as relying party id")
		return
	}
	if w.RPName == "" {
		ck.add("webauthn.rp_name", "required when passkeys are on")
	}
	if len(w.Origins) == 0 {
		ck.add("webauthn.origins", "required when webauthn.rp_id is set, e.g. [%s]", publicOrigin(c.Server.PublicURL))
		return
	}
	for i, o := range w.Origins {
		path := fmt.Sprintf("webauthn.origins[%d]", i)
		if !ck.origin(path, o, false) {
			continue
		}
		u, _ := url.Parse(o)
		if !domainWithin(strings.ToLower(u.Hostname()), rp) {
			ck.add(path, "host %s is not the rp_id %s or a subdomain of it", u.Hostname(), rp)
		}
	}
	if pub := publicOrigin(c.Server.PublicURL); pub != "" && !slices.ContainsFunc(w.Origins, func(o string) bool { return strings.EqualFold(o, pub) }) {
		ck.add("webauthn.origins", "must include the public URL's origin %s, where the login page runs passkey ceremonies", pub)
	}
}

func (c *Config) checkEmail(ck *checker) {
	e := c.Email
	ck.oneOf("email.sender", e.Sender, "", "log", "smtp")
	ck.positive("email.link_ttl", e.LinkTTL)
	if e.From != "" {
		if _, err := mail.ParseAddress(e.From); err != nil {
			ck.add("email.from", "%q is not an email address (Name <login@example.com>)", e.From)
		}
	}
	ck.oneOf("email.smtp.tls", e.SMTP.TLS, "none", "starttls", "tls")
	if e.SMTP.Port < 1 || e.SMTP.Port > 65535 {
		ck.add("email.smtp.port", "must be between 1 and 65535, got %d", e.SMTP.Port)
	}
	if e.Sender == "smtp" {
		if e.SMTP.Host == "" {
			ck.add("email.smtp.host", "required when email.sender is smtp")
		}
		if e.From == "" {
			ck.add("email.from", "required when email.sender is smtp")
		}
	}
}

func (c *Config) checkClaims(ck *checker) {
	for _, name := range sortedNames(c.Claims) {
		path := "claims." + name
		if !claimName.MatchString(name) {
			ck.add(path, "claim name must be letters, digits, _ and - (it becomes the header X-Auth-Claim-<Name>)")
		}
		ck.expr(path, c.Claims[name], rules.KindClaims)
	}
}

func (c *Config) checkAccess(ck *checker) {
	for i, r := range c.Access {
		path := fmt.Sprintf("access[%d]", i)
		if r.Host == "" && r.PathPrefix == "" {
			ck.add(path, "needs host or path_prefix (or both)")
		}
		if r.Host != "" && strings.ContainsAny(r.Host, ":/ ") {
			ck.add(path+".host", "must be a bare host name such as app.example.com (matched without scheme or port)")
		}
		if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
			ck.add(path+".path_prefix", "must start with /")
		}
		if r.Allow != "" {
			ck.expr(path+".allow", r.Allow, rules.KindAccess)
		}
	}
}

func (ck *checker) identityExprs(prefix, allow string, attributes map[string]string) {
	if allow != "" {
		ck.expr(prefix+".allow", allow, rules.KindIdentity)
	}
	for _, name := range sortedNames(attributes) {
		ck.expr(prefix+".attributes."+name, attributes[name], rules.KindIdentityAttribute)
	}
}

func (ck *checker) hostPort(path, s string) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		ck.add(path, "%q is not host:port (127.0.0.1:8080, :8080)", s)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		ck.add(path, "port %q is not a number from 0 to 65535", port)
	}
	if strings.ContainsAny(host, "/ ") {
		ck.add(path, "host %q is not a host name or IP address", host)
	}
}

// httpURL checks an absolute http(s) URL; empty is fine unless required. It
// reports whether s is such a URL.
func (ck *checker) httpURL(path, s string, required bool) bool {
	if s == "" {
		if required {
			ck.add(path, "required")
		}
		return false
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		ck.add(path, "%q is not an absolute http(s) URL", s)
		return false
	}
	return true
}

// origin checks scheme://host[:port]; wildcard allows a leading "*." label.
// It reports whether s is an origin.
func (ck *checker) origin(path, s string, wildcard bool) bool {
	u, err := url.Parse(s)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "":
		ck.add(path, "%q is not an origin (scheme://host[:port], e.g. https://app.example.com)", s)
	case u.Path == "/" && u.RawQuery == "" && u.Fragment == "":
		ck.add(path, "%q is not an origin: drop the trailing slash", s)
	case u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		ck.add(path, "%q is not an origin: an origin has no user, path, query or fragment", s)
	case strings.Contains(u.Hostname(), "*") && (!wildcard || !strings.HasPrefix(u.Hostname(), "*.") || strings.Count(u.Hostname(), "*") > 1):
		if wildcard {
			ck.add(path, "%q: a wildcard must be a whole first label, as in https://*.example.com", s)
		} else {
			ck.add(path, "%q: wildcards are not allowed here", s)
		}
	default:
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				ck.add(path, "%q: port must be between 1 and 65535", s)
				return false
			}
		}
		return true
	}
	return false
}

func (ck *checker) oneOf(path, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		quoted := make([]string, len(allowed))
		for i, a := range allowed {
			quoted[i] = strconv.Quote(a)
		}
		ck.add(path, "%q is not one of %s", v, strings.Join(quoted, ", "))
	}
}

func (ck *checker) positive(path string, d time.Duration) {
	if d <= 0 {
		ck.add(path, "must be a positive duration, got %s", d)
	}
}

func (ck *checker) atLeast(path string, n, least int) {
	if n < least {
		ck.add(path, "must be at least %d, got %d", least, n)
	}
}

func (ck *checker) limit(path string, l Limit) {
	ck.atLeast(path+".max", l.Max, 1)
	ck.positive(path+".window", l.Window)
}

// domainWithin reports whether host is domain or a subdomain of it, on whole
// labels.
func domainWithin(host, domain string) bool {
	host, domain = strings.ToLower(host), strings.ToLower(domain)
	return host == domain || strings.HasSuffix(host, "."+domain)
}

// publicOrigin returns scheme://host[:port] of the public URL, or "".
func publicOrigin(publicURL string) string {
	u, err := url.Parse(publicURL)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}
