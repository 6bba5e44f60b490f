package providers_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/providers"
	"golang.org/x/oauth2"
)

func TestErrorKinds(t *testing.T) {
	all := []error{
		providers.ErrProvider, providers.ErrInvalidResponse, providers.ErrIDToken, providers.ErrInvalidGrant,
		providers.ErrInvalidInput, providers.ErrPolicy, providers.ErrUnverifiedEmail, providers.ErrDomainNotAllowed,
	}
	tests := []struct {
		name string
		err  error
		want []error // every sentinel err must match; the others must not
	}{
		{"id token", &providers.ProviderError{Provider: "dex", Op: "verify id token", Err: fmt.Errorf("nonce: %w", providers.ErrIDToken)},
			[]error{providers.ErrIDToken, providers.ErrInvalidResponse, providers.ErrProvider}},
		{"invalid response", fmt.Errorf("x: %w", providers.ErrInvalidResponse),
			[]error{providers.ErrInvalidResponse, providers.ErrProvider}},
		{"upstream 500", &providers.ProviderError{Op: "exchange code", Status: 500},
			[]error{providers.ErrProvider}},
		{"invalid_grant", &providers.ProviderError{Op: "exchange code", Status: 400, Code: "invalid_grant"},
			[]error{providers.ErrInvalidGrant, providers.ErrProvider}},
		{"bad_verification_code", &providers.ProviderError{Op: "exchange code", Code: "bad_verification_code"},
			[]error{providers.ErrInvalidGrant, providers.ErrProvider}},
		{"bad_refresh_token", &providers.ProviderError{Op: "refresh", Code: "bad_refresh_token"},
			[]error{providers.ErrInvalidGrant, providers.ErrProvider}},
		{"invalid input", fmt.Errorf("github: attempt lacks state: %w", providers.ErrInvalidInput),
			[]error{providers.ErrInvalidInput}},
		{"unverified email", &providers.PolicyError{Provider: "github", Reason: "no", Err: providers.ErrUnverifiedEmail},
			[]error{providers.ErrUnverifiedEmail, providers.ErrPolicy}},
		{"domain", &providers.PolicyError{Provider: "google", Reason: "no", Err: providers.ErrDomainNotAllowed},
			[]error{providers.ErrDomainNotAllowed, providers.ErrPolicy}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, s := range all {
				want := false
				for _, w := range tt.want {
					want = want || w == s
				}
				if got := errors.Is(tt.err, s); got != want {
					t.Errorf("errors.Is(%v, %v) = %v; want %v", tt.err, s, got, want)
				}
			}
		})
	}
}

func TestProviderErrorText(t *testing.T) {
	re := &oauth2.RetrieveError{
		Response: &http.Response{StatusCode: 502, Status: "502 Bad Gateway"},
		Body:     []byte(strings.Repeat("<html>", 1000)),
	}
	err := &providers.ProviderError{Provider: "github", Op: "exchange code", Status: 502, RetryAfter: 30 * time.Second, Err: re}
	if got, want := err.Error(), "github: exchange code: status 502: retry after 30s"; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
	var got *oauth2.RetrieveError
	if !errors.As(err, &got) {
		t.Errorf("the RetrieveError is not reachable with errors.As")
	}
	err = &providers.ProviderError{Provider: "dex", Op: "discover", Err: context.DeadlineExceeded}
	if got, want := err.Error(), "dex: discover: context deadline exceeded"; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cause not reachable")
	}
	err = &providers.ProviderError{Provider: "github", Op: "exchange code", Code: "bad_verification_code", Description: "The code passed is incorrect or expired."}
	if got, want := err.Error(), "github: exchange code: bad_verification_code (The code passed is incorrect or expired.)"; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
	pe := &providers.PolicyError{Provider: "github", Reason: "github account has no verified primary email", Err: providers.ErrUnverifiedEmail}
	if got, want := pe.Error(), "github: github account has no verified primary email"; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
}

func TestDepsWithDefaults(t *testing.T) {
	d := providers.Deps{}.WithDefaults()
	if d.HTTPClient == nil || d.HTTPClient == http.DefaultClient || d.HTTPClient.Timeout != providers.DefaultHTTPTimeout {
		t.Errorf("HTTPClient = %+v; want a new client with the default timeout", d.HTTPClient)
	}
	if d.Logger == nil || d.Now == nil {
		t.Errorf("Logger or Now left nil")
	}
	c := &http.Client{}
	if got := (providers.Deps{HTTPClient: c}).WithDefaults().HTTPClient; got != c {
		t.Errorf("WithDefaults replaced the given client")
	}
}
