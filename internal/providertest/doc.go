// Package providertest provides httptest fakes of the upstream identity
// providers: [NewGitHub] (GitHub's OAuth endpoints and REST API, also under
// the GitHub Enterprise /api/v3 prefix) and [NewOIDC] (a complete OpenID
// Provider: discovery, JWKS, authorization, token, userinfo; Google is this
// fake with Google claims such as hd).
//
// The fakes speak the real protocols, so the server's end-to-end tests can
// drive them with a cookie-jar client that follows redirects like a browser:
// the authorization endpoint approves at once and redirects (302) to the
// redirect_uri it was given, with code and state (and, for OIDC with
// IssParam, iss). The token endpoints check client credentials, the redirect
// URI and PKCE S256, and redeem each code once; a replayed code is refused and
// revokes the tokens it had issued (RFC 6749 §4.1.2). A request that lacks
// PKCE or client credentials altogether is a bug in the code under test: the
// fake answers an error and calls t.Errorf.
//
// Knobs simulate failures ([Fault]: a status, a rate limit, or a hang until
// the request is cancelled) and, for OIDC, hostile id tokens
// ([Misbehavior]). Every request is recorded ([GitHub.Requests],
// [OIDC.Requests]). The servers listen on loopback only and are closed by
// t.Cleanup. Nothing here is shared between fakes, so tests may run in
// parallel.
package providertest
