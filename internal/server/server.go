// Package server is the broker's HTTP interface (SPEC §7): login pages and
// flows, /session, forward-auth, session management and operations
// endpoints, over an [auth.Auth].
//
// Every route names its method. Answers are JSON when the request's
// Content-Type or Accept is application/json and pages or redirects
// otherwise; errors are {"error": CODE, "message": …} with the status of
// SPEC §9, and never a 500 for bad input: a panic is logged and answered
// 503 without a stack trace.
package server

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/providers"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage"
)

// Options configure a [Server].
type Options struct {
	Auth  *auth.Auth
	Store storage.Store
	Log   *slog.Logger
	// PublicURL is the broker's public base URL (http://localhost:8080).
	PublicURL string
	// RedirectDefault is where form posts land when no redirect_to is
	// given (default "/").
	RedirectDefault string
	// MaxBodyBytes caps request bodies (default 65536).
	MaxBodyBytes int64
	// MaxSignups sign-ups (password or passkey) are allowed per client IP
	// in SignupWindow (defaults 100 and an hour: limits.signups); past
	// that, 429 with Retry-After.
	MaxSignups   int
	SignupWindow time.Duration
	// Claims computes a session's claims; nil means none. A claim that
	// fails is left out (and logged by the function). The session may be
	// shared with other requests: Claims must not modify it. Forward-auth
	// computes claims once per cached session snapshot (see
	// [auth.SessionView]); Claims that could not read what they need for a
	// passing reason say so with [ClaimsTransient].
	Claims func(ctx context.Context, s *auth.Session) map[string]any
	// Access decides forward-auth access rules for a signed-in user; nil
	// allows every signed-in user.
	Access func(ctx context.Context, req AccessRequest) (bool, error)
	// AccessKeys gives the access rules the user's keys (AccessRequest.Keys),
	// read once per cached session snapshot (adding or removing a key
	// invalidates it). When they cannot be read, /auth answers 503 without
	// running the rules.
	AccessKeys bool
	// OriginAllowed reports whether an origin (scheme://host[:port]) is in
	// redirect.allowed_origins: redirects there are allowed and CORS is
	// answered for it.
	OriginAllowed func(origin string) bool
	// TrustedProxies are the proxies whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// Providers are the enabled OAuth / OpenID Connect providers, in the
	// order the login page shows them.
	Providers []Provider
	// Flows seals login-attempt state into cookies.
	Flows *providersession.FlowStore
	// Vault encrypts provider tokens at rest.
	Vault *providersession.TokenVault
	// ProviderTimeout bounds a callback's calls to its provider (default 10s).
	ProviderTimeout time.Duration
	// Metrics, when not nil, records Prometheus metrics; /metrics serves
	// its registry.
	Metrics *Metrics
	// MetricsOnMainListener serves /metrics on the main handler to
	// loopback peers (when no separate metrics listener is configured).
	MetricsOnMainListener bool
	// WebAuthn turns on passkeys (webauthn.go); nil leaves them off.
	WebAuthn *WebAuthnOptions
	// Passwords turns on password sign-up and login (password.go); nil
	// leaves them off.
	Passwords *PasswordOptions
	// Email turns on email magic links (email.go); nil leaves them off.
	Email *EmailOptions
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Provider is one enabled sign-in provider.
type Provider struct {
	// ID is the path segment (/login/{id}) and key prefix.
	ID string
	// DisplayName labels the login button.
	DisplayName string
	Provider    providers.Provider
	// Allow is the sign-in restriction (providers.<p>.allow); nil allows all.
	Allow func(ctx context.Context, id providers.Identity) (bool, error)
	// Attributes evaluates providers.<p>.attributes at each login; nil sets none.
	Attributes func(ctx context.Context, id providers.Identity) map[string]any
	// LinkVerifiedEmail is providers.<p>.link_verified_email.
	LinkVerifiedEmail bool
}

// AccessRequest is what a forward-auth access rule sees. Session and
// Claims may be shared with other requests and must not be modified.
type AccessRequest struct {
	Session *auth.Session
	Claims  map[string]any
	// Keys are the user's keys with Options.AccessKeys, otherwise nil. They
	// may be shared with other requests too.
	Keys   []auth.Key
	Host   string
	Path   string
	Method string
}

// Server serves the broker's HTTP interface.
type Server struct {
	auth  *auth.Auth
	store storage.Store
	log   *slog.Logger
	opts  Options
	now   func() time.Time
	mux   *http.ServeMux
	provs map[string]*Provider
	// loginParts and accountParts are the features' sections of the login
	// and account pages, in registration order.
	loginParts   []func(r *http.Request, redirectTo string) template.HTML
	accountParts []func(r *http.Request, s *auth.Session) template.HTML
	auditMetrics *auditMetrics // audit.go; nil without metrics
	// claimHeaders maps a claim name to its /auth header name, so that
	// the answers kept with session views share one copy of each.
	claimHeaders sync.Map
	nClaimHeads  atomic.Int32
}

// New returns a Server.
func New(o Options) (*Server, error) {
	if o.Auth == nil || o.Store == nil {
		return nil, errors.New("server: Auth and Store are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.RedirectDefault == "" {
		o.RedirectDefault = "/"
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 65536
	}
	if o.MaxSignups <= 0 {
		o.MaxSignups = 100
	}
	if o.SignupWindow <= 0 {
		o.SignupWindow = time.Hour
	}
	if o.ProviderTimeout <= 0 {
		o.ProviderTimeout = 10 * time.Second
	}
	if len(o.Providers) > 0 && o.Flows == nil {
		return nil, errors.New("server: providers need a FlowStore")
	}
	s := &Server{auth: o.Auth, store: o.Store, log: o.Log, opts: o, now: o.Now, mux: http.NewServeMux()}
	if s.now == nil {
		s.now = time.Now
	}
	s.auditMetrics = newAuditMetrics(o.Metrics)
	s.provs = map[string]*Provider{}
	for i := range o.Providers {
		s.provs[o.Providers[i].ID] = &o.Providers[i]
	}
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", s.handleHealthz)
	s.mux.HandleFunc("GET /readyz", s.handleReadyz)
	s.mux.HandleFunc("GET /session", s.handleSession)
	s.mux.HandleFunc("POST /logout", s.handleLogout)
	s.mux.HandleFunc("GET /login", s.handleLoginPage)
	s.mux.HandleFunc("GET /login/{provider}", s.handleLoginStart)
	s.mux.HandleFunc("GET /login/{provider}/callback", s.handleCallback)
	s.mux.HandleFunc("POST /link/{provider}", s.handleLinkStart)
	s.mux.HandleFunc("GET /auth", s.handleForwardAuth)
	s.mux.HandleFunc("GET /sessions", s.handleListSessions)
	s.mux.HandleFunc("DELETE /sessions/{id}", s.handleDeleteSession)
	s.mux.HandleFunc("POST /sessions/revoke-all", s.handleRevokeAll)
	s.mux.HandleFunc("GET /account", s.handleAccount)
	s.mux.HandleFunc("GET /assets/{file}", s.handleAsset)
	if s.opts.WebAuthn != nil {
		s.webauthnRoutes()
	}
	if s.opts.Email != nil {
		s.emailRoutes()
	}
	if s.opts.Passwords != nil {
		s.passwordRoutes()
	}
	if s.opts.Metrics != nil && s.opts.MetricsOnMainListener {
		s.mux.HandleFunc("GET /metrics", s.handleMetrics)
	}
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/login", http.StatusFound)
	})
}

// Handler returns the broker's HTTP handler with its middleware.
func (s *Server) Handler() http.Handler {
	var h http.Handler = http.HandlerFunc(s.dispatch)
	h = s.limitBody(h)
	h = s.cors(h)
	h = s.logRequests(h)
	h = s.recoverPanics(h)
	return &rootHandler{s: s, next: h}
}

// rootHandler sends a bodiless GET /auth to [Server.serveForwardAuth] and
// every other request through the middleware.
type rootHandler struct {
	s    *Server
	next http.Handler
}

func (h *rootHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if IsForwardAuth(r) {
		h.s.serveForwardAuth(w, r)
		return
	}
	h.next.ServeHTTP(w, r)
}

// IsForwardAuth reports whether r is what a reverse proxy sends to ask
// about a request of its own: a bodiless GET /auth. The broker answers
// these first (see internal/fastlane).
func IsForwardAuth(r *http.Request) bool {
	return r.Method == http.MethodGet && r.URL.Path == "/auth" && r.ContentLength == 0 &&
		(r.Body == nil || r.Body == http.NoBody)
}

// dispatch routes through the mux, answering what the mux itself would
// answer (unknown route 404, known route with another method 405) in the
// broker's error shape.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	switch rec.Code {
	case http.StatusMethodNotAllowed:
		if allow := rec.Header().Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		s.writeError(w, r, newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method not allowed"))
	case http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		// Path cleaning redirects (//x → /x) stay as ServeMux answers them.
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
	default:
		s.writeError(w, r, newError(http.StatusNotFound, CodeNotFound, "no such page"))
	}
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.log.Warn("database not ready", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": CodeServiceUnavailable, "message": "the database is unreachable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// currentSession validates the request's cookie or bearer token. It
// returns (nil, ErrInvalidSessionID) when there is none or it is invalid,
// and refreshes the cookie of a reset session.
func (s *Server) currentSession(w http.ResponseWriter, r *http.Request) (*auth.Session, error) {
	token, src := s.auth.Token(r)
	if src == auth.TokenNone {
		return nil, auth.ErrInvalidSessionID
	}
	sess, err := s.auth.ValidateSession(r.Context(), token)
	if err != nil {
		return nil, err
	}
	if sess.Fresh && src == auth.TokenCookie {
		http.SetCookie(w, s.auth.CreateSessionCookie(&sess))
	}
	return &sess, nil
}

// currentView is currentSession for callers that only read the session:
// the view may be the session cache's, shared with other requests.
func (s *Server) currentView(w http.ResponseWriter, r *http.Request) (*auth.SessionView, error) {
	token, src := s.auth.Token(r)
	if src == auth.TokenNone {
		return nil, auth.ErrInvalidSessionID
	}
	v, err := s.auth.ValidateSessionView(r.Context(), token)
	if err != nil {
		return nil, err
	}
	if v.Session.Fresh && src == auth.TokenCookie {
		http.SetCookie(w, s.auth.CreateSessionCookie(&v.Session))
	}
	return v, nil
}

// sessionBody is the JSON shape of /session and of login answers.
type sessionBody struct {
	User       auth.User      `json:"user"`
	Session    *auth.Session  `json:"session"`
	Claims     map[string]any `json:"claims"`
	RedirectTo string         `json:"redirect_to,omitempty"`
	Token      string         `json:"token,omitempty"`
}

func (s *Server) sessionBody(ctx context.Context, sess *auth.Session) sessionBody {
	return sessionBody{User: sess.User, Session: sess, Claims: s.claims(ctx, sess)}
}

func (s *Server) handleSession(w http.ResponseWriter, r *http.Request) {
	v, err := s.currentView(w, r)
	if err != nil {
		s.writeJSONError(w, r, err)
		return
	}
	// A session the cache answers for has its body kept with its view.
	if v.Shared() {
		if body, err := s.sessionJSON(r.Context(), v); err == nil {
			writeJSONBody(w, http.StatusOK, body)
			return
		}
	}
	writeJSON(w, http.StatusOK, s.sessionBody(r.Context(), &v.Session))
}

// writeJSONError is writeError for endpoints that always speak JSON.
func (s *Server) writeJSONError(w http.ResponseWriter, r *http.Request, err error) {
	r.Header.Set("Accept", "application/json")
	s.writeError(w, r, err)
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if err := s.auth.CheckCrossOrigin(r); err != nil {
		s.writeError(w, r, newError(http.StatusForbidden, auth.ErrInvalidRequest.Code, "cross-site request refused"))
		return
	}
	if token, src := s.auth.Token(r); src != auth.TokenNone {
		sess, serr := s.auth.GetSession(r.Context(), token) // whose, for the audit log
		if err := s.auth.InvalidateSession(r.Context(), token); err != nil {
			s.writeError(w, r, err)
			return
		}
		if serr == nil {
			s.auditEvent(r, storage.AuditEvent{Event: storage.AuditLogout, UserID: sess.UserID, Data: map[string]any{"session_id": sess.ID}})
		}
	}
	http.SetCookie(w, s.auth.CreateSessionCookie(nil))
	if wantsJSON(r) || !acceptsHTML(r) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	http.Redirect(w, r, s.opts.RedirectDefault, http.StatusSeeOther)
}

// newRequestID returns a request id: 16 hex digits, unique in practice
// (random, not secret: it only ties log lines to answers).
func newRequestID() string {
	var n [8]byte
	var b [16]byte
	binary.BigEndian.PutUint64(n[:], rand.Uint64())
	hex.Encode(b[:], n[:])
	return string(b[:])
}

type ctxKey int

const requestIDKey ctxKey = iota

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// statusWriter records the status for the access log. It also gives
// every HTML answer the page headers (securityHeaders), so that those
// written by net/http's helpers (http.Redirect's body, ServeMux's
// redirects) carry them too.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		htmlHeaders(w.Header())
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
		htmlHeaders(w.Header())
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests gives each request an id (echoed as X-Request-Id) and logs
// method, path (never the query, which can hold tokens), status and time.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := newRequestID()
		w.Header()["X-Request-Id"] = []string{id}
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey, id))
		sw := &statusWriter{ResponseWriter: w}
		start := time.Now()
		next.ServeHTTP(sw, r)
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		d := time.Since(start)
		s.opts.Metrics.request(r.Pattern, status, d)
		s.logRequest(r, id, status, d)
	})
}

// logRequest writes the debug line of a finished request (method, path
// without the query, status, time).
func (s *Server) logRequest(r *http.Request, id string, status int, d time.Duration) {
	if !s.log.Enabled(r.Context(), slog.LevelDebug) {
		return
	}
	if id == "" { // a 200 from /auth: see serveForwardAuth
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", status, "duration", d)
		return
	}
	s.log.Debug("request", "request_id", id, "method", r.Method, "path", r.URL.Path,
		"status", status, "duration", d)
}

// recoverPanics turns a panic into a logged 503 without a stack trace for
// the client.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				s.answerPanic(w, r, requestID(r.Context()), v)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// answerPanic logs a recovered panic v and answers 503 without its detail;
// http.ErrAbortHandler goes on up, as net/http expects.
func (s *Server) answerPanic(w http.ResponseWriter, r *http.Request, id string, v any) {
	if v == http.ErrAbortHandler {
		panic(v)
	}
	s.log.Error("panic", "request_id", id, "panic", fmt.Sprint(v))
	s.writeError(w, r, newError(http.StatusServiceUnavailable, CodeServiceUnavailable, "the service is temporarily unavailable"))
}

// limitBody caps request bodies at MaxBodyBytes.
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.opts.MaxBodyBytes {
			s.writeError(w, r, newError(http.StatusRequestEntityTooLarge, CodeRequestTooLarge, "the request body is too large"))
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
			if err := bufferBody(r); err != nil {
				s.writeError(w, r, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// securityHeaders sets the headers every HTML page carries.
func (s *Server) securityHeaders(w http.ResponseWriter) { setPageHeaders(w.Header()) }

func setPageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; frame-ancestors 'none'; base-uri 'none'; form-action 'self' https: http:")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}
