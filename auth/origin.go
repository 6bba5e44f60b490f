package auth

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// originPolicy decides which Origin header values are trusted.
type originPolicy struct {
	self       string              // the broker's origin, "" = the request's host
	selfScheme string              // scheme of self
	selfHost   string              // host of self without port, lower-case
	selfPort   string              // port of self ("" when default)
	exact      map[string]struct{} // allowed origins, normalized
	subdomains []string            // allowed labels; "*" = any
	patterns   []originPattern     // wildcard origins
}

// originPattern is "scheme://*.base[:port]".
type originPattern struct{ scheme, base, port string }

func (p originPattern) match(o *url.URL) bool {
	return o.Scheme == p.scheme && o.Port() == p.port && strings.HasSuffix(o.Hostname(), "."+p.base)
}

func newOriginPolicy(self string, allowed, subdomains, patterns []string) (originPolicy, error) {
	p := originPolicy{exact: map[string]struct{}{}, subdomains: subdomains}
	for _, pat := range patterns {
		scheme, rest, ok := strings.Cut(pat, "://*.")
		if !ok || (scheme != "http" && scheme != "https") {
			return p, fmt.Errorf("auth: origin pattern %q: want scheme://*.host[:port]", pat)
		}
		n, err := normalizeOrigin(scheme + "://" + rest)
		if err != nil {
			return p, fmt.Errorf("auth: origin pattern %q: %w", pat, err)
		}
		u, _ := url.Parse(n)
		p.patterns = append(p.patterns, originPattern{scheme: scheme, base: u.Hostname(), port: u.Port()})
	}
	if self != "" {
		n, err := normalizeOrigin(self)
		if err != nil {
			return p, fmt.Errorf("auth: origin %q: %w", self, err)
		}
		p.self = n
		u, _ := url.Parse(n)
		p.selfScheme, p.selfHost, p.selfPort = u.Scheme, u.Hostname(), u.Port()
	}
	for _, o := range allowed {
		n, err := normalizeOrigin(o)
		if err != nil {
			return p, fmt.Errorf("auth: allowed origin %q: %w", o, err)
		}
		p.exact[n] = struct{}{}
	}
	return p, nil
}

// normalizeOrigin returns scheme://host[:port] in lower case, dropping a
// default port, or an error when s is not an origin.
func normalizeOrigin(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("not an http(s) origin")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host = net.JoinHostPort(strings.Trim(host, "[]"), port)
	}
	return u.Scheme + "://" + host, nil
}

// trusted reports whether origin may make state-changing requests, with
// requestHost the Host the request was sent to (used when no own origin is
// configured).
func (p originPolicy) trusted(origin string, requestHost string, requestTLS bool) bool {
	n, err := normalizeOrigin(origin)
	if err != nil {
		return false
	}
	if _, ok := p.exact[n]; ok {
		return true
	}
	if len(p.patterns) > 0 {
		u, _ := url.Parse(n)
		for _, pat := range p.patterns {
			if pat.match(u) {
				return true
			}
		}
	}
	self, scheme, host, port := p.self, p.selfScheme, p.selfHost, p.selfPort
	if self == "" {
		scheme = "http"
		if requestTLS {
			scheme = "https"
		}
		var err error
		self, err = normalizeOrigin(scheme + "://" + requestHost)
		if err != nil {
			return false
		}
		u, _ := url.Parse(self)
		host, port = u.Hostname(), u.Port()
	}
	if n == self {
		return true
	}
	if len(p.subdomains) == 0 {
		return false
	}
	u, _ := url.Parse(n)
	if u.Scheme != scheme || u.Port() != port {
		return false
	}
	h := u.Hostname()
	// Whole labels only: "evilexample.com" is not a subdomain of
	// "example.com", and "example.com.evil.com" is not either.
	if !strings.HasSuffix(h, "."+host) {
		return false
	}
	label := strings.TrimSuffix(h, "."+host)
	for _, s := range p.subdomains {
		if s == "*" || strings.EqualFold(s, label) {
			return true
		}
	}
	return false
}

// ValidateRequestOrigin is Lucia's CSRF check: for every method but GET,
// HEAD and OPTIONS the Origin header must be the broker's own origin, an
// allowed origin or an allowed subdomain of the broker's host; otherwise it
// returns ErrInvalidRequest. A missing Origin header on such a request is
// refused too.
func (a *Auth) ValidateRequestOrigin(r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	origin := r.Header.Get("Origin")
	if origin == "" || !a.origins.trusted(origin, r.Host, r.TLS != nil) {
		return fmt.Errorf("origin %q not trusted: %w", origin, ErrInvalidRequest)
	}
	return nil
}

// OriginTrusted reports whether origin is the broker's own origin, an
// allowed origin or an allowed subdomain (for CORS decisions).
func (a *Auth) OriginTrusted(origin string) bool {
	return a.origins.self != "" && a.origins.trusted(origin, "", false)
}

// CrossOriginProtection returns Go's cross-site request protection trusting
// the broker's origin and the allowed origins: requests without Origin and
// Sec-Fetch-Site (non-browser clients) pass; a cross-site browser request
// with an unsafe method is refused. Allowed subdomains are honoured too.
// Use [Auth.CheckCrossOrigin] or [Auth.ProtectCrossOrigin] to apply it.
func (a *Auth) CrossOriginProtection() *http.CrossOriginProtection {
	c := http.NewCrossOriginProtection()
	if a.origins.self != "" {
		_ = c.AddTrustedOrigin(a.origins.self)
	}
	for o := range a.origins.exact {
		_ = c.AddTrustedOrigin(o)
	}
	return c
}

// CheckCrossOrigin applies the Auth's [http.CrossOriginProtection] plus the allowed subdomains to r, returning ErrInvalidRequest when
// r is a cross-site browser request that must be refused.
func (a *Auth) CheckCrossOrigin(r *http.Request) error {
	if o := r.Header.Get("Origin"); o != "" && a.origins.trusted(o, r.Host, r.TLS != nil) {
		return nil
	}
	if err := a.cop.Check(r); err != nil {
		return fmt.Errorf("%v: %w", err, ErrInvalidRequest)
	}
	return nil
}
