package providers

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// kindError is a sentinel that also matches a broader sentinel, so that
// errors.Is(ErrIDToken-wrapping error, ErrProvider) holds without copying
// sentinels or joining them at every call site.
type kindError struct {
	msg    string
	parent error
}

func (e *kindError) Error() string { return e.msg }

func (e *kindError) Is(target error) bool {
	return e.parent != nil && errors.Is(e.parent, target)
}

// The sentinel errors. Match them with errors.Is; the HTTP answer the server
// should give is in each comment.
var (
	// ErrProvider means the upstream failed: it was unreachable, timed out,
	// answered 5xx or rate-limited us, refused our client credentials, or
	// answered nonsense. Server: 502 PROVIDER_ERROR with a "try again"
	// page; details go to the log. Most such errors are a [*ProviderError].
	ErrProvider error = &kindError{msg: "providers: upstream provider failed"}

	// ErrInvalidResponse means the upstream answered, but with something
	// malformed or inconsistent (a token response without an id token, a
	// user without an id, a userinfo subject that differs from the id
	// token's). It matches [ErrProvider]. Server: 502 PROVIDER_ERROR.
	ErrInvalidResponse error = &kindError{msg: "providers: invalid response from provider", parent: ErrProvider}

	// ErrIDToken means the OpenID Connect id token failed validation: bad
	// or unknown signature, alg none or HS256, wrong iss or aud, expired,
	// missing iat or sub, nonce or at_hash mismatch. A provider that does
	// this is broken or hostile (or a token was substituted), not the user's
	// fault. It matches [ErrInvalidResponse] and [ErrProvider]. Server: 502
	// PROVIDER_ERROR, and log it loudly.
	ErrIDToken error = &kindError{msg: "providers: invalid id token", parent: ErrInvalidResponse}

	// ErrInvalidGrant means the upstream refused the authorization code or
	// refresh token: invalid_grant (RFC 6749 §5.2), or GitHub's
	// bad_verification_code / bad_refresh_token. For a login this is a
	// replayed, expired or forged callback; for [Refresher] the stored
	// refresh token is dead and should be dropped. The error is also a
	// [*ProviderError] matching [ErrProvider], so check ErrInvalidGrant
	// first. Server: 400 AUTH_INVALID_REQUEST for a login.
	ErrInvalidGrant error = &kindError{msg: "providers: authorization grant refused by provider"}

	// ErrInvalidInput means the caller passed something unusable: an
	// [Attempt] without state, code verifier, redirect URL or (OpenID
	// Connect) nonce, an empty code, or an empty refresh token. Nothing was
	// sent upstream. Server: 400 AUTH_INVALID_REQUEST.
	ErrInvalidInput error = &kindError{msg: "providers: invalid input"}

	// ErrPolicy means the upstream identity is genuine but provider policy
	// refuses it. Such errors are a [*PolicyError] whose Reason can be shown
	// to the user. Server: 403 FORBIDDEN with a clear page; nothing is
	// created.
	ErrPolicy error = &kindError{msg: "providers: sign-in refused by provider policy"}

	// ErrUnverifiedEmail means the identity has no verified email where the
	// provider's settings require one (a GitHub account without a verified
	// primary address). It matches [ErrPolicy]. Server: 403 FORBIDDEN.
	ErrUnverifiedEmail error = &kindError{msg: "providers: no verified email", parent: ErrPolicy}

	// ErrDomainNotAllowed means the identity's domain is not the one
	// required (Google's hd claim against google.Config.HostedDomain). It
	// matches [ErrPolicy]. Server: 403 FORBIDDEN.
	ErrDomainNotAllowed error = &kindError{msg: "providers: domain not allowed", parent: ErrPolicy}
)

// ProviderError describes a failed exchange with an upstream provider. It
// matches [ErrProvider] with errors.Is, and [ErrInvalidGrant] when the
// upstream refused the grant. Read it with errors.As for logs and for
// Retry-After. Err is the cause (an *oauth2.RetrieveError, a
// context.DeadlineExceeded, a *url.Error, or a wrapped [ErrIDToken] /
// [ErrInvalidResponse]) and stays inspectable with errors.Is and errors.As.
type ProviderError struct {
	// Provider is the provider id ("github", "google", an OIDC instance).
	Provider string
	// Op is what was being done: "discover", "exchange code", "refresh",
	// "verify id token", "get user", "list emails", "list orgs", "userinfo".
	Op string
	// Status is the upstream HTTP status when it was not a success; 0 when
	// there was no answer (network error, timeout) or the answer was a 2xx
	// that made no sense (GitHub answers token errors with 200).
	Status int
	// Code is the OAuth error code (RFC 6749 §5.2) when the upstream sent
	// one: "invalid_grant", GitHub's "bad_verification_code",
	// "incorrect_client_credentials", "rate_limited" for a rate limit.
	Code string
	// Description is the upstream's error_description or message, for logs.
	Description string
	// RetryAfter is how long the upstream asked us to wait (Retry-After, or
	// GitHub's X-RateLimit-Reset), 0 when it did not say. Pass it on as
	// the Retry-After of a 502 or 503.
	RetryAfter time.Duration
	// Err is the underlying cause, possibly nil.
	Err error
}

func (e *ProviderError) Error() string {
	var b strings.Builder
	if e.Provider != "" {
		b.WriteString(e.Provider)
		b.WriteString(": ")
	}
	b.WriteString(e.Op)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": status %d", e.Status)
	}
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, " (%s)", e.Description)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, ": retry after %s", e.RetryAfter)
	}
	// An *oauth2.RetrieveError without a code prints the whole response
	// body (up to 1 MB of HTML); Status, Code and Description above already
	// say what matters.
	var re *oauth2.RetrieveError
	if e.Err != nil && !errors.As(e.Err, &re) {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *ProviderError) Unwrap() error { return e.Err }

// Is reports whether target is [ErrProvider], or [ErrInvalidGrant] when
// Code says the upstream refused the grant.
func (e *ProviderError) Is(target error) bool {
	switch target {
	case ErrProvider:
		return true
	case ErrInvalidGrant:
		return IsInvalidGrantCode(e.Code)
	}
	return false
}

// IsInvalidGrantCode reports whether an OAuth error code means the code or
// refresh token was refused: RFC 6749's invalid_grant and GitHub's
// bad_verification_code and bad_refresh_token.
func IsInvalidGrantCode(code string) bool {
	switch code {
	case "invalid_grant", "bad_verification_code", "bad_refresh_token":
		return true
	}
	return false
}

// PolicyError is a sign-in refused by provider policy (SPEC §4, STYLE
// "Errors"). It matches [ErrPolicy], and its Err says which rule
// ([ErrUnverifiedEmail], [ErrDomainNotAllowed]). Server: 403 FORBIDDEN.
type PolicyError struct {
	// Provider is the provider id.
	Provider string
	// Reason is a lowercase sentence safe to show the user, e.g. "github
	// account has no verified primary email".
	Reason string
	// Err is the rule's sentinel.
	Err error
}

func (e *PolicyError) Error() string {
	if e.Provider == "" {
		return e.Reason
	}
	return e.Provider + ": " + e.Reason
}

// Unwrap returns the rule's sentinel.
func (e *PolicyError) Unwrap() error { return e.Err }

// Is reports whether target is [ErrPolicy].
func (e *PolicyError) Is(target error) bool { return target == ErrPolicy }
