package server

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/rules"
)

// Forward-auth answer headers.
const (
	HeaderUserID = "X-Auth-User-Id"
	HeaderEmail  = "X-Auth-Email"
)

// handleForwardAuth answers nginx auth_request, Traefik forwardAuth and
// Caddy forward_auth: 200 with identity headers, 401 (or, with
// ?redirect=1, 302 to the login page) for anonymous requests, 403 when an
// access rule refuses the user, 503 when the database is down.
func (s *Server) handleForwardAuth(w http.ResponseWriter, r *http.Request) {
	token, src := s.auth.Token(r)
	if src == auth.TokenNone {
		s.opts.Metrics.validation("anonymous")
		s.forwardAnonymous(w, r)
		return
	}
	sess, err := s.auth.ValidateSession(r.Context(), token)
	if errors.Is(err, auth.ErrInvalidSessionID) {
		s.opts.Metrics.validation("invalid")
		s.forwardAnonymous(w, r)
		return
	}
	if err != nil {
		s.opts.Metrics.validation("error")
		s.writeJSONError(w, r, err)
		return
	}
	s.opts.Metrics.validation("valid")
	if sess.Fresh && src == auth.TokenCookie {
		http.SetCookie(w, s.auth.CreateSessionCookie(&sess))
	}
	claims := s.claims(r.Context(), &sess)
	if s.opts.Access != nil {
		host, path, method := forwardedRequest(r)
		ok, err := s.opts.Access(r.Context(), AccessRequest{Session: &sess, Claims: claims, Host: host, Path: path, Method: method})
		if err != nil {
			s.log.Warn("access rule failed", "request_id", requestID(r.Context()), "err", err)
		}
		if !ok {
			s.writeJSONError(w, r, newError(http.StatusForbidden, CodeForbidden, "access denied"))
			return
		}
	}
	h := w.Header()
	h.Set(HeaderUserID, sess.User.ID)
	if sess.User.Email != nil {
		h.Set(HeaderEmail, *sess.User.Email)
	}
	names := make([]string, 0, len(claims))
	for k := range claims {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		h.Set(rules.HeaderName(k), rules.HeaderValue(claims[k]))
	}
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// claims returns the session's claims, never nil (JSON shows {}).
func (s *Server) claims(ctx context.Context, sess *auth.Session) map[string]any {
	if s.opts.Claims != nil {
		if c := s.opts.Claims(ctx, sess); c != nil {
			return c
		}
	}
	return map[string]any{}
}

// forwardedRequest returns the original request's host, path and method
// as the proxy reports them.
func forwardedRequest(r *http.Request) (host, path, method string) {
	host = r.Header.Get("X-Forwarded-Host")
	if host == "" {
		host = r.Host
	}
	uri := r.Header.Get("X-Forwarded-Uri")
	if uri == "" {
		uri = r.Header.Get("X-Original-URI")
	}
	if uri == "" {
		uri = "/"
	}
	path, _, _ = strings.Cut(uri, "?")
	method = r.Header.Get("X-Forwarded-Method")
	if method == "" {
		method = r.Header.Get("X-Original-Method")
	}
	if method == "" {
		method = http.MethodGet
	}
	return host, path, method
}

// originalURL rebuilds the URL the user asked for, or "" when the proxy
// did not say.
func originalURL(r *http.Request) string {
	host := r.Header.Get("X-Forwarded-Host")
	uri := r.Header.Get("X-Forwarded-Uri")
	if uri == "" {
		uri = r.Header.Get("X-Original-URI")
	}
	if host == "" || uri == "" || !strings.HasPrefix(uri, "/") {
		return ""
	}
	proto := r.Header.Get("X-Forwarded-Proto")
	if proto != "https" {
		proto = "http"
	}
	return proto + "://" + host + uri
}

func (s *Server) forwardAnonymous(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("redirect") == "1" {
		target := strings.TrimRight(s.opts.PublicURL, "/") + "/login"
		if orig := originalURL(r); orig != "" && s.redirectAllowed(orig) {
			target += "?redirect_to=" + url.QueryEscape(orig)
		}
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, target, http.StatusFound)
		return
	}
	s.writeJSONError(w, r, auth.ErrInvalidSessionID)
}
