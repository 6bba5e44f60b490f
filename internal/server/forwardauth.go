package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

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
// access rule refuses the user, 503 when the database is down. A bodiless
// GET (what proxies send) is served before the middleware by
// [Server.serveForwardAuth]; this route is for the rest (HEAD, a GET with a
// body).
func (s *Server) handleForwardAuth(w http.ResponseWriter, r *http.Request) {
	s.forwardAuth(w, r)
}

// serveForwardAuth serves a bodiless GET /auth, the request that every app
// behind the broker makes on every request of its own, without the
// middleware chain: it does the middleware's part inline (metrics, debug
// log, panic recovery) and sets up the request id, the request context and
// status recording only for answers other than 200. A 200 carries no
// X-Request-Id: proxies pass on only the headers they are told to, and
// nothing is logged for it above debug level.
func (s *Server) serveForwardAuth(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			id := requestID(r.Context())
			if id == "" {
				id = newRequestID()
				w.Header()["X-Request-Id"] = []string{id}
			}
			s.answerPanic(w, r, id, p)
			s.opts.Metrics.request(forwardAuthRoute, http.StatusServiceUnavailable, time.Since(start))
		}
	}()
	status, id := s.forwardAuth(w, r)
	d := time.Since(start)
	s.opts.Metrics.forwardAuth(status, d)
	s.logRequest(r, id, status, d)
}

// forwardAuth answers /auth and returns the status it answered and the
// request id ("" for a 200 served by [Server.serveForwardAuth]).
func (s *Server) forwardAuth(w http.ResponseWriter, r *http.Request) (int, string) {
	token, src := s.auth.Token(r)
	var v *auth.SessionView
	var err error
	if src != auth.TokenNone {
		v, err = s.auth.ValidateSessionView(r.Context(), token)
	}
	id := requestID(r.Context())
	if v != nil {
		s.opts.Metrics.validation("valid")
		if v.Session.Fresh && src == auth.TokenCookie {
			http.SetCookie(w, s.auth.CreateSessionCookie(&v.Session))
		}
		ans := s.forwardAnswer(r.Context(), v)
		ok, aerr := s.forwardAllowed(r, v, ans)
		if ok {
			ans.write(w.Header())
			w.WriteHeader(http.StatusOK)
			return http.StatusOK, id
		}
		if id == "" {
			id = newRequestID()
		}
		switch {
		case ans.keysErr != nil:
			// The rules cannot be decided: unavailable, not refused.
			err = fmt.Errorf("access rules: the user's keys: %w", ans.keysErr)
		case aerr != nil:
			s.log.Warn("access rule failed", "request_id", id, "err", aerr)
			fallthrough
		default:
			err = newError(http.StatusForbidden, CodeForbidden, "access denied")
		}
	}
	// Every other answer goes through the helpers the middleware serves:
	// they log with the request id and may write pages.
	if requestID(r.Context()) == "" {
		if id == "" {
			id = newRequestID()
		}
		w.Header()["X-Request-Id"] = []string{id}
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey, id))
	}
	sw := &statusWriter{ResponseWriter: w}
	switch {
	case src == auth.TokenNone:
		s.opts.Metrics.validation("anonymous")
		s.forwardAnonymous(sw, r)
	case errors.Is(err, auth.ErrInvalidSessionID):
		s.opts.Metrics.validation("invalid")
		s.forwardAnonymous(sw, r)
	default:
		if v == nil {
			s.opts.Metrics.validation("error")
		}
		s.writeJSONError(sw, r, err)
	}
	if sw.status == 0 {
		return http.StatusOK, id
	}
	return sw.status, id
}

// forwardAnswer is what /auth answers a signed-in user: the identity and
// claim headers, and the claims when access rules need them. It is kept
// with a cached session's view and read by every answer for that session,
// so it is laid out in few allocations: the header table with its value
// slices inline, and the values in one string.
type forwardAnswer struct {
	claims map[string]any // nil without access rules
	// keys are the user's keys for the access rules (Options.AccessKeys);
	// keysErr is why they could not be read.
	keys    []auth.Key
	keysErr error
	headers []headerField
	inline  [6]headerField // headers, when they fit
	values  [6]string      // backing of the inline headers' values
}

type headerField struct {
	name  string
	value []string
}

// write sets the answer's headers on h (which must be a response's: the
// value slices are shared, and net/http only reads them).
func (a *forwardAnswer) write(h http.Header) {
	for _, f := range a.headers {
		h[f.name] = f.value
	}
}

// viewAnswers are the answers the server keeps with a session view (see
// [auth.SessionView.Memo]): /auth's, built with them, and /session's JSON
// body, built on first use.
type viewAnswers struct {
	forward forwardAnswer
	session atomic.Pointer[[]byte]
}

// answers returns v's answers, computed once per view.
func (s *Server) answers(ctx context.Context, v *auth.SessionView) *viewAnswers {
	return v.Memo(s, func(sess *auth.Session) (any, bool) {
		as := &viewAnswers{}
		// Memoized claims must not depend on this request's cancellation.
		cctx, transient := withTransientFlag(context.WithoutCancel(ctx))
		s.fillForwardAnswer(cctx, sess, &as.forward)
		return as, !*transient
	}).(*viewAnswers)
}

type transientKey struct{}

// withTransientFlag returns ctx with the flag that [ClaimsTransient] sets.
func withTransientFlag(ctx context.Context) (context.Context, *bool) {
	f := new(bool)
	return context.WithValue(ctx, transientKey{}, f), f
}

// ClaimsTransient is for Options.Claims: called with the context Claims
// got, it says that the claims Claims returns are good for this request
// only, because something they depend on could not be read (the
// database is down). They answer the request but are not kept with the
// cached session; the next request computes them again. Without a cached
// session it does nothing.
func ClaimsTransient(ctx context.Context) {
	if f, ok := ctx.Value(transientKey{}).(*bool); ok {
		*f = true
	}
}

// forwardAnswer returns v's /auth answer: computed once per shared view and
// kept with it (unless ClaimsTransient said otherwise); computed for this
// request alone for a view of its own (a cache miss).
func (s *Server) forwardAnswer(ctx context.Context, v *auth.SessionView) *forwardAnswer {
	if !v.Shared() {
		return s.newForwardAnswer(ctx, &v.Session)
	}
	return &s.answers(ctx, v).forward
}

// sessionJSON returns v's /session body, as writeJSON would write it.
func (s *Server) sessionJSON(ctx context.Context, v *auth.SessionView) ([]byte, error) {
	as := s.answers(ctx, v)
	if b := as.session.Load(); b != nil {
		return *b, nil
	}
	cctx, transient := withTransientFlag(context.WithoutCancel(ctx))
	b, err := json.Marshal(s.sessionBody(cctx, &v.Session))
	if err != nil {
		return nil, err
	}
	b = append(b, '\n')
	if !*transient {
		as.session.CompareAndSwap(nil, &b)
	}
	return b, nil
}

func (s *Server) newForwardAnswer(ctx context.Context, sess *auth.Session) *forwardAnswer {
	a := &forwardAnswer{}
	s.fillForwardAnswer(ctx, sess, a)
	return a
}

// fillForwardAnswer builds sess's answer in a, where it is to stay (its
// headers may point into it).
func (s *Server) fillForwardAnswer(ctx context.Context, sess *auth.Session, a *forwardAnswer) {
	claims := s.claims(ctx, sess)
	names := make([]string, 0, 3+len(claims))
	vals := make([]string, 0, 3+len(claims))
	names, vals = append(names, HeaderUserID), append(vals, sess.User.ID)
	if sess.User.Email != nil {
		names, vals = append(names, HeaderEmail), append(vals, *sess.User.Email)
	}
	for _, k := range slices.Sorted(maps.Keys(claims)) {
		names = append(names, s.claimHeader(k))
		vals = append(vals, rules.HeaderValue(claims[k]))
	}
	names, vals = append(names, "Cache-Control"), append(vals, "no-store")

	if s.opts.Access != nil {
		a.claims = claims
		if s.opts.AccessKeys {
			a.keys, a.keysErr = s.auth.GetAllUserKeys(ctx, sess.UserID)
			if a.keysErr != nil {
				ClaimsTransient(ctx) // not kept: the next request reads them again
			}
		}
	}
	a.headers = a.inline[:0]
	backing := a.values[:]
	if len(names) > len(a.inline) {
		a.headers, backing = make([]headerField, 0, len(names)), make([]string, len(names))
	}
	// The values in one string, each a slice of it.
	all := strings.Join(vals, "")
	for i, name := range names {
		n := len(vals[i])
		backing[i], all = all[:n], all[n:]
		a.headers = append(a.headers, headerField{name, backing[i : i+1 : i+1]})
	}
}

// maxClaimHeaders bounds Server.claimHeaders.
const maxClaimHeaders = 256

// claimHeader returns the header that carries claim k, e.g.
// X-Auth-Claim-Is-Admin for is_admin.
func (s *Server) claimHeader(k string) string {
	if h, ok := s.claimHeaders.Load(k); ok {
		return h.(string)
	}
	h := http.CanonicalHeaderKey(rules.HeaderName(k))
	// Claim names normally come from the configuration; a Claims function
	// that makes them up does not grow the map past a bound.
	if s.nClaimHeads.Add(1) <= maxClaimHeaders {
		s.claimHeaders.Store(strings.Clone(k), h)
	}
	return h
}

// forwardAllowed applies the access rules (Options.Access) to the request
// that /auth is asked about.
func (s *Server) forwardAllowed(r *http.Request, v *auth.SessionView, ans *forwardAnswer) (bool, error) {
	if s.opts.Access == nil {
		return true, nil
	}
	if ans.keysErr != nil {
		return false, nil
	}
	host, path, method := forwardedRequest(r)
	return s.opts.Access(r.Context(), AccessRequest{Session: &v.Session, Claims: ans.claims, Keys: ans.keys, Host: host, Path: path, Method: method})
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
		// The proxy shows this answer to the browser: drop a dead
		// session's cookie, as the 401 answer does.
		s.dropDeadCookie(w, r)
		http.Redirect(w, r, target, http.StatusFound)
		return
	}
	s.writeJSONError(w, r, auth.ErrInvalidSessionID)
}
