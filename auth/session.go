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

// found is a live session as lookup returns it.
type found struct {
	s   storage.Session
	u   storage.User
	now time.Time
	// key is the cache key of the token; hit says the session came from
	// the cache, touch that this caller claimed its last-seen write.
	key        [32]byte
	hit, touch bool
	// gen and fetched are the cache generation and the time read before
	// the database lookup of a miss, for remember.
	gen     uint64
	fetched int64
}

// lookup loads a live session and its user by token: from the session
// cache when it holds a snapshot younger than the cache TTL, otherwise with
// one joined query, whose result it caches. A session that is dead by its
// cached expiry is looked up again (another replica may have reset it), so
// time-based death is seen at once. With touchInterval > 0, a cache hit
// whose last-seen time is that old claims the last-seen write for this
// caller (found.touch), so concurrent validations of a busy session write
// it once.
//
// key is the token's cache key when the caller has computed it, or nil.
func (a *Auth) lookup(ctx context.Context, token string, key *[32]byte, touchInterval time.Duration) (found, error) {
	if !ValidSessionToken(token) {
		return found{}, ErrInvalidSessionID
	}
	f := found{}
	if key != nil {
		f.key = *key
	} else {
		f.key = cacheKey(token)
	}
	var gen uint64
	var fetched int64
	if a.cache != nil {
		now := a.now()
		if c, ok := a.cache.get(&f.key, now.UnixNano(), touchInterval); ok {
			now = now.UTC()
			if stateAt(now, c.sess.ActiveExpires, c.sess.IdleExpires) != StateDead {
				f.s, f.u, f.now, f.hit, f.touch = c.sess, c.user, now, true, c.touch
				return f, nil
			}
			a.cache.drop(&f.key)
		}
		gen, fetched = a.cache.gen.Load(), now.UnixNano()
	}
	s, u, err := a.store.GetSessionAndUser(ctx, hexID(&f.key))
	if err != nil {
		return found{}, notFound(err, ErrInvalidSessionID, "get session")
	}
	f.s, f.u, f.now = s, u, a.now().UTC()
	if stateAt(f.now, s.ActiveExpires, s.IdleExpires) == StateDead {
		return found{}, ErrInvalidSessionID
	}
	f.gen, f.fetched = gen, fetched
	return f, nil
}

// remember caches a session lookup read from the database (s is the
// session as the caller last wrote it). It does nothing for a cache hit or
// with the cache off.
func (a *Auth) remember(f *found, s storage.Session) {
	if a.cache != nil && !f.hit {
		_ = a.cache.put(&f.key, s, f.u, f.fetched, f.gen)
	}
}

// GetSession returns an active or idle session by its token without
// resetting it, or ErrInvalidSessionID for a malformed, unknown or dead one.
func (a *Auth) GetSession(ctx context.Context, token string) (Session, error) {
	f, err := a.lookup(ctx, token, nil, 0)
	if err != nil {
		return Session{}, err
	}
	a.remember(&f, f.s)
	return a.transformSession(f.s, &f.u, token, false, f.now), nil
}

// ValidateSession returns the session of token. An idle session is reset
// (both expiries extended from now) and comes back with Fresh set, so the
// caller sends a new cookie. A malformed, unknown or dead token gives
// ErrInvalidSessionID; a malformed one never reaches the database.
//
// With the session cache on ([Options.CacheSize]), a session validated
// within the cache TTL costs no database work: its expiry is checked
// against the cached snapshot on every call, and the last-seen time is
// written at most once per TouchInterval whichever path served it.
func (a *Auth) ValidateSession(ctx context.Context, token string) (Session, error) {
	return a.validateSession(ctx, token, nil)
}

// validateSession is ValidateSession with the token's cache key, when the
// caller has it (nil otherwise).
func (a *Auth) validateSession(ctx context.Context, token string, key *[32]byte) (Session, error) {
	f, err := a.lookup(ctx, token, key, a.opts.TouchInterval)
	if err != nil {
		return Session{}, err
	}
	s, now := f.s, f.now
	fresh := false
	switch {
	case stateAt(now, s.ActiveExpires, s.IdleExpires) == StateIdle:
		s.ActiveExpires, s.IdleExpires = a.expiries(now)
		s.LastSeenAt = now
		fresh = true
	case f.hit && !f.touch:
		// Cached, and no write is due (or another validation is doing it).
		return a.transformSession(s, &f.u, token, false, now), nil
	case now.Sub(s.LastSeenAt) >= a.opts.TouchInterval:
		s.LastSeenAt = now
	default:
		a.remember(&f, s)
		return a.transformSession(s, &f.u, token, false, now), nil
	}
	if err := a.store.TouchSession(ctx, s.ID, s.ActiveExpires, s.IdleExpires, s.LastSeenAt); err != nil {
		if f.hit {
			if errors.Is(err, storage.ErrNotFound) {
				a.cache.drop(&f.key)
			} else {
				a.cache.release(&f.key)
			}
		}
		return Session{}, notFound(err, ErrInvalidSessionID, "reset session")
	}
	if f.hit {
		a.cache.update(&f.key, s.ActiveExpires, s.IdleExpires, s.LastSeenAt)
	} else {
		a.remember(&f, s)
	}
	return a.transformSession(s, &f.u, token, fresh, now), nil
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
	f, err := a.lookup(ctx, token, nil, 0)
	if err != nil {
		return Session{}, err
	}
	s, err := a.store.UpdateSessionAttributes(ctx, f.s.ID, attrs)
	if err != nil {
		return Session{}, notFound(err, ErrInvalidSessionID, "update session attributes")
	}
	if err := a.invalidate(ctx, Invalidation{SessionID: s.ID}); err != nil {
		return Session{}, fmt.Errorf("update session attributes: publish: %w", err)
	}
	u, err := a.store.GetUser(ctx, s.UserID)
	if err != nil {
		return Session{}, notFound(err, ErrInvalidSessionID, "update session attributes")
	}
	return a.transformSession(s, &u, token, false, a.now().UTC()), nil
}

// InvalidateSession ends the session of token. It succeeds whatever the
// token. The session leaves this process's cache at once; other processes
// drop it when the published [Invalidation] reaches them. A failure to
// publish is returned (the session is already deleted; calling again
// publishes again).
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
	if err := a.invalidate(ctx, Invalidation{SessionID: id}); err != nil {
		return fmt.Errorf("invalidate session: publish: %w", err)
	}
	return nil
}

// InvalidateAllUserSessions ends every session of a user and returns the
// ids it ended. It succeeds whatever the user id. Like InvalidateSession,
// it evicts the sessions from the caches of every process.
func (a *Auth) InvalidateAllUserSessions(ctx context.Context, userID string) ([]string, error) {
	ids, err := a.store.DeleteUserSessions(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("invalidate user sessions: %w", err)
	}
	if err := a.invalidate(ctx, Invalidation{UserID: userID}); err != nil {
		return ids, fmt.Errorf("invalidate user sessions: publish: %w", err)
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
	// Cached copies elsewhere hold the old authentication time, which
	// recent-authentication checks read.
	if err := a.invalidate(ctx, Invalidation{SessionID: sessionID}); err != nil {
		return fmt.Errorf("reauthenticate session: publish: %w", err)
	}
	return nil
}
