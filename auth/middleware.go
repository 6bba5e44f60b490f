package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// TokenSource says where a request's session token came from.
type TokenSource int

// Token sources.
const (
	TokenNone TokenSource = iota
	TokenCookie
	TokenBearer
)

// Request is Lucia's AuthRequest: the session handling of one HTTP request.
// Validate reads the session cookie, ValidateBearerToken the Authorization
// header; both remember their answer for the rest of the request. Create
// one per request with [Auth.HandleRequest].
type Request struct {
	a *Auth
	w http.ResponseWriter
	r *http.Request

	done    bool
	session *Session
	err     error
}

// HandleRequest returns the session handling of one request. w may be nil
// when no cookie is to be written.
func (a *Auth) HandleRequest(w http.ResponseWriter, r *http.Request) *Request {
	return &Request{a: a, w: w, r: r}
}

// Token returns the request's session token and where it came from: the
// session cookie first, then a bearer token.
func (a *Auth) Token(r *http.Request) (string, TokenSource) {
	if t, ok := a.ReadSessionCookie(r.Header.Get("Cookie")); ok {
		return t, TokenCookie
	}
	if t, ok := ReadBearerToken(r.Header.Get("Authorization")); ok {
		return t, TokenBearer
	}
	return "", TokenNone
}

// Validate returns the session of the request's cookie, or nil when there
// is none or it is invalid (and then the cookie is cleared). A reset
// session's cookie is renewed. Errors are only the store's (database down).
func (q *Request) Validate(ctx context.Context) (*Session, error) {
	if q.done {
		return q.session, q.err
	}
	q.done = true
	token, ok := q.a.ReadSessionCookie(q.r.Header.Get("Cookie"))
	if !ok {
		return nil, nil
	}
	s, err := q.a.ValidateSession(ctx, token)
	switch {
	case errors.Is(err, ErrInvalidSessionID):
		q.SetSession(nil)
		return nil, nil
	case err != nil:
		q.err = err
		return nil, err
	}
	if s.Fresh {
		q.SetSession(&s)
	}
	q.session = &s
	return q.session, nil
}

// ValidateBearerToken returns the session of the request's bearer token, or
// nil when there is none or it is invalid. Errors are only the store's.
func (q *Request) ValidateBearerToken(ctx context.Context) (*Session, error) {
	token, ok := ReadBearerToken(q.r.Header.Get("Authorization"))
	if !ok {
		return nil, nil
	}
	s, err := q.a.ValidateSession(ctx, token)
	if errors.Is(err, ErrInvalidSessionID) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// SetSession writes the cookie for s (the blank cookie for nil) and
// remembers s as the request's session.
func (q *Request) SetSession(s *Session) {
	q.done, q.session, q.err = true, s, nil
	if q.w != nil {
		http.SetCookie(q.w, q.a.CreateSessionCookie(s))
	}
}

type ctxKey struct{}

// WithSession returns ctx carrying s.
func WithSession(ctx context.Context, s *Session) context.Context {
	return context.WithValue(ctx, ctxKey{}, s)
}

// SessionFromContext returns the session the [Auth.Middleware] put into ctx.
func SessionFromContext(ctx context.Context) (*Session, bool) {
	s, ok := ctx.Value(ctxKey{}).(*Session)
	return s, ok && s != nil
}

// Middleware validates the request's session (cookie, else bearer token) and
// puts it into the request context for [SessionFromContext]; requests
// without a valid session pass through without one. A reset session's
// cookie is renewed; an invalid cookie is cleared. When the store fails,
// the request is answered 503 with {"error":"SERVICE_UNAVAILABLE"}, because
// the handler could not tell a signed-in user from an anonymous one.
func (a *Auth) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := a.HandleRequest(w, r)
		s, err := q.Validate(r.Context())
		if err == nil && s == nil {
			s, err = q.ValidateBearerToken(r.Context())
		}
		if err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]string{
				"error":   "SERVICE_UNAVAILABLE",
				"message": "the session store is unavailable",
			})
			return
		}
		if s != nil {
			r = r.WithContext(WithSession(r.Context(), s))
		}
		next.ServeHTTP(w, r)
	})
}

// ProtectCrossOrigin refuses cross-site browser requests (see
// [Auth.CheckCrossOrigin]) with 403 {"error":"AUTH_INVALID_REQUEST"}.
func (a *Auth) ProtectCrossOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.CheckCrossOrigin(r); err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_ = json.NewEncoder(w).Encode(map[string]string{
				"error":   ErrInvalidRequest.Code,
				"message": "cross-site request refused",
			})
			return
		}
		next.ServeHTTP(w, r)
	})
}
