// Package auth is the broker's Lucia-style core (Lucia v2's Auth API in Go
// form): users, keys and sessions over a [storage.Store], session cookies
// and bearer tokens, request-origin checks, password hashing, and net/http
// middleware that puts the validated session into the request context.
//
// Semantics follow Lucia exactly:
//   - User ids are 15 characters of [a-z0-9], session tokens 40, both from
//     crypto/rand. The database keeps only the hex SHA-256 of a session
//     token as the session's id.
//   - A key's id is "providerId:providerUserId"; the provider user id may
//     contain colons (split on the first one only).
//   - A session is active until ActiveExpires (default 24h after creation or
//     reset), idle until IdleExpires (ActiveExpires + 14 days), then dead.
//     ValidateSession resets an idle session and reports Fresh;
//     GetSession never resets. Dead and unknown sessions are
//     AUTH_INVALID_SESSION_ID.
//   - Invalidate* and DeleteDeadUserSessions succeed whatever the input.
//
// Decisions where Lucia is silent:
//   - Validation writes a session's last-seen time at most once per
//     Options.TouchInterval (default 5 minutes), so a busy session is not
//     written on every request; a reset always writes.
//   - UseKey rehashes a password whose stored hash verified but is not the
//     current argon2id parameters, before it returns.
//   - Errors are [*Error] sentinels compared with errors.Is; [CodeOf] gives
//     the code string HTTP clients see. A username or verified email taken
//     by another user is [ErrConflict] ("CONFLICT", HTTP 409).
package auth
