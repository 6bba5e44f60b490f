package sqlstore

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/brokerauth/broker/storage"
)

const sessionColumns = `id, user_id, active_expires, idle_expires, created_at, authenticated_at, last_seen_at, user_agent, ip, attributes`

// The hot-path queries are constants: they are also the keys of the
// prepared-statement cache.
const (
	insertSessionQuery = `INSERT INTO sessions (` + sessionColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	getSessionQuery    = `SELECT ` + sessionColumns + ` FROM sessions WHERE id = ?`
	touchSessionQuery  = `UPDATE sessions SET active_expires = ?, idle_expires = ?, last_seen_at = ? WHERE id = ?`

	// getSessionAndUserQuery's columns are in the order of
	// sessionUserRow.dest.
	getSessionAndUserQuery = `SELECT
	s.id, s.user_id, s.active_expires, s.idle_expires, s.created_at,
	s.authenticated_at, s.last_seen_at, s.user_agent, s.ip, s.attributes,
	u.id, u.username, u.email, u.email_verified_at, u.name, u.image,
	u.attributes, u.webauthn_handle, u.created_at, u.updated_at
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.id = ?`
)

// sessionRow is a row of sessions.
type sessionRow struct {
	ID              string     `db:"id"`
	UserID          string     `db:"user_id"`
	ActiveExpires   dbTime     `db:"active_expires"`
	IdleExpires     dbTime     `db:"idle_expires"`
	CreatedAt       dbTime     `db:"created_at"`
	AuthenticatedAt dbTime     `db:"authenticated_at"`
	LastSeenAt      dbTime     `db:"last_seen_at"`
	UserAgent       string     `db:"user_agent"`
	IP              string     `db:"ip"`
	Attributes      jsonObject `db:"attributes"`
}

// sessionUserRow is a session joined with its user.
type sessionUserRow struct {
	S sessionRow
	U userRow
}

// dest returns the scan destinations of getSessionAndUserQuery's columns:
// the validation of every uncached session reads this row, so it is
// scanned directly rather than through sqlx's reflection.
func (r *sessionUserRow) dest() []any {
	s, u := &r.S, &r.U
	return []any{
		&s.ID, &s.UserID, &s.ActiveExpires, &s.IdleExpires, &s.CreatedAt,
		&s.AuthenticatedAt, &s.LastSeenAt, &s.UserAgent, &s.IP, &s.Attributes,
		&u.ID, &u.Username, &u.Email, &u.EmailVerifiedAt, &u.Name, &u.Image,
		&u.Attributes, &u.WebAuthnHandle, &u.CreatedAt, &u.UpdatedAt,
	}
}

func (r sessionRow) session() storage.Session {
	s := storage.Session{
		ID:              r.ID,
		UserID:          r.UserID,
		ActiveExpires:   r.ActiveExpires.Time,
		IdleExpires:     r.IdleExpires.Time,
		CreatedAt:       r.CreatedAt.Time,
		AuthenticatedAt: r.AuthenticatedAt.Time,
		LastSeenAt:      r.LastSeenAt.Time,
		UserAgent:       r.UserAgent,
		IP:              r.IP,
		Attributes:      map[string]any(r.Attributes),
	}
	if s.Attributes == nil {
		s.Attributes = map[string]any{}
	}
	return s
}

func sessionsOf(rows []sessionRow) []storage.Session {
	out := make([]storage.Session, len(rows))
	for i, r := range rows {
		out[i] = r.session()
	}
	return out
}

// CreateSession inserts sess; a missing user returns storage.ErrNotFound, an
// existing id a *storage.ConflictError (ConflictSession).
func (s *Store) CreateSession(ctx context.Context, sess storage.Session) error {
	attrs, err := encodeObject(sess.Attributes)
	if err != nil {
		return fmt.Errorf("sqlstore: create session: %w", err)
	}
	st, err := s.stmt(ctx, insertSessionQuery)
	if err != nil {
		return dbErr("create session", err)
	}
	_, err = st.ExecContext(ctx, sess.ID, sess.UserID, s.tv(sess.ActiveExpires), s.tv(sess.IdleExpires),
		s.tv(sess.CreatedAt), s.tv(sess.AuthenticatedAt), s.tv(sess.LastSeenAt), sess.UserAgent, sess.IP, attrs)
	return dbErr("create session", err)
}

// GetSession returns the session with id, dead or alive, or
// storage.ErrNotFound.
func (s *Store) GetSession(ctx context.Context, id string) (storage.Session, error) {
	st, err := s.stmt(ctx, getSessionQuery)
	if err != nil {
		return storage.Session{}, dbErr("get session", err)
	}
	var r sessionRow
	if err := st.GetContext(ctx, &r, id); err != nil {
		return storage.Session{}, dbErr("get session", err)
	}
	return r.session(), nil
}

// GetSessionAndUser returns the session with id and its user with one
// prepared JOIN query, or storage.ErrNotFound.
func (s *Store) GetSessionAndUser(ctx context.Context, id string) (storage.Session, storage.User, error) {
	st, err := s.stmt(ctx, getSessionAndUserQuery)
	if err != nil {
		return storage.Session{}, storage.User{}, dbErr("get session and user", err)
	}
	var r sessionUserRow
	if err := st.Stmt.QueryRowContext(ctx, id).Scan(r.dest()...); err != nil {
		return storage.Session{}, storage.User{}, dbErr("get session and user", err)
	}
	return r.S.session(), r.U.user(), nil
}

// ListUserSessions returns the user's sessions whose idle expiry is after
// now, oldest first.
func (s *Store) ListUserSessions(ctx context.Context, userID string, now time.Time) ([]storage.Session, error) {
	var rows []sessionRow
	err := s.db.SelectContext(ctx, &rows, s.q(`SELECT `+sessionColumns+` FROM sessions
		WHERE user_id = ? AND idle_expires > ? ORDER BY created_at, id`), userID, s.tv(now))
	if err != nil {
		return nil, dbErr("list user sessions", err)
	}
	return sessionsOf(rows), nil
}

// TouchSession sets the expiries and last-seen time of a session, or returns
// storage.ErrNotFound.
func (s *Store) TouchSession(ctx context.Context, id string, activeExpires, idleExpires, lastSeen time.Time) error {
	st, err := s.stmt(ctx, touchSessionQuery)
	if err != nil {
		return dbErr("touch session", err)
	}
	res, err := st.ExecContext(ctx, s.tv(activeExpires), s.tv(idleExpires), s.tv(lastSeen), id)
	return mustAffect("touch session", res, err)
}

// ReauthenticateSession sets AuthenticatedAt, or returns storage.ErrNotFound.
func (s *Store) ReauthenticateSession(ctx context.Context, id string, at time.Time) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE sessions SET authenticated_at = ? WHERE id = ?`), s.tv(at), id)
	return mustAffect("reauthenticate session", res, err)
}

// UpdateSessionAttributes merges attrs into the session's attributes (a nil
// value removes that attribute) in one transaction and returns the session,
// or storage.ErrNotFound.
func (s *Store) UpdateSessionAttributes(ctx context.Context, id string, attrs map[string]any) (storage.Session, error) {
	var out storage.Session
	err := s.inTx(ctx, "update session attributes", func(tx *sqlx.Tx) error {
		var cur jsonObject
		err := tx.GetContext(ctx, &cur, s.q(`SELECT attributes FROM sessions WHERE id = ?`+s.forUpdate()), id)
		if err != nil {
			return dbErr("update session attributes", err)
		}
		merged := maps.Clone(map[string]any(cur))
		if merged == nil {
			merged = map[string]any{}
		}
		for k, v := range attrs {
			if v == nil {
				delete(merged, k)
			} else {
				merged[k] = v
			}
		}
		enc, err := encodeObject(merged)
		if err != nil {
			return fmt.Errorf("sqlstore: update session attributes: %w", err)
		}
		var r sessionRow
		err = tx.GetContext(ctx, &r, s.q(`UPDATE sessions SET attributes = ? WHERE id = ? RETURNING `+sessionColumns), enc, id)
		if err != nil {
			return dbErr("update session attributes", err)
		}
		out = r.session()
		return nil
	})
	return out, err
}

// DeleteSession deletes the session; an unknown id is no error.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, s.q(`DELETE FROM sessions WHERE id = ?`), id); err != nil {
		return dbErr("delete session", err)
	}
	return nil
}

// DeleteUserSessions deletes all sessions of a user and returns their ids.
func (s *Store) DeleteUserSessions(ctx context.Context, userID string) ([]string, error) {
	var ids []string
	if err := s.db.SelectContext(ctx, &ids, s.q(`DELETE FROM sessions WHERE user_id = ? RETURNING id`), userID); err != nil {
		return nil, dbErr("delete user sessions", err)
	}
	return ids, nil
}

// DeleteDeadUserSessions deletes the user's sessions whose idle expiry is not
// after now.
func (s *Store) DeleteDeadUserSessions(ctx context.Context, userID string, now time.Time) error {
	_, err := s.db.ExecContext(ctx, s.q(`DELETE FROM sessions WHERE user_id = ? AND idle_expires <= ?`), userID, s.tv(now))
	return dbErr("delete dead user sessions", err)
}

// DeleteDeadSessions deletes up to limit sessions whose idle expiry is not
// after now and returns how many it deleted. limit must be positive.
func (s *Store) DeleteDeadSessions(ctx context.Context, now time.Time, limit int) (int64, error) {
	return s.deleteBatch(ctx, "delete dead sessions",
		`DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE idle_expires <= ? LIMIT ?)`, now, limit)
}

// deleteBatch runs a DELETE whose two parameters are a time and a positive
// limit, and returns how many rows it deleted.
func (s *Store) deleteBatch(ctx context.Context, op, query string, now time.Time, limit int) (int64, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("sqlstore: %s: limit %d is not positive", op, limit)
	}
	res, err := s.db.ExecContext(ctx, s.q(query), s.tv(now), limit)
	if err != nil {
		return 0, dbErr(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, dbErr(op, err)
	}
	return n, nil
}
