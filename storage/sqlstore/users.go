package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/brokerauth/broker/storage"
)

const userColumns = `id, username, email, email_verified_at, name, image, attributes, webauthn_handle, created_at, updated_at`

// userRow is a row of users.
type userRow struct {
	ID              string     `db:"id"`
	Username        *string    `db:"username"`
	Email           *string    `db:"email"`
	EmailVerifiedAt nullTime   `db:"email_verified_at"`
	Name            *string    `db:"name"`
	Image           *string    `db:"image"`
	Attributes      jsonObject `db:"attributes"`
	WebAuthnHandle  []byte     `db:"webauthn_handle"`
	CreatedAt       dbTime     `db:"created_at"`
	UpdatedAt       dbTime     `db:"updated_at"`
}

func (r userRow) user() storage.User {
	u := storage.User{
		ID:              r.ID,
		Username:        r.Username,
		Email:           r.Email,
		EmailVerifiedAt: r.EmailVerifiedAt.ptr(),
		Name:            r.Name,
		Image:           r.Image,
		Attributes:      map[string]any(r.Attributes),
		CreatedAt:       r.CreatedAt.Time,
		UpdatedAt:       r.UpdatedAt.Time,
	}
	if u.Attributes == nil {
		u.Attributes = map[string]any{}
	}
	if len(r.WebAuthnHandle) > 0 {
		u.WebAuthnHandle = r.WebAuthnHandle
	}
	return u
}

// lowerEmail returns a copy of the address in lower case.
func lowerEmail(email *string) *string {
	if email == nil {
		return nil
	}
	e := strings.ToLower(*email)
	return &e
}

// CreateUser inserts u and, when key is not nil, its first key, in one
// transaction. The email is stored lower-cased. key.UserID may be empty; it
// is set to u.ID.
func (s *Store) CreateUser(ctx context.Context, u storage.User, key *storage.Key) error {
	if key != nil {
		if key.UserID != "" && key.UserID != u.ID {
			return fmt.Errorf("sqlstore: create user: key %q belongs to user %q, not %q", key.ID, key.UserID, u.ID)
		}
		k := *key
		k.UserID = u.ID
		key = &k
	}
	attrs, err := encodeObject(u.Attributes)
	if err != nil {
		return fmt.Errorf("sqlstore: create user: %w", err)
	}
	return s.inTx(ctx, "create user", func(tx *sqlx.Tx) error {
		if err := s.insertUser(ctx, tx, u, attrs); err != nil {
			return dbErr("create user", err)
		}
		if key != nil {
			if err := s.insertKey(ctx, tx, *key); err != nil {
				return dbErr("create user: create key", err)
			}
		}
		return nil
	})
}

// insertUser inserts u, whose attributes are encoded as attrs.
func (s *Store) insertUser(ctx context.Context, ext sqlx.ExecerContext, u storage.User, attrs any) error {
	_, err := ext.ExecContext(ctx, s.q(`INSERT INTO users (`+userColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		u.ID, u.Username, lowerEmail(u.Email), s.tvp(u.EmailVerifiedAt), u.Name, u.Image, attrs,
		nullBytes(u.WebAuthnHandle), s.tv(u.CreatedAt), s.tv(u.UpdatedAt))
	return err
}

// GetUser returns the user with id, or storage.ErrNotFound.
func (s *Store) GetUser(ctx context.Context, id string) (storage.User, error) {
	return s.getUser(ctx, "get user", `SELECT `+userColumns+` FROM users WHERE id = ?`, id)
}

// GetUserByEmail returns the verified owner of email (any case), or
// storage.ErrNotFound.
func (s *Store) GetUserByEmail(ctx context.Context, email string) (storage.User, error) {
	return s.getUser(ctx, "get user by email",
		`SELECT `+userColumns+` FROM users WHERE lower(email) = ? AND email_verified_at IS NOT NULL`, strings.ToLower(email))
}

// GetUserByUsername returns the user with username (any case), or
// storage.ErrNotFound.
func (s *Store) GetUserByUsername(ctx context.Context, username string) (storage.User, error) {
	return s.getUser(ctx, "get user by username",
		`SELECT `+userColumns+` FROM users WHERE lower(username) = lower(?)`, username)
}

// GetUserByKey returns the owner of key keyID, or storage.ErrNotFound.
func (s *Store) GetUserByKey(ctx context.Context, keyID string) (storage.User, error) {
	return s.getUser(ctx, "get user by key",
		`SELECT `+prefixed("u", userColumns)+` FROM keys k JOIN users u ON u.id = k.user_id WHERE k.id = ?`, keyID)
}

// GetUserByWebAuthnHandle returns the user with that WebAuthn handle, or
// storage.ErrNotFound.
func (s *Store) GetUserByWebAuthnHandle(ctx context.Context, handle []byte) (storage.User, error) {
	if len(handle) == 0 {
		return storage.User{}, fmt.Errorf("sqlstore: get user by webauthn handle: %w", storage.ErrNotFound)
	}
	return s.getUser(ctx, "get user by webauthn handle",
		`SELECT `+userColumns+` FROM users WHERE webauthn_handle = ?`, handle)
}

func (s *Store) getUser(ctx context.Context, op, query string, args ...any) (storage.User, error) {
	var r userRow
	if err := s.db.GetContext(ctx, &r, s.q(query), args...); err != nil {
		return storage.User{}, dbErr(op, err)
	}
	return r.user(), nil
}

// UpdateUser loads the user (locking its row on PostgreSQL), lets update
// change it and writes it back, in one transaction. ID and CreatedAt are
// restored if update changes them; the email is stored lower-cased.
func (s *Store) UpdateUser(ctx context.Context, id string, update func(*storage.User) error) (storage.User, error) {
	var out storage.User
	err := s.inTx(ctx, "update user", func(tx *sqlx.Tx) error {
		var r userRow
		if err := tx.GetContext(ctx, &r, s.q(`SELECT `+userColumns+` FROM users WHERE id = ?`+s.forUpdate()), id); err != nil {
			return dbErr("update user", err)
		}
		u := r.user()
		if err := update(&u); err != nil {
			return err
		}
		u.ID, u.CreatedAt = r.ID, r.CreatedAt.Time
		u.Email = lowerEmail(u.Email)
		attrs, err := encodeObject(u.Attributes)
		if err != nil {
			return fmt.Errorf("sqlstore: update user: %w", err)
		}
		// RETURNING, so the caller sees what is stored (truncated times,
		// JSON-normalized attributes).
		err = tx.GetContext(ctx, &r, s.q(`UPDATE users SET username = ?, email = ?, email_verified_at = ?, name = ?, image = ?,
			attributes = ?, webauthn_handle = ?, updated_at = ? WHERE id = ? RETURNING `+userColumns),
			u.Username, u.Email, s.tvp(u.EmailVerifiedAt), u.Name, u.Image, attrs, nullBytes(u.WebAuthnHandle), s.tv(u.UpdatedAt), id)
		if err != nil {
			return dbErr("update user", err)
		}
		out = r.user()
		return nil
	})
	return out, err
}

// DeleteUser deletes the user with its keys, sessions and authenticators in
// one transaction. The dependent rows are deleted explicitly rather than
// left to ON DELETE CASCADE, so the result does not depend on foreign keys
// being enforced. Deleting a user that does not exist succeeds.
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	return s.inTx(ctx, "delete user", func(tx *sqlx.Tx) error {
		for _, query := range []string{
			`DELETE FROM keys WHERE user_id = ?`,
			`DELETE FROM sessions WHERE user_id = ?`,
			`DELETE FROM authenticators WHERE user_id = ?`,
			`DELETE FROM users WHERE id = ?`,
		} {
			if _, err := tx.ExecContext(ctx, s.q(query), id); err != nil {
				return dbErr("delete user", err)
			}
		}
		return nil
	})
}

// ListUsers returns up to limit users ordered by creation time, then id,
// starting after the user with id after ("" for the first page). If the user
// after no longer exists, the page is empty. limit must be positive.
func (s *Store) ListUsers(ctx context.Context, after string, limit int) ([]storage.User, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("sqlstore: list users: limit %d is not positive", limit)
	}
	var (
		rows []userRow
		err  error
	)
	if after == "" {
		err = s.db.SelectContext(ctx, &rows, s.q(`SELECT `+userColumns+` FROM users ORDER BY created_at, id LIMIT ?`), limit)
	} else {
		err = s.db.SelectContext(ctx, &rows, s.q(`SELECT `+prefixed("u", userColumns)+` FROM users u
			JOIN users a ON a.id = ?
			WHERE u.created_at > a.created_at OR (u.created_at = a.created_at AND u.id > a.id)
			ORDER BY u.created_at, u.id LIMIT ?`), after, limit)
	}
	if err != nil {
		return nil, dbErr("list users", err)
	}
	users := make([]storage.User, len(rows))
	for i, r := range rows {
		users[i] = r.user()
	}
	return users, nil
}

// prefixed qualifies each column of a comma-separated list with table alias
// t, keeping the plain column names as result names.
func prefixed(t, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = t + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// mustAffect turns an Exec that changed no row into storage.ErrNotFound.
func mustAffect(op string, res sql.Result, err error) error {
	if err != nil {
		return dbErr(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return dbErr(op, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlstore: %s: %w", op, storage.ErrNotFound)
	}
	return nil
}
