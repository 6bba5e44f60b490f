package auth

import "errors"

// Error is an authentication failure with a stable, Lucia-compatible code.
// Compare with errors.Is against the sentinels below; read the code of any
// error with [CodeOf].
type Error struct {
	Code string
	msg  string
}

func (e *Error) Error() string { return "auth: " + e.msg }

// The sentinel errors, one per Lucia error code. The code string is what
// HTTP clients see.
var (
	// ErrInvalidUserID: the user does not exist.
	ErrInvalidUserID = &Error{"AUTH_INVALID_USER_ID", "invalid user id"}
	// ErrInvalidSessionID: the session token is malformed, unknown or dead.
	ErrInvalidSessionID = &Error{"AUTH_INVALID_SESSION_ID", "invalid session id"}
	// ErrInvalidKeyID: no key with that id.
	ErrInvalidKeyID = &Error{"AUTH_INVALID_KEY_ID", "invalid key id"}
	// ErrInvalidPassword: wrong or missing password, or a password given
	// for a key that has none, or a new password the rules refuse.
	ErrInvalidPassword = &Error{"AUTH_INVALID_PASSWORD", "invalid password"}
	// ErrOutdatedPassword: the stored hash uses a scheme the broker cannot
	// verify (e.g. bcrypt from an early Lucia beta); the user must reset it.
	ErrOutdatedPassword = &Error{"AUTH_OUTDATED_PASSWORD", "outdated password hash"}
	// ErrDuplicateKeyID: a key with that id already exists.
	ErrDuplicateKeyID = &Error{"AUTH_DUPLICATE_KEY_ID", "duplicate key id"}
	// ErrInvalidRequest: the request failed a protocol check (origin, flow
	// state, malformed input).
	ErrInvalidRequest = &Error{"AUTH_INVALID_REQUEST", "invalid request"}
	// ErrReauthenticationRequired: the operation needs a session that was
	// created or re-authenticated recently.
	ErrReauthenticationRequired = &Error{"AUTH_REAUTHENTICATION_REQUIRED", "recent authentication required"}
)

// CodeOf returns the Lucia code carried by err, or "UNKNOWN_ERROR" when err
// is not (or does not wrap) an [*Error].
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return "UNKNOWN_ERROR"
}
