package auth

import (
	"net/http"
	"strings"
	"time"
)

// CookieName returns the session cookie's name.
func (a *Auth) CookieName() string { return a.opts.Cookie.Name }

// CreateSessionCookie returns the cookie that carries session s: HttpOnly,
// SameSite=Lax, Path=/, Secure when configured, expiring with the session's
// idle period. For a nil session it returns a blank cookie that makes the
// browser drop the session cookie.
func (a *Auth) CreateSessionCookie(s *Session) *http.Cookie {
	c := &http.Cookie{
		Name:     a.opts.Cookie.Name,
		Path:     a.opts.Cookie.Path,
		Domain:   a.opts.Cookie.Domain,
		Secure:   a.opts.Cookie.Secure,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	}
	if s == nil || s.Token == "" {
		c.Value = ""
		c.Expires = time.Unix(0, 0)
		c.MaxAge = -1
		return c
	}
	c.Value = s.Token
	c.Expires = s.IdleExpires.UTC()
	return c
}

// ReadSessionCookie returns the session token from a Cookie request header,
// without validating it. ok is false when there is no non-empty session
// cookie. Malformed cookie pairs are skipped, never fatal.
func (a *Auth) ReadSessionCookie(cookieHeader string) (token string, ok bool) {
	name := a.opts.Cookie.Name
	for part := range strings.SplitSeq(cookieHeader, ";") {
		part = strings.TrimSpace(part)
		k, v, found := strings.Cut(part, "=")
		if !found || strings.TrimSpace(k) != name {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		if v == "" {
			continue
		}
		return v, true
	}
	return "", false
}

// ReadBearerToken returns the token of an "Authorization: Bearer <token>"
// header (scheme case-insensitive), without validating it.
func ReadBearerToken(authorizationHeader string) (token string, ok bool) {
	scheme, rest, found := strings.Cut(strings.TrimSpace(authorizationHeader), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(rest)
	if token == "" || strings.ContainsAny(token, " \t") {
		return "", false
	}
	return token, true
}

// ReadBearerToken is [ReadBearerToken] as a method, for Lucia's API shape.
func (a *Auth) ReadBearerToken(authorizationHeader string) (string, bool) {
	return ReadBearerToken(authorizationHeader)
}
