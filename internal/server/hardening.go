// Hardening against hostile input and for browsers: request bodies of
// unknown length, strict JSON and form text, and page headers on every
// HTML answer.

package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/brokerauth/broker/auth"
)

// bufferBody reads a request body of unknown length (chunked, or HTTP/2
// without Content-Length) through the body limit already set on it, and
// puts it back as a body of known length. A body past the limit is then
// refused (413) whether or not the handler reads it, exactly as one whose
// Content-Length says so; a logout or revoke-all, which never read their
// bodies, would otherwise go ahead. A body that cannot be read (a broken
// chunked encoding) is 400 AUTH_INVALID_REQUEST. The cost is at most
// MaxBodyBytes per request, what a handler reading it would hold anyway.
//
// limitBody calls it only for a request that has a body.
func bufferBody(r *http.Request) error {
	if r.ContentLength >= 0 {
		return nil
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return newError(http.StatusRequestEntityTooLarge, CodeRequestTooLarge, "the request body is too large")
		}
		return &httpError{http.StatusBadRequest, auth.ErrInvalidRequest.Code, "the request body could not be read", err}
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	return nil
}

// checkJSON refuses a JSON request body that encoding/json would take
// with silent repairs or choices: bytes that are not UTF-8 (decoded as
// U+FFFD, so "a\xff@x" and "a\xfe@x" would be one address), anything but
// one JSON value, and a member name repeated in an object (where the last
// one wins, matched case-insensitively to struct fields, so that two
// parsers of the same body could disagree about what it says; RFC 8259
// §4, RFC 7493 §2.3). It returns 400 AUTH_INVALID_REQUEST.
func checkJSON(b []byte) error {
	refuse := func(msg string) error {
		return newError(http.StatusBadRequest, auth.ErrInvalidRequest.Code, msg)
	}
	switch {
	case !utf8.Valid(b):
		return refuse("the request body is not valid UTF-8")
	case !json.Valid(b):
		return refuse("the request body is not valid JSON")
	case repeatedName(b):
		return refuse("a member name is repeated in the request body")
	}
	return nil
}

// repeatedName reports whether an object anywhere in the valid JSON b has
// two members whose names are equal under Unicode case folding (as
// encoding/json matches them to struct fields).
func repeatedName(b []byte) bool {
	type level struct {
		names    map[string]bool // nil for an array
		nameNext bool            // in an object: the next string is a member name
	}
	var stack []level
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := dec.Token()
		if err != nil {
			return false // io.EOF: b is valid JSON (checkJSON), so nothing else
		}
		var cur *level
		if n := len(stack); n > 0 && stack[n-1].names != nil {
			cur = &stack[n-1]
		}
		d, isDelim := tok.(json.Delim)
		if isDelim && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		if name, ok := tok.(string); ok && cur != nil && cur.nameNext {
			k := foldName(name)
			if cur.names[k] {
				return true
			}
			cur.names[k] = true
			cur.nameNext = false
			continue
		}
		// A value: a scalar, or the start of an array or object. In an
		// object, a name comes next.
		if cur != nil {
			cur.nameNext = true
		}
		switch {
		case isDelim && d == '{':
			stack = append(stack, level{names: map[string]bool{}, nameNext: true})
		case isDelim && d == '[':
			stack = append(stack, level{})
		}
	}
}

// foldName maps s to one representative of its case-folding class: each
// rune becomes the smallest rune of its Unicode simple-folding orbit, so
// that foldName(a) == foldName(b) exactly when strings.EqualFold(a, b).
func foldName(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		low := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			low = min(low, f)
		}
		b.WriteRune(low)
	}
	return b.String()
}

// formText returns the posted form value name, refusing (400
// AUTH_INVALID_REQUEST) one that is not UTF-8: percent-encoding lets a
// form carry any bytes.
func formText(r *http.Request, name string) (string, error) {
	v := r.PostForm.Get(name)
	if !utf8.ValidString(v) {
		return "", newError(http.StatusBadRequest, auth.ErrInvalidRequest.Code, "the form is not valid UTF-8")
	}
	return v, nil
}

// optionalEmail checks an optional email address (a passkey sign-up's) by
// the rules of every other address the broker takes (normalizeEmail):
// blank is fine, anything else must be a plain address.
func optionalEmail(s string) error {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	if _, ok := normalizeEmail(s); !ok {
		return newError(http.StatusBadRequest, auth.ErrInvalidRequest.Code, "enter a valid email address, or none")
	}
	return nil
}

// htmlHeaders sets the page headers (securityHeaders) on an HTML answer
// that has none yet.
func htmlHeaders(h http.Header) {
	if h.Get("Content-Security-Policy") == "" && strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		setPageHeaders(h)
	}
}
