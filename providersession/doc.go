// Package providersession turns what a provider returns into the seed's
// ProviderSession (ExistingUser, CreateUser, CreatePersistentKey,
// ProviderUser, Tokens), and keeps the short-lived handshake state of one
// login attempt, a [Flow]. Neither is a broker login session.
//
// # Flows
//
// [FlowStore.Begin] creates a flow with a random ID, OAuth state, PKCE
// verifier and OIDC nonce, and seals it (AES-256-GCM, see
// [github.com/brokerauth/broker/internal/seal]) into a cookie. No process
// memory holds it, so any replica with the same secrets.cookie_keys can
// finish a flow another replica began, and a key rotation keeps flows in
// flight working. [FlowStore.Take] finishes it once: it opens the cookie,
// checks provider (mix-up defence), purpose, expiry and state (in constant
// time), records the flow ID in [storage.FlowStates] so a copied cookie
// cannot finish twice, and deletes the cookie. Every refusal is
// [auth.ErrInvalidRequest] plus an ErrFlow* reason.
//
// # Cookies
//
// Each flow has its own cookie, named after its state:
//
//	<CookieName>_<first 16 base64url characters of SHA-256(state)>
//
// e.g. broker_flow_Xq3…, or __Host-broker_flow_Xq3… when Secure and Path
// is "/" (the __Host- prefix stops a sibling subdomain from planting a flow
// cookie of its own, which would be a login CSRF). Naming by state means two
// tabs, or two providers, can run flows side by side without clobbering
// each other, and the callback finds its cookie from the state query
// parameter alone, before knowing the flow's purpose (login, link and
// reauth share one callback URL). The state's hash, not the state, is in
// the name. The sealed value's additional data is the cookie name, so a
// flow cookie cannot be moved to another name, and nothing else sealed with
// the same keys (provider tokens are sealed with other additional data)
// opens as a flow.
//
// The cookie is HttpOnly, SameSite=Lax (the callback is a top-level
// cross-site GET redirect from the provider; Strict would arrive without
// the cookie), Secure when the public URL is https, Path "/" by default and
// Max-Age the flow's lifetime ([OAuthTTL] 10 minutes, [PasskeyTTL] 5), so an
// abandoned flow's cookie goes away by itself. Inside the seal is compact
// JSON with short field names. A cookie, name and attributes included, may
// be at most [MaxCookieBytes] (4096), the size every browser keeps; Begin
// returns [ErrFlowTooLarge] rather than set a cookie a browser would drop.
// A typical OAuth flow cookie is about 500 bytes; a passkey flow with
// go-webauthn's SessionData about 1 KB, plus 60 to 120 bytes per credential
// in a username login's allowCredentials list (SessionData is embedded as
// JSON, not base64, to save room).
//
// # Passkeys
//
// A passkey ceremony has no OAuth state, but its flow still has one: the
// begin handler returns [Flow.State] to the page together with the WebAuthn
// options, and the page sends it back with the authenticator's response, as
// the handle that finds the flow cookie. Take checks it like an OAuth state;
// there is deliberately no way to skip the check. The WebAuthn challenge in
// [Flow.WebAuthn] is what go-webauthn then verifies the response against.
package providersession
