package upstream

import (
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/brokerauth/broker/providers"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		h    http.Header
		want time.Duration
	}{
		{"none", http.Header{}, 0},
		{"seconds", http.Header{"Retry-After": {"120"}}, 2 * time.Minute},
		{"date", http.Header{"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)}}, 90 * time.Second},
		{"past date", http.Header{"Retry-After": {now.Add(-time.Minute).Format(http.TimeFormat)}}, 0},
		{"garbage", http.Header{"Retry-After": {"soon"}}, 0},
		{"github reset", http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {strconv.FormatInt(now.Add(time.Hour).Unix(), 10)}}, time.Hour},
		{"github not exhausted", http.Header{"X-Ratelimit-Remaining": {"10"}, "X-Ratelimit-Reset": {strconv.FormatInt(now.Add(time.Hour).Unix(), 10)}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RetryAfter(tt.h, now); got != tt.want {
				t.Errorf("RetryAfter = %v; want %v", got, tt.want)
			}
		})
	}
}

func TestRateLimited(t *testing.T) {
	for _, tt := range []struct {
		status int
		h      http.Header
		want   bool
	}{
		{429, http.Header{}, true},
		{403, http.Header{"X-Ratelimit-Remaining": {"0"}}, true},
		{403, http.Header{"Retry-After": {"60"}}, true},
		{403, http.Header{}, false},
		{500, http.Header{"Retry-After": {"60"}}, false},
	} {
		if got := RateLimited(tt.status, tt.h); got != tt.want {
			t.Errorf("RateLimited(%d, %v) = %v; want %v", tt.status, tt.h, got, tt.want)
		}
	}
}

func TestTokenError(t *testing.T) {
	re := &oauth2.RetrieveError{
		Response:         &http.Response{StatusCode: 400, Header: http.Header{}},
		ErrorCode:        "invalid_grant",
		ErrorDescription: "code\nreused",
	}
	err := TokenError("dex", "exchange code", re, time.Now())
	var pe *providers.ProviderError
	if !errors.As(err, &pe) {
		t.Fatalf("TokenError = %T", err)
	}
	want := &providers.ProviderError{Provider: "dex", Op: "exchange code", Status: 400, Code: "invalid_grant", Description: "code reused", Err: re}
	if diff := cmp.Diff(want, pe); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if !errors.Is(err, providers.ErrInvalidGrant) {
		t.Errorf("not ErrInvalidGrant")
	}

	// GitHub: 200 with an error code.
	re = &oauth2.RetrieveError{Response: &http.Response{StatusCode: 200}, ErrorCode: "bad_verification_code"}
	if err := TokenError("github", "exchange code", re, time.Now()); !errors.As(err, &pe) || pe.Status != 0 || pe.Code != "bad_verification_code" {
		t.Errorf("TokenError = %v; want status 0, bad_verification_code", err)
	}
}

func TestScopes(t *testing.T) {
	if diff := cmp.Diff([]string{"read:user", "user:email", "read:org"}, Scopes("read:user,user:email read:org")); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	tok := (&oauth2.Token{}).WithExtra(map[string]any{"scope": []any{"a", "b"}})
	if s, ok := GrantedScope(tok); !ok || s != "a b" {
		t.Errorf("GrantedScope = %q, %v", s, ok)
	}
	if _, ok := GrantedScope(&oauth2.Token{}); ok {
		t.Errorf("GrantedScope of a token without scope reports one")
	}
}
