// Package upstream holds the HTTP plumbing the provider implementations
// share: turning upstream failures into *providers.ProviderError, reading
// JSON APIs with a bearer token, Retry-After and GitHub rate-limit headers,
// and checking an Attempt before anything is sent.
package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/brokerauth/broker/providers"
	"golang.org/x/oauth2"
)

// MaxBody caps how much of an upstream answer is read.
const MaxBody = 1 << 20

// maxDescription caps upstream-provided text copied into errors and logs.
const maxDescription = 200

// CheckAttempt returns a providers.ErrInvalidInput error when a lacks a
// field the flow depends on. An empty state, verifier or nonce is never
// treated as "skip the check".
func CheckAttempt(provider string, a providers.Attempt, needNonce bool) error {
	var missing []string
	if a.State == "" {
		missing = append(missing, "state")
	}
	if n := len(a.CodeVerifier); n < 43 || n > 128 {
		// RFC 7636 §4.1: 43 to 128 characters.
		missing = append(missing, "code verifier (43 to 128 characters)")
	}
	if needNonce && a.Nonce == "" {
		missing = append(missing, "nonce")
	}
	if a.RedirectURL == "" {
		missing = append(missing, "redirect url")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s: attempt lacks %s: %w", provider, strings.Join(missing, ", "), providers.ErrInvalidInput)
	}
	return nil
}

// TokenError converts an error from x/oauth2 (code exchange or refresh) into
// a *providers.ProviderError with the status, OAuth error code and
// Retry-After of the answer.
func TokenError(provider, op string, err error, now time.Time) error {
	pe := &providers.ProviderError{Provider: provider, Op: op, Err: err}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		pe.Code = re.ErrorCode
		pe.Description = truncate(re.ErrorDescription)
		if re.Response != nil {
			if s := re.Response.StatusCode; s < 200 || s > 299 {
				pe.Status = s
			}
			pe.RetryAfter = RetryAfter(re.Response.Header, now)
			if pe.Code == "" && RateLimited(re.Response.StatusCode, re.Response.Header) {
				pe.Code = "rate_limited"
			}
		}
	}
	return pe
}

// RateLimited reports whether an answer is a rate limit: 429, or 403 with
// GitHub's X-RateLimit-Remaining: 0 or a Retry-After (GitHub's secondary
// rate limit).
func RateLimited(status int, h http.Header) bool {
	switch status {
	case http.StatusTooManyRequests:
		return true
	case http.StatusForbidden:
		return h.Get("X-RateLimit-Remaining") == "0" || h.Get("Retry-After") != ""
	}
	return false
}

// RetryAfter reads how long the upstream asked us to wait: Retry-After
// (seconds or an HTTP date, RFC 9110 §10.2.3), else GitHub's
// X-RateLimit-Reset (Unix seconds) when X-RateLimit-Remaining is 0. It
// returns 0 when the answer does not say.
func RetryAfter(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.ParseInt(v, 10, 64); err == nil && secs > 0 {
			return time.Duration(secs) * time.Second
		}
		if t, err := http.ParseTime(v); err == nil && t.After(now) {
			return t.Sub(now).Round(time.Second)
		}
	}
	if h.Get("X-RateLimit-Remaining") == "0" {
		if reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); err == nil {
			if d := time.Unix(reset, 0).Sub(now); d > 0 {
				return d.Round(time.Second)
			}
		}
	}
	return 0
}

// Client reads JSON APIs of one provider.
type Client struct {
	HTTP     *http.Client
	Provider string
	Now      func() time.Time
}

// GetJSON sends GET url with the access token and decodes a 200 JSON answer
// into v. Every failure is a *providers.ProviderError for op: no answer,
// a non-200 status (with rate-limit details), or a body that is not JSON
// (wrapping providers.ErrInvalidResponse). It returns the answer's header.
func (c Client) GetJSON(ctx context.Context, op, url, accessToken, accept string, v any) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, &providers.ProviderError{Provider: c.Provider, Op: op, Err: err}
	}
	req.Header.Set("Accept", accept)
	if accessToken != "" {
		req.Header.Set("Authorization", "Bearer "+accessToken)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, &providers.ProviderError{Provider: c.Provider, Op: op, Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
	if err != nil {
		return nil, &providers.ProviderError{Provider: c.Provider, Op: op, Status: nonOK(resp.StatusCode), Err: err}
	}
	if resp.StatusCode != http.StatusOK {
		pe := &providers.ProviderError{
			Provider:    c.Provider,
			Op:          op,
			Status:      resp.StatusCode,
			RetryAfter:  RetryAfter(resp.Header, c.Now()),
			Description: describe(body),
		}
		if RateLimited(resp.StatusCode, resp.Header) {
			pe.Code = "rate_limited"
		}
		return nil, pe
	}
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != "" && ct != "application/json" && !strings.HasSuffix(ct, "+json") {
		return nil, &providers.ProviderError{Provider: c.Provider, Op: op,
			Err: fmt.Errorf("content type %q is not json: %w", ct, providers.ErrInvalidResponse)}
	}
	if err := json.Unmarshal(body, v); err != nil {
		return nil, &providers.ProviderError{Provider: c.Provider, Op: op,
			Err: fmt.Errorf("decode answer: %v: %w", err, providers.ErrInvalidResponse)}
	}
	return resp.Header, nil
}

func nonOK(status int) int {
	if status >= 200 && status <= 299 {
		return 0
	}
	return status
}

// describe extracts a short message from an error answer: GitHub's and
// many APIs' {"message": ...}, OAuth's {"error", "error_description"}.
func describe(body []byte) string {
	var m struct {
		Message          string `json:"message"`
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if json.Unmarshal(body, &m) != nil {
		return ""
	}
	switch {
	case m.Message != "":
		return truncate(m.Message)
	case m.ErrorDescription != "":
		return truncate(m.Error + ": " + m.ErrorDescription)
	default:
		return truncate(m.Error)
	}
}

func truncate(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxDescription {
		s = s[:maxDescription] + "…"
	}
	return s
}

// WithHeader returns a copy of c whose requests carry header k: v unless
// they set it themselves. GitHub's token endpoint answers
// application/x-www-form-urlencoded unless asked for JSON.
func WithHeader(c *http.Client, k, v string) *http.Client {
	cp := *c
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cp.Transport = headerTransport{base: base, key: k, value: v}
	return &cp
}

type headerTransport struct {
	base       http.RoundTripper
	key, value string
}

func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get(t.key) != "" {
		return t.base.RoundTrip(r)
	}
	r2 := r.Clone(r.Context())
	r2.Header.Set(t.key, t.value)
	return t.base.RoundTrip(r2)
}

// Scopes splits a granted-scope string: RFC 6749 separates with spaces,
// GitHub with commas.
func Scopes(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' })
}

// GrantedScope returns the scope extra of a token response, and whether the
// answer had one at all.
func GrantedScope(t *oauth2.Token) (string, bool) {
	switch v := t.Extra("scope").(type) {
	case string:
		return v, true
	case []any: // some servers answer a JSON array
		parts := make([]string, 0, len(v))
		for _, p := range v {
			if s, ok := p.(string); ok {
				parts = append(parts, s)
			}
		}
		return strings.Join(parts, " "), true
	}
	return "", false
}
