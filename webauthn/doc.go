// Package webauthn implements passkeys (SPEC §5) over go-webauthn: sign-up of
// a new account with only a username (and optionally an email) and a
// passkey, adding passkeys to a signed-in user, login by username or
// usernameless (discoverable credentials, also with conditional UI), and the
// user's list of passkeys (list, rename, remove).
//
// # Ceremonies
//
// Every ceremony has two steps, Begin* and Finish*. Begin returns a
// [Ceremony]: go-webauthn's CredentialCreation or CredentialAssertion (the
// JSON a page hands to PublicKeyCredential.parseCreationOptionsFromJSON or
// parseRequestOptionsFromJSON), the flow's state, and a flow cookie. The
// ceremony's state (go-webauthn's SessionData, and for a sign-up the new
// account's username and email) lives only in that cookie, sealed by
// [providersession.FlowStore] with [providersession.PasskeyTTL] (5 minutes):
// any replica can finish a ceremony another began, and a ceremony finishes
// at most once (the flow id is recorded as consumed). The page sends the
// state back with the authenticator's response (PublicKeyCredential.toJSON())
// and Finish takes the flow by it. A sign-up writes nothing before its
// Finish succeeds.
//
// # Users and credentials
//
// [auth.User] does not implement go-webauthn's User interface; an unexported
// adapter does, holding the user, the user's WebAuthn handle (64 random
// bytes, stored once per user in users.webauthn_handle and set with the
// user's first passkey) and the user's credentials. Credentials are stored
// column by column as [storage.Authenticator] (the Auth.js authenticator:
// credential id, public key, counter, backup flags, device type, transports,
// AAGUID, attestation format in attestation_type, the user's label, times).
// A passkey is also a Lucia key "webauthn:<base64url credential id>", so
// auth.GetAllUserKeys lists it and login goes through auth.UseKey.
//
// # Decisions
//
//   - New registrations require a resident key (discoverable credential), so
//     every passkey works usernameless and with autofill.
//   - User verification is the configured requirement (default required),
//     for registration and login alike.
//   - Sign count: a login whose counter is not greater than the stored one is
//     refused as a cloned authenticator (go-webauthn's CloneWarning), except
//     when both are 0 (synced passkeys never count). The stored counter is
//     left as it was.
//   - A login by username for a name that has no passkeys answers
//     AUTH_INVALID_KEY_ID at once: usernames are not secret here (a sign-up
//     with a taken name answers 409 anyway).
//   - Removing the user's last way to sign in (the only key left) is refused
//     with [ErrLastSignInMethod].
//   - Adding and removing a passkey need a recent authentication
//     ([auth.Auth.RequireRecentAuth]); renaming does not.
//   - Writes that span tables: a sign-up creates user, handle, key and
//     authenticator in one transaction, and adding a passkey its key and
//     authenticator in one (storage.Authenticators.CreatePasskey).
//     Removing deletes the authenticator first (so it cannot sign in any
//     more), then the key.
package webauthn
