package server

import (
	"encoding/json"
	"errors"
	"html/template"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"github.com/brokerauth/broker/auth"
)

// Error codes besides the Lucia ones (SPEC §9).
const (
	CodeNotFound           = "NOT_FOUND"
	CodeMethodNotAllowed   = "METHOD_NOT_ALLOWED"
	CodeRequestTooLarge    = "REQUEST_TOO_LARGE"
	CodeUnsupportedMedia   = "UNSUPPORTED_MEDIA_TYPE"
	CodeForbidden          = "FORBIDDEN"
	CodeRateLimited        = "RATE_LIMITED"
	CodeServiceUnavailable = "SERVICE_UNAVAILABLE"
	CodeProviderError      = "PROVIDER_ERROR"
	CodeConflict           = "CONFLICT"
)

// httpError is an answer with a code, a status and a message that is safe
// to show: it never carries internal details.
type httpError struct {
	Status  int
	Code    string
	Message string
	Err     error // for the log only
}

func (e *httpError) Error() string { return e.Code + ": " + e.Message }

func (e *httpError) Unwrap() error { return e.Err }

func newError(status int, code, msg string) *httpError {
	return &httpError{Status: status, Code: code, Message: msg}
}

// classify maps any error to what the client sees.
func classify(err error) *httpError {
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	code := auth.CodeOf(err)
	switch code {
	case auth.ErrInvalidSessionID.Code:
		return &httpError{http.StatusUnauthorized, code, "the session is invalid or has expired", err}
	case auth.ErrInvalidUserID.Code:
		return &httpError{http.StatusNotFound, code, "no such user", err}
	case auth.ErrInvalidKeyID.Code, auth.ErrInvalidPassword.Code:
		return &httpError{http.StatusBadRequest, auth.ErrInvalidPassword.Code, "invalid email or password", err}
	case auth.ErrOutdatedPassword.Code:
		return &httpError{http.StatusBadRequest, code, "this password must be reset", err}
	case auth.ErrDuplicateKeyID.Code:
		return &httpError{http.StatusConflict, code, "that identity is already registered", err}
	case auth.ErrConflict.Code:
		return &httpError{http.StatusConflict, CodeConflict, "already in use by another account", err}
	case auth.ErrInvalidRequest.Code:
		return &httpError{http.StatusBadRequest, code, "invalid request", err}
	case auth.ErrReauthenticationRequired.Code:
		return &httpError{http.StatusForbidden, code, "please sign in again to do this", err}
	}
	return &httpError{http.StatusServiceUnavailable, CodeServiceUnavailable, "the service is temporarily unavailable", err}
}

// wantsJSON reports whether the client should get JSON rather than a page:
// a JSON body or a JSON Accept header (SPEC §9).
func wantsJSON(r *http.Request) bool {
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && ct == "application/json" {
		return true
	}
	for part := range strings.SplitSeq(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "application/json" {
			return true
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	jsonHeaders(w.Header())
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeJSONBody is writeJSON for a body already encoded.
func writeJSONBody(w http.ResponseWriter, status int, body []byte) {
	jsonHeaders(w.Header())
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func jsonHeaders(h http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
}

// dropDeadCookie expires the session cookie r carries, for answers that say
// it holds no valid session.
func (s *Server) dropDeadCookie(w http.ResponseWriter, r *http.Request) {
	if _, src := s.auth.Token(r); src == auth.TokenCookie {
		http.SetCookie(w, s.auth.CreateSessionCookie(nil))
	}
}

var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title><link rel="stylesheet" href="/assets/broker.css"></head>
<body><main class="card" role="main"><h1>{{.Title}}</h1><p>{{.Message}}</p>
<p class="code">Error code: <code>{{.Code}}</code></p><p><a href="{{.Back}}">Back to sign-in</a></p></main></body></html>
`))

// writeError answers err as JSON or as an HTML page, logging the details
// that the client does not see.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	he := classify(err)
	lvl := slog.LevelInfo
	if he.Status >= 500 {
		lvl = slog.LevelError
	}
	s.log.Log(r.Context(), lvl, "request failed", "request_id", requestID(r.Context()),
		"status", he.Status, "code", he.Code, "err", errString(he.Err))
	if he.Status == http.StatusUnauthorized && he.Code == auth.ErrInvalidSessionID.Code {
		s.dropDeadCookie(w, r)
	}
	if wantsJSON(r) || !acceptsHTML(r) {
		writeJSON(w, he.Status, map[string]string{"error": he.Code, "message": he.Message})
		return
	}
	s.securityHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(he.Status)
	_ = errorPage.Execute(w, map[string]string{
		"Title": http.StatusText(he.Status), "Message": he.Message, "Code": he.Code, "Back": "/login",
	})
}

// acceptsHTML reports whether the request looks like a browser navigation
// or form post.
func acceptsHTML(r *http.Request) bool {
	if strings.Contains(r.Header.Get("Accept"), "text/html") {
		return true
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return ct == "application/x-www-form-urlencoded" || ct == "multipart/form-data"
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
