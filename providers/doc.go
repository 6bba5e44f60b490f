// Package providers is the plugin contract between the broker and its
// upstream identity providers (GitHub, Google, any OpenID Connect issuer).
//
// A provider does two things: build the URL that starts a login
// ([Provider.AuthCodeURL]) and redeem the authorization code that comes back
// for an [Identity] ([Provider.Exchange]). It never sees an *http.Request: the
// server reads the callback once, checks the sealed flow state, turns an
// upstream error= parameter into auth.ErrInvalidRequest and hands the code
// over. Providers never import auth or storage; providersession turns an
// [Identity] into the ProviderSession of SPEC §4.
//
// Each provider package exports a Config that implements [Config]:
// Validate is fast and does no I/O (it is all `broker check-config` runs);
// Open may do I/O and returns the [Provider]. Every dependency, including the
// HTTP client and the clock, comes in through [Deps]; there is no package
// state.
//
// Optional abilities are one-method interfaces checked with a type
// assertion where they are used: [Refresher] (renew provider tokens) and
// [Issuer] (the issuer identifier for the RFC 9207 iss check).
//
// # Errors
//
// Callers branch on errors with errors.Is and errors.As:
//
//	ErrInvalidInput     400 AUTH_INVALID_REQUEST  the caller passed an incomplete Attempt or an empty code
//	ErrInvalidGrant     400 AUTH_INVALID_REQUEST  the upstream refused the code (reused, expired, forged);
//	                                              also matches ErrProvider
//	ErrProvider         502 PROVIDER_ERROR        the upstream failed, timed out or answered nonsense
//	ErrInvalidResponse  502 PROVIDER_ERROR        the upstream answered something inconsistent; matches ErrProvider
//	ErrIDToken          502 PROVIDER_ERROR        the id token failed validation; matches ErrInvalidResponse
//	ErrPolicy           403 FORBIDDEN             the identity is refused by provider policy (*PolicyError)
//	ErrUnverifiedEmail  403 FORBIDDEN             no verified email; matches ErrPolicy
//	ErrDomainNotAllowed 403 FORBIDDEN             Google hosted domain mismatch; matches ErrPolicy
//
// Failures that involve an upstream HTTP exchange are a [*ProviderError],
// which carries the HTTP status, the OAuth error code and any Retry-After.
// Error strings never contain tokens, codes or client secrets.
package providers
