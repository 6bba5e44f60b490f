package server

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	netmail "net/mail"
	"net/url"
	"reflect"
	"strings"

	"github.com/brokerauth/broker/auth"
)

// Helpers shared by the email-link and password handlers: reading their
// input and giving their usual answers.

var errBadEmail = newError(http.StatusBadRequest, auth.ErrInvalidRequest.Code, "enter a valid email address")

// readInput refuses a cross-site request (sameSite) and decodes the body
// into dst (decodeInput). On failure it has answered and returns false.
func (s *Server) readInput(w http.ResponseWriter, r *http.Request, dst any) bool {
	return s.sameSite(w, r) && s.decode(w, r, dst)
}

// decode is decodeInput that answers its error; it reports success.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, dst any) bool {
	if err := decodeInput(r, dst); err != nil {
		s.writeError(w, r, err)
		return false
	}
	return true
}

// inputEmail normalizes the address raw (normalizeEmail); an invalid one
// is answered with refusal and ok is false.
func (s *Server) inputEmail(w http.ResponseWriter, r *http.Request, raw string, refusal error) (email string, ok bool) {
	email, ok = normalizeEmail(raw)
	if !ok {
		s.writeError(w, r, refusal)
	}
	return email, ok
}

// linkParams reads the email and token of a link's URL, and whether both
// have the right shape.
func linkParams(q url.Values) (email, token string, ok bool) {
	email, ok = normalizeEmail(q.Get("email"))
	token = q.Get("token")
	return email, token, ok && validLinkToken(token)
}

// answersJSON reports whether the answer is JSON rather than a page.
func answersJSON(r *http.Request) bool {
	return wantsJSON(r) || !acceptsHTML(r)
}

// jsonBody reports whether the request body is JSON (where "bearer" counts).
func jsonBody(r *http.Request) bool {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return ct == "application/json"
}

// answerSent is the answer to "send me a link": 202 {"status":"sent"} to
// JSON clients, 303 to page for forms.
func answerSent(w http.ResponseWriter, r *http.Request, page string) {
	if answersJSON(r) {
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "sent"})
		return
	}
	http.Redirect(w, r, page, http.StatusSeeOther)
}

// newSession starts a session for userID, described by request r.
func (s *Server) newSession(r *http.Request, userID string) (*auth.Session, error) {
	sess, err := s.auth.CreateSession(r.Context(), userID, s.sessionOptions(r))
	if err != nil {
		return nil, err
	}
	return &sess, nil
}

// sessionOptions describe a session started by request r.
func (s *Server) sessionOptions(r *http.Request) auth.SessionOptions {
	return auth.SessionOptions{UserAgent: truncate(r.UserAgent(), 256), IP: s.clientIP(r)}
}

// sameSite refuses a cross-site browser request (403 AUTH_INVALID_REQUEST)
// and reports whether the request may go on.
func (s *Server) sameSite(w http.ResponseWriter, r *http.Request) bool {
	if err := s.auth.CheckCrossOrigin(r); err != nil {
		s.writeError(w, r, &httpError{http.StatusForbidden, auth.ErrInvalidRequest.Code, "cross-site request refused", err})
		return false
	}
	return true
}

// normalizeEmail returns the address lower-cased and trimmed, and whether
// it is a plain address (local@domain, no display name, no quoting, at
// most 254 bytes).
func normalizeEmail(raw string) (string, bool) {
	e := strings.ToLower(strings.TrimSpace(raw))
	if e == "" || len(e) > 254 || strings.ContainsAny(e, " \t\r\n\"<>()[]\\,;") {
		return "", false
	}
	if strings.ContainsRune(e, '\uFFFD') { // also any invalid UTF-8 (strings.IndexRune)
		return "", false
	}
	local, domain, ok := strings.Cut(e, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") {
		return "", false
	}
	a, err := netmail.ParseAddress(e)
	if err != nil || a.Name != "" || a.Address != e {
		return "", false
	}
	return e, true
}

// decodeInput reads a POST body into dst, a pointer to a struct whose
// string and bool fields carry json tags: a JSON object
// (application/json) or an HTML form (application/x-www-form-urlencoded,
// multipart/form-data; a bool is true for "1", "true" or "on"). Unknown
// fields are ignored. It returns an *httpError: 415 for another content
// type, 413 past the body limit, 400 AUTH_INVALID_REQUEST for a malformed
// body, which includes JSON that checkJSON refuses (not UTF-8, repeated
// member names) and form values that are not UTF-8.
func decodeInput(r *http.Request, dst any) error {
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		ct = ""
	}
	bad := func(err error) error {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return newError(http.StatusRequestEntityTooLarge, CodeRequestTooLarge, "the request body is too large")
		}
		return &httpError{http.StatusBadRequest, auth.ErrInvalidRequest.Code, "the request body is malformed", err}
	}
	switch ct {
	case "application/json":
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return bad(err)
		}
		if err := checkJSON(b); err != nil {
			return err
		}
		if err := json.Unmarshal(b, dst); err != nil {
			return bad(err)
		}
		return nil
	case "application/x-www-form-urlencoded":
		if err := r.ParseForm(); err != nil {
			return bad(err)
		}
		return formInto(r, dst)
	case "multipart/form-data":
		if err := r.ParseMultipartForm(1 << 20); err != nil {
			return bad(err)
		}
		return formInto(r, dst)
	}
	return newError(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "send application/json or a form")
}

// formInto copies the parsed form into dst's string and bool fields, by
// their json names.
func formInto(r *http.Request, dst any) error {
	v := reflect.ValueOf(dst).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		val, err := formText(r, name)
		if err != nil {
			return err
		}
		switch f.Type.Kind() {
		case reflect.String:
			v.Field(i).SetString(val)
		case reflect.Bool:
			v.Field(i).SetBool(val == "1" || val == "true" || val == "on")
		}
	}
	return nil
}
