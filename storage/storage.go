// Package storage defines what the broker keeps: users, keys (Lucia keys, which
// are Auth.js accounts), sessions, passkey authenticators, email verification
// tokens, consumed flow states, rate-limit counters and the audit log, and
// the [Store] interface every backend implements.
//
// The package imports nothing else of the broker. Its one implementation lives
// in [github.com/brokerauth/broker/storage/sqlstore] (PostgreSQL and SQLite);
// its conformance suite in [github.com/brokerauth/broker/storage/storagetest].
//
// Mapping of the Auth.js adapter contract onto Store:
//
//	createUser                 Users.CreateUser (optionally with its first key, in one transaction)
//	getUser                    Users.GetUser
//	getUserByEmail             Users.GetUserByEmail (the verified owner of the address)
//	getUserByAccount           Users.GetUserByKey
//	updateUser                 Users.UpdateUser
//	deleteUser                 Users.DeleteUser (keys, sessions, authenticators with it)
//	linkAccount                Keys.CreateKey
//	unlinkAccount              Keys.DeleteKey
//	getAccount                 Keys.GetKey
//	createSession              Sessions.CreateSession
//	getSessionAndUser          Sessions.GetSessionAndUser (one join)
//	updateSession              Sessions.TouchSession, Sessions.UpdateSessionAttributes
//	deleteSession              Sessions.DeleteSession
//	createVerificationToken    VerificationTokens.CreateVerificationToken
//	useVerificationToken       VerificationTokens.UseVerificationToken (atomic, single use)
//	createAuthenticator        Authenticators.CreateAuthenticator
//	getAuthenticator           Authenticators.GetAuthenticator
//	listAuthenticatorsByUserId Authenticators.ListAuthenticatorsByUserID
//	updateAuthenticatorCounter Authenticators.UpdateAuthenticatorCounter
//
// Times are stored in UTC with microsecond precision; callers pass the times
// to compare against (no backend reads its own clock), so tests drive every
// expiry rule with an injected clock.
package storage

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound reports that the row asked for does not exist. Operations that
// reference a user (CreateKey, CreateSession, CreateAuthenticator) also
// return it when that user does not exist.
var ErrNotFound = errors.New("storage: not found")

// ErrAlreadyExists reports a uniqueness conflict. The returned error is a
// [*ConflictError] naming what collided; errors.Is(err, ErrAlreadyExists)
// holds for all of them.
var ErrAlreadyExists = errors.New("storage: already exists")

// ErrConsumed reports that a flow state was already used. (A used
// verification token is gone: UseVerificationToken reports ErrNotFound.)
var ErrConsumed = errors.New("storage: already consumed")

// Conflict fields reported by [ConflictError].
const (
	ConflictUserID     = "user_id"
	ConflictUsername   = "username"
	ConflictEmail      = "email" // a verified email already owned by another user
	ConflictKey        = "key"
	ConflictCredential = "credential"
	ConflictSession    = "session"
	// ConflictWebAuthnHandle is a WebAuthn user handle held by another user.
	ConflictWebAuthnHandle = "webauthn_handle"
	// ConflictVerificationToken is a verification token (identifier and
	// token hash) that exists.
	ConflictVerificationToken = "verification_token"
)

// ConflictError is a uniqueness conflict on Field (one of the Conflict*
// constants). It matches [ErrAlreadyExists] with errors.Is.
type ConflictError struct {
	Field string
	Err   error // the driver's error, for logs
}

func (e *ConflictError) Error() string { return "storage: " + e.Field + " already exists" }

// Is reports whether target is [ErrAlreadyExists].
func (e *ConflictError) Is(target error) bool { return target == ErrAlreadyExists }

// Unwrap returns the driver's error.
func (e *ConflictError) Unwrap() error { return e.Err }

// User is a person who can sign in. Optional columns are pointers: nil is NULL.
type User struct {
	ID              string
	Username        *string // unique, compared case-insensitively
	Email           *string // stored lower-cased
	EmailVerifiedAt *time.Time
	Name            *string
	Image           *string
	// Attributes are the deployment's own fields, stored as a JSON object.
	Attributes map[string]any
	// WebAuthnHandle is the user's random WebAuthn user handle, set once.
	WebAuthnHandle []byte
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Key is a way to sign in as a user: a Lucia key, an Auth.js account. ID is
// "provider:providerUserID".
type Key struct {
	ID             string
	UserID         string
	Provider       string
	ProviderUserID string
	HashedPassword *string
	// OAuth tokens. The token strings are stored as given; the layer above
	// encrypts them before they get here.
	AccessToken  *string
	RefreshToken *string
	IDToken      *string
	TokenExpiry  *time.Time
	Scope        *string
	TokenType    *string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// Session is a signed-in browser or client. ID is the hex SHA-256 of the
// session token; the token itself is never stored.
type Session struct {
	ID            string
	UserID        string
	ActiveExpires time.Time
	IdleExpires   time.Time
	CreatedAt     time.Time
	// AuthenticatedAt is when the user last proved who they are in this
	// session (sign-in or re-authentication); recent-authentication checks use it.
	AuthenticatedAt time.Time
	LastSeenAt      time.Time
	UserAgent       string
	IP              string
	Attributes      map[string]any
}

// Authenticator is a passkey (WebAuthn credential) of a user.
type Authenticator struct {
	CredentialID    []byte
	UserID          string
	PublicKey       []byte
	SignCount       uint32
	BackupEligible  bool
	BackedUp        bool
	DeviceType      string // "singleDevice" or "multiDevice"
	Transports      []string
	AAGUID          []byte
	AttestationType string
	Name            string // the user's label
	CreatedAt       time.Time
	LastUsedAt      *time.Time
}

// VerificationToken is an email-link token. TokenHash is the hex SHA-256 of
// the token sent by mail; the token itself is never stored.
type VerificationToken struct {
	Identifier string // the email address
	TokenHash  string
	Expires    time.Time
	RedirectTo string
	CreatedAt  time.Time
}

// Users stores users.
type Users interface {
	// CreateUser inserts u and, when key is not nil, its first key, in one
	// transaction: either both exist afterwards or neither. Conflicts on the
	// user id, username, verified email or key id return a *ConflictError.
	// CreatedAt and UpdatedAt are set by the caller.
	CreateUser(ctx context.Context, u User, key *Key) error
	// GetUser returns the user with id, or ErrNotFound.
	GetUser(ctx context.Context, id string) (User, error)
	// GetUserByEmail returns the user who holds email (any case) as a verified
	// address, or ErrNotFound. Unverified addresses are never matched.
	GetUserByEmail(ctx context.Context, email string) (User, error)
	// GetUserByUsername returns the user with username, compared
	// case-insensitively, or ErrNotFound.
	GetUserByUsername(ctx context.Context, username string) (User, error)
	// GetUserByKey returns the owner of key keyID, or ErrNotFound.
	GetUserByKey(ctx context.Context, keyID string) (User, error)
	// GetUserByWebAuthnHandle returns the user with that WebAuthn handle, or ErrNotFound.
	GetUserByWebAuthnHandle(ctx context.Context, handle []byte) (User, error)
	// UpdateUser loads the user, lets update change it and writes it back, in
	// one transaction. ID and CreatedAt cannot change. An error from update
	// is returned as is and nothing is written.
	UpdateUser(ctx context.Context, id string, update func(*User) error) (User, error)
	// DeleteUser deletes the user with its keys, sessions and authenticators
	// in one transaction. Deleting a user that does not exist succeeds.
	DeleteUser(ctx context.Context, id string) error
	// ListUsers returns up to limit users ordered by creation time, then id,
	// starting after the user with id after ("" for the first page).
	ListUsers(ctx context.Context, after string, limit int) ([]User, error)
}

// Keys stores keys.
type Keys interface {
	// CreateKey inserts k. A key id that exists returns a *ConflictError
	// (ConflictKey); a missing user returns ErrNotFound.
	CreateKey(ctx context.Context, k Key) error
	// GetKey returns the key with id, or ErrNotFound.
	GetKey(ctx context.Context, id string) (Key, error)
	// ListUserKeys returns the keys of a user, oldest first (empty for an unknown user).
	ListUserKeys(ctx context.Context, userID string) ([]Key, error)
	// UpdateKey locks the key's row (SELECT ... FOR UPDATE on PostgreSQL, an
	// immediate transaction on SQLite), lets update change it and writes it
	// back. Concurrent UpdateKey calls on one key, from any process, run one
	// after another, so update may safely call out (e.g. refresh an OAuth
	// token) and store the result. ID, UserID, Provider and ProviderUserID
	// cannot change.
	UpdateKey(ctx context.Context, id string, update func(*Key) error) (Key, error)
	// DeleteKey deletes the key and returns it as it was, in one statement
	// (so the caller learns whose key it deleted, not whose it was a moment
	// before), or ErrNotFound when there was none.
	DeleteKey(ctx context.Context, id string) (Key, error)
	// ListKeysWithTokens returns up to limit keys that hold OAuth tokens,
	// ordered by id and starting after id after ("" for the first page), so a
	// key rotation can re-encrypt them in batches.
	ListKeysWithTokens(ctx context.Context, after string, limit int) ([]Key, error)
}

// Sessions stores sessions.
type Sessions interface {
	// CreateSession inserts s; a missing user returns ErrNotFound, an
	// existing id a *ConflictError (ConflictSession).
	CreateSession(ctx context.Context, s Session) error
	// GetSession returns the session with id, dead or alive, or ErrNotFound.
	GetSession(ctx context.Context, id string) (Session, error)
	// GetSessionAndUser returns the session with id and its user in one
	// query, or ErrNotFound.
	GetSessionAndUser(ctx context.Context, id string) (Session, User, error)
	// ListUserSessions returns the user's sessions whose idle expiry is after
	// now, oldest first.
	ListUserSessions(ctx context.Context, userID string, now time.Time) ([]Session, error)
	// TouchSession sets the expiries and last-seen time of a session.
	// It returns ErrNotFound when the session does not exist.
	TouchSession(ctx context.Context, id string, activeExpires, idleExpires, lastSeen time.Time) error
	// ReauthenticateSession sets AuthenticatedAt, or returns ErrNotFound.
	ReauthenticateSession(ctx context.Context, id string, at time.Time) error
	// UpdateSessionAttributes merges attrs into the session's attributes (a
	// nil value removes that attribute) and returns the session, or ErrNotFound.
	UpdateSessionAttributes(ctx context.Context, id string, attrs map[string]any) (Session, error)
	// DeleteSession deletes the session; an unknown id is no error.
	DeleteSession(ctx context.Context, id string) error
	// DeleteUserSessions deletes all sessions of a user and returns their ids.
	DeleteUserSessions(ctx context.Context, userID string) ([]string, error)
	// DeleteDeadUserSessions deletes the user's sessions whose idle expiry is
	// not after now.
	DeleteDeadUserSessions(ctx context.Context, userID string, now time.Time) error
	// DeleteDeadSessions deletes up to limit sessions (of any user) whose idle
	// expiry is not after now and returns how many it deleted.
	DeleteDeadSessions(ctx context.Context, now time.Time, limit int) (int64, error)
}

// Authenticators stores passkeys.
type Authenticators interface {
	// CreateAuthenticator inserts a; a duplicate credential id returns a
	// *ConflictError (ConflictCredential), a missing user ErrNotFound.
	CreateAuthenticator(ctx context.Context, a Authenticator) error
	// CreatePasskey stores a passkey in one transaction: the user u when
	// it is not nil (a sign-up; see CreateUser), then key and a, both of
	// user a.UserID. Either all of it is written or none: a conflict on any
	// part returns its *ConflictError, a missing user ErrNotFound.
	CreatePasskey(ctx context.Context, u *User, key Key, a Authenticator) error
	// GetAuthenticator returns the authenticator with credentialID, or ErrNotFound.
	GetAuthenticator(ctx context.Context, credentialID []byte) (Authenticator, error)
	// ListAuthenticatorsByUserID returns the user's authenticators, oldest
	// first; empty for an unknown user.
	ListAuthenticatorsByUserID(ctx context.Context, userID string) ([]Authenticator, error)
	// UpdateAuthenticatorCounter records a successful use: the new sign
	// count, backup state and last-used time. ErrNotFound if it does not
	// exist. A counter other than 0 must be greater than the stored one,
	// checked in the same statement: of two concurrent uses that present
	// the same count, one wins and the other gets ErrConsumed (WebAuthn's
	// signature counter, which flags a cloned authenticator).
	UpdateAuthenticatorCounter(ctx context.Context, credentialID []byte, counter uint32, backedUp bool, usedAt time.Time) (Authenticator, error)
	// RenameAuthenticator sets the name of a user's authenticator, or
	// returns ErrNotFound (also when it belongs to another user).
	RenameAuthenticator(ctx context.Context, userID string, credentialID []byte, name string) error
	// DeleteAuthenticator deletes a user's authenticator, or returns
	// ErrNotFound (also when it belongs to another user).
	DeleteAuthenticator(ctx context.Context, userID string, credentialID []byte) error
}

// VerificationTokens stores email-link tokens.
type VerificationTokens interface {
	// CreateVerificationToken inserts t. A token with the same identifier
	// and hash that exists returns a *ConflictError (ConflictVerificationToken).
	CreateVerificationToken(ctx context.Context, t VerificationToken) error
	// UseVerificationToken deletes and returns the token matching identifier
	// and tokenHash, atomically: of two concurrent calls exactly one gets it,
	// the other ErrNotFound. An expired token (Expires not after now) is
	// deleted and reported as ErrNotFound.
	UseVerificationToken(ctx context.Context, identifier, tokenHash string, now time.Time) (VerificationToken, error)
	// DeleteExpiredVerificationTokens deletes up to limit tokens that expired
	// at or before now, returning how many.
	DeleteExpiredVerificationTokens(ctx context.Context, now time.Time, limit int) (int64, error)
}

// FlowStates records OAuth states and WebAuthn challenges that have been
// used, so that a copied flow cookie cannot finish twice.
type FlowStates interface {
	// ConsumeFlowState records id as used until expires. It returns
	// ErrConsumed when id was already recorded (and has not been swept).
	ConsumeFlowState(ctx context.Context, id string, expires time.Time) error
	// DeleteExpiredFlowStates deletes up to limit records that expired at or
	// before now, returning how many.
	DeleteExpiredFlowStates(ctx context.Context, now time.Time, limit int) (int64, error)
}

// RateLimits counts events (failed logins, sent emails) per bucket in
// fixed windows, in the database, so that every replica sharing the store
// sees the same counts.
type RateLimits interface {
	// HitRateLimit adds n to bucket's count in its current window and
	// returns the new count and when the window ends, in one atomic
	// statement: concurrent hits from any process are all counted. A bucket
	// with no window, or whose window ended at or before now, starts a new
	// one, [now, now+window), holding max(n, 0). n may be negative to give
	// back a hit; the count never goes below 0. window must be positive.
	HitRateLimit(ctx context.Context, bucket string, n int, window time.Duration, now time.Time) (count int, resetAt time.Time, err error)
	// ResetRateLimit forgets bucket's count; an unknown bucket is no error.
	ResetRateLimit(ctx context.Context, bucket string) error
	// DeleteExpiredRateLimits deletes up to limit buckets whose window ended
	// at or before now, returning how many.
	DeleteExpiredRateLimits(ctx context.Context, now time.Time, limit int) (int64, error)
}

// Audit event names ([AuditEvent.Event]).
const (
	// AuditLoginSuccess: a sign-in (or sign-up, or re-authentication) by
	// any method succeeded; Provider is the method ("password", "email",
	// "webauthn" or an OAuth provider id) and Reason how it went when that
	// is notable ("created", "linked", "claimed", "signup",
	// "reauthenticated", "password_reset", ...).
	AuditLoginSuccess = "login.success"
	// AuditLoginFailure: a sign-in failed; Reason says why
	// ("invalid_password", "rate_limited", "invalid_state",
	// "provider_error", "forbidden", "conflict", "invalid_token", ...).
	AuditLoginFailure = "login.failure"
	// AuditLogout: a session signed out (POST /logout).
	AuditLogout = "logout"
	// AuditSessionRevoked: a user ended one of their sessions, or all of them.
	AuditSessionRevoked = "session.revoked"
	// AuditKeyLinked: a provider identity was linked to a signed-in user.
	AuditKeyLinked       = "key.linked"
	AuditPasskeyAdded    = "passkey.added"
	AuditPasskeyRemoved  = "passkey.removed"
	AuditPasswordChanged = "password.changed"
	// AuditPasswordReset: a password was set through a reset link.
	AuditPasswordReset = "password.reset"
	// AuditEmailVerified: an address was confirmed through a link.
	AuditEmailVerified = "email.verified"
	AuditUserDeleted   = "user.deleted"
)

// AuditEvents are the event names the broker records, in a stable order.
var AuditEvents = []string{
	AuditLoginSuccess, AuditLoginFailure, AuditLogout, AuditSessionRevoked, AuditKeyLinked,
	AuditPasskeyAdded, AuditPasskeyRemoved, AuditPasswordChanged, AuditPasswordReset,
	AuditEmailVerified, AuditUserDeleted,
}

// AuditEvent is one row of the audit log. It holds no secret: never a
// token, password or password hash.
type AuditEvent struct {
	// ID is assigned by the store on append, increasing in append order.
	ID int64
	// Time is when it happened (set by the caller; UTC, microseconds).
	Time  time.Time
	Event string // one of the Audit* names
	// UserID is the user it concerns, "" when unknown (a failed sign-in of
	// no known account). Audit rows are not deleted with their user.
	UserID    string
	Provider  string // the sign-in method or provider, "" when none
	Reason    string // why (a failure) or how (a success); "" when none
	IP        string // the client's address, "" when none (the CLI)
	UserAgent string
	// Data holds further details (session or credential ids, the actor of
	// an administrative action), as a JSON object: numbers come back as
	// float64. nil is stored as {}.
	Data map[string]any
}

// AuditFilter selects audit events for [Audit.ListAudit]. Zero fields do
// not filter.
type AuditFilter struct {
	UserID string
	Event  string
	// Since and Until bound Time: Since <= Time < Until.
	Since, Until time.Time
	// AfterID returns only events with a larger ID (the last ID of the
	// previous page).
	AfterID int64
	// Limit caps the events returned; it must be positive.
	Limit int
}

// Audit is the append-only audit log. There is no update: an event, once
// appended, stays as it was until it is older than the retention period
// and [Audit.DeleteAuditBefore] (the sweeper) deletes it; that is the only
// deletion.
type Audit interface {
	// AppendAudit appends e (its ID is ignored and assigned). Event and
	// Time are required.
	AppendAudit(ctx context.Context, e AuditEvent) error
	// ListAudit returns up to f.Limit events matching f, in append order
	// (ascending ID).
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error)
	// DeleteAuditBefore deletes up to limit events whose Time is before
	// before (oldest first), returning how many. It is the retention
	// sweep, and the only way events are removed.
	DeleteAuditBefore(ctx context.Context, before time.Time, limit int) (int64, error)
}

// Store is everything the broker keeps.
type Store interface {
	Users
	Keys
	Sessions
	Authenticators
	VerificationTokens
	FlowStates
	RateLimits
	Audit
	// Ping reports whether the database answers.
	Ping(ctx context.Context) error
	// Close releases the connections.
	Close() error
}
