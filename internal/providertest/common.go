package providertest

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Endpoint names a group of a fake's endpoints for [Fault]s.
type Endpoint string

// The endpoints a [Fault] can be set on.
const (
	// Token is the token endpoint (code exchange and refresh).
	Token Endpoint = "token"
	// API is GitHub's REST API: /user, /user/emails, /user/orgs.
	API Endpoint = "api"
	// Discovery is /.well-known/openid-configuration.
	Discovery Endpoint = "discovery"
	// JWKS is the key set.
	JWKS Endpoint = "jwks"
	// Userinfo is the OpenID Connect userinfo endpoint.
	Userinfo Endpoint = "userinfo"
)

// Fault makes an endpoint fail. The zero Fault means "behave".
type Fault struct {
	// Status answers every request with this status and a JSON error body
	// (e.g. 500, 502, 503).
	Status int
	// RateLimit answers as a rate limit asking to wait this long: 429 with
	// Retry-After at token endpoints, GitHub's 403 with
	// X-RateLimit-Remaining: 0 and X-RateLimit-Reset on its API.
	RateLimit time.Duration
	// Hang never answers: the handler waits until the request is cancelled
	// (the client's ctx or timeout) or the fake is closed.
	Hang bool
}

// Request is one request a fake received. Form is the parsed query and
// POST body; it includes client secrets and codes (this is a test fake).
type Request struct {
	Method string
	Path   string
	Form   url.Values
	Header http.Header
}

func record(r *http.Request) Request {
	_ = r.ParseForm()
	form := url.Values{}
	for k, v := range r.Form {
		form[k] = append([]string(nil), v...)
	}
	return Request{Method: r.Method, Path: r.URL.Path, Form: form, Header: r.Header.Clone()}
}

// randomToken returns n random bytes, base64url-encoded.
func randomToken(prefix string) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// s256 is the PKCE S256 challenge of verifier (RFC 7636 §4.2).
func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// clientCredentials reads client_secret_basic or client_secret_post
// credentials. method is "basic", "post", "both" (not allowed, RFC 6749
// §2.3) or "" when none were sent.
func clientCredentials(r *http.Request) (id, secret, method string) {
	if u, p, ok := r.BasicAuth(); ok {
		// RFC 6749 §2.3.1: both are form-urlencoded before Basic encoding.
		id, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
		method = "basic"
	}
	if r.PostForm.Get("client_secret") != "" {
		if method != "" {
			return id, secret, "both"
		}
		return r.PostForm.Get("client_id"), r.PostForm.Get("client_secret"), "post"
	}
	return id, secret, method
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
	}
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// redirectBack sends the browser to redirectURI with params added to its
// query, as an authorization endpoint does (RFC 6749 §4.1.2).
func redirectBack(w http.ResponseWriter, r *http.Request, redirectURI string, params url.Values) {
	u, err := url.Parse(redirectURI)
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// bearer returns the access token of an Authorization: Bearer (or GitHub's
// "token") header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	for _, p := range []string{"Bearer ", "bearer ", "token "} {
		if strings.HasPrefix(h, p) {
			return strings.TrimSpace(h[len(p):])
		}
	}
	return ""
}

// hang blocks until the request is cancelled or the fake closes.
func hang(r *http.Request, closed <-chan struct{}) {
	select {
	case <-r.Context().Done():
	case <-closed:
	}
}

func retryAfterSeconds(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}
