package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/brokerauth/broker/storage"
)

// SessionState is where a session is in its life.
type SessionState string

// Session states. A session is active until ActiveExpires, idle until
// IdleExpires (validation resets it), dead afterwards.
const (
	StateActive SessionState = "active"
	StateIdle   SessionState = "idle"
	StateDead   SessionState = "dead"
)

// Session is a signed-in user's session.
type Session struct {
	// ID is the hex SHA-256 of the token: what the database keeps and what
	// session listings show.
	ID string `json:"id"`
	// Token is the secret the client holds (cookie or bearer). It is set
	// only on the value returned by CreateSession and by validation of a
	// token the caller already has; it is never stored.
	Token         string         `json:"-"`
	UserID        string         `json:"-"`
	User          User           `json:"-"`
	State         SessionState   `json:"state"`
	ActiveExpires time.Time      `json:"active_expires"`
	IdleExpires   time.Time      `json:"idle_expires"`
	Fresh         bool           `json:"fresh"`
	Attributes    map[string]any `json:"-"`
	CreatedAt     time.Time      `json:"-"`
	// AuthenticatedAt is when the user last signed in or re-authenticated
	// in this session.
	AuthenticatedAt time.Time `json:"-"`
	LastSeenAt      time.Time `json:"-"`
	UserAgent       string    `json:"-"`
	IP              string    `json:"-"`
}

// SessionOptions describe a new session.
type SessionOptions struct {
	// Attributes are the deployment's session attributes (JSON).
	Attributes map[string]any
	UserAgent  string
	IP         string
	// Token is a custom session token; empty generates one. It must have
	// the shape of a session token (40 characters of [a-z0-9]).
	Token string
}

func stateAt(now, activeExpires, idleExpires time.Time) SessionState {
	switch {
	case now.Before(activeExpires):
		return StateActive
	case now.Before(idleExpires):
		return StateIdle
	default:
		return StateDead
	}
}

func (a *Auth) transformSession(s storage.Session, u *storage.User, token string, fresh bool, now time.Time) Session {
	attrs := s.Attributes
	if a.opts.SessionAttributes != nil {
		attrs = a.opts.SessionAttributes(s)
	}
	if attrs == nil {
		attrs = map[string]any{}
	}
	out := Session{
		ID:              s.ID,
		Token:           token,
		UserID:          s.UserID,
		State:           stateAt(now, s.ActiveExpires, s.IdleExpires),
		ActiveExpires:   s.ActiveExpires,
		IdleExpires:     s.IdleExpires,
		Fresh:           fresh,
		Attributes:      attrs,
		CreatedAt:       s.CreatedAt,
		AuthenticatedAt: s.AuthenticatedAt,
		LastSeenAt:      s.LastSeenAt,
		UserAgent:       s.UserAgent,
		IP:              s.IP,
	}
	if u != nil {
		out.User = a.transformUser(*u)
	}
	return out
}

func (a *Auth) expiries(now time.Time) (active, idle time.Time) {
	active = now.Add(a.opts.ActivePeriod)
	return active, active.Add(a.opts.IdlePeriod)
}

// CreateSession starts a session for a user and returns it with its Token
// set: the only time the token is available. It returns ErrInvalidUserID
// for an unknown user; attributes that break a database rule return that
// error wrapped, and nothing is written.
func (a *Auth) CreateSession(ctx context.Context, userID string, o SessionOptions) (Session, error) {
	token := o.Token
	if token == "" {
		token = GenerateSessionToken()
	} else if !ValidSessionToken(token) {
		return Session{}, fmt.Errorf("create session: custom token: %w", ErrInvalidSessionID)
	}
	u, err := a.store.GetUser(ctx, userID)
	if err != nil {
		return Session{}, notFound(err, ErrInvalidUserID, "create session")
	}
	now := a.now().UTC()
	active, idle := a.expiries(now)
	s := storage.Session{
		ID:              SessionIDFromToken(token),
		UserID:          userID,
		ActiveExpires:   active,
		IdleExpires:     idle,
		CreatedAt:       now,
		AuthenticatedAt: now,
		LastSeenAt:      now,
		UserAgent:       o.UserAgent,
		IP:              o.IP,
		Attributes:      o.Attributes,
	}
	if err := a.store.CreateSession(ctx, s); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return Session{}, fmt.Errorf("create session: %w", ErrInvalidUserID)
		}
		return Session{}, fmt.Errorf("create session: %w", err)
	}
	return a.transformSession(s, &u, token, false, now), nil
}

// lookup loads a live session and its user by token.
func (a *Auth) lookup(ctx context.Context, token string) (storage.Session, storage.User, time.Time, error) {
	if !ValidSessionToken(token) {
		return storage.Session{}, storage.User{}, time.Time{}, ErrInvalidSessionID
	}
	s, u, err := a.store.GetSessionAndUser(ctx, SessionIDFromToken(token))
	if err != nil {
		return s, u, time.Time{}, notFound(err, ErrInvalidSessionID, "get session")
	}
	now := a.now().UTC()
	if stateAt(now, s.ActiveExpires, s.IdleExpires) == StateDead {
		return s, u, now, ErrInvalidSessionID
	}
	return s, u, now, nil
}

// GetSession returns an active or idle session by its token without
// resetting it, or ErrInvalidSessionID for a malformed, unknown or dead one.
func (a *Auth) GetSession(ctx context.Context, token string) (Session, error) {
	s, u, now, err := a.lookup(ctx, token)
	if err != nil {
		return Session{}, err
	}
	return a.transformSession(s, &u, token, false, now), nil
}

// ValidateSession returns the session of token. An idle session is reset
// (both expiries extended from now) and comes back with Fresh set, so the
// caller sends a new cookie. A malformed, unknown or dead token gives
// ErrInvalidSessionID; a malformed one never reaches the database.
func (a *Auth) ValidateSession(ctx context.Context, token string) (Session, error) {
	s, u, now, err := a.lookup(ctx, token)
	if err != nil {
		return Session{}, err
	}
	fresh := false
	switch {
	case stateAt(now, s.ActiveExpires, s.IdleExpires) == StateIdle:
		s.ActiveExpires, s.IdleExpires = a.expiries(now)
		s.LastSeenAt = now
		fresh = true
	case now.Sub(s.LastSeenAt) >= a.opts.TouchInterval:
		s.LastSeenAt = now
	default:
		return a.transformSession(s, &u, token, false, now), nil
	}
	if err := a.store.TouchSession(ctx, s.ID, s.ActiveExpires, s.IdleExpires, s.LastSeenAt); err != nil {
		return Session{}, notFound(err, ErrInvalidSessionID, "reset session")
	}
	return a.transformSession(s, &u, token, fresh, now), nil
}

// GetAllUserSessions returns a user's active and idle sessions (never dead
// ones), without tokens, or ErrInvalidUserID.
func (a *Auth) GetAllUserSessions(ctx context.Context, userID string) ([]Session, error) {
	u, err := a.store.GetUser(ctx, userID)
	if err != nil {
		return nil, notFound(err, ErrInvalidUserID, "get user sessions")
	}
	now := a.now().UTC()
	ss, err := a.store.ListUserSessions(ctx, userID, now)
	if err != nil {
		return nil, fmt.Errorf("get user sessions: %w", err)
	}
	out := make([]Session, 0, len(ss))
	for _, s := range ss {
		if stateAt(now, s.ActiveExpires, s.IdleExpires) == StateDead {
			continue
		}
		out = append(out, a.transformSession(s, &u, "", false, now))
	}
	return out, nil
}

// UpdateSessionAttributes merges attrs into a session's attributes (a nil
// value removes one) and returns the session, or ErrInvalidSessionID.
func (a *Auth) UpdateSessionAttributes(ctx context.Context, token string, attrs map[string]any) (Session, error) {
	if _, _, _, err := a.lookup(ctx, token); err != nil {
		return Session{}, err
	}
	s, err := a.store.UpdateSessionAttributes(ctx, SessionIDFromToken(token), attrs)
	if err != nil {
		return Session{}, notFound(err, ErrInvalidSessionID, "update session attributes")
	}
	u, err := a.store.GetUser(ctx, s.UserID)
	if err != nil {
		return Session{}, notFound(err, ErrInvalidSessionID, "update session attributes")
	}
	return a.transformSession(s, &u, token, false, a.now().UTC()), nil
}

// InvalidateSession ends the session of token. It succeeds whatever the token.
func (a *Auth) InvalidateSession(ctx context.Context, token string) error {
	if !ValidSessionToken(token) {
		return nil
	}
	return a.invalidateID(ctx, SessionIDFromToken(token))
}

// InvalidateSessionID ends a session by its id (the hashed form that
// listings show), but only if it belongs to userID; otherwise it returns
// ErrInvalidSessionID, so one user cannot probe or end another's sessions.
func (a *Auth) InvalidateSessionID(ctx context.Context, userID, sessionID string) error {
	if !validSessionID(sessionID) {
		return fmt.Errorf("invalidate session: %w", ErrInvalidSessionID)
	}
	s, err := a.store.GetSession(ctx, sessionID)
	if err != nil {
		return notFound(err, ErrInvalidSessionID, "invalidate session")
	}
	if s.UserID != userID {
		return fmt.Errorf("invalidate session: %w", ErrInvalidSessionID)
	}
	return a.invalidateID(ctx, sessionID)
}

func (a *Auth) invalidateID(ctx context.Context, id string) error {
	if err := a.store.DeleteSession(ctx, id); err != nil {
		return fmt.Errorf("invalidate session: %w", err)
	}
	return nil
}

// InvalidateAllUserSessions ends every session of a user and returns the
// ids it ended. It succeeds whatever the user id.
func (a *Auth) InvalidateAllUserSessions(ctx context.Context, userID string) ([]string, error) {
	ids, err := a.store.DeleteUserSessions(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("invalidate user sessions: %w", err)
	}
	return ids, nil
}

// DeleteDeadUserSessions deletes a user's dead sessions. It succeeds
// whatever the user id.
func (a *Auth) DeleteDeadUserSessions(ctx context.Context, userID string) error {
	if err := a.store.DeleteDeadUserSessions(ctx, userID, a.now().UTC()); err != nil {
		return fmt.Errorf("delete dead sessions: %w", err)
	}
	return nil
}

// RequireRecentAuth returns ErrReauthenticationRequired unless the session
// was created or re-authenticated within [RecentAuthWindow].
func (a *Auth) RequireRecentAuth(s Session) error {
	if a.now().Sub(s.AuthenticatedAt) > RecentAuthWindow {
		return ErrReauthenticationRequired
	}
	return nil
}

// Reauthenticate records that the user of session id proved who they are
// again just now (a fresh sign-in inside an existing session).
func (a *Auth) Reauthenticate(ctx context.Context, sessionID string) error {
	if err := a.store.ReauthenticateSession(ctx, sessionID, a.now().UTC()); err != nil {
		return notFound(err, ErrInvalidSessionID, "reauthenticate session")
	}
	return nil
}
