package sqlstore

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/brokerauth/broker/storage"
)

const keyColumns = `id, user_id, provider, provider_user_id, hashed_password, access_token, refresh_token,
	id_token, token_expiry, scope, token_type, created_at, updated_at`

// keyRow is a row of keys.
type keyRow struct {
	ID             string   `db:"id"`
	UserID         string   `db:"user_id"`
	Provider       string   `db:"provider"`
	ProviderUserID string   `db:"provider_user_id"`
	HashedPassword *string  `db:"hashed_password"`
	AccessToken    *string  `db:"access_token"`
	RefreshToken   *string  `db:"refresh_token"`
	IDToken        *string  `db:"id_token"`
	TokenExpiry    nullTime `db:"token_expiry"`
	Scope          *string  `db:"scope"`
	TokenType      *string  `db:"token_type"`
	CreatedAt      dbTime   `db:"created_at"`
	UpdatedAt      dbTime   `db:"updated_at"`
}

func (r keyRow) key() storage.Key {
	return storage.Key{
		ID:             r.ID,
		UserID:         r.UserID,
		Provider:       r.Provider,
		ProviderUserID: r.ProviderUserID,
		HashedPassword: r.HashedPassword,
		AccessToken:    r.AccessToken,
		RefreshToken:   r.RefreshToken,
		IDToken:        r.IDToken,
		TokenExpiry:    r.TokenExpiry.ptr(),
		Scope:          r.Scope,
		TokenType:      r.TokenType,
		CreatedAt:      r.CreatedAt.Time,
		UpdatedAt:      r.UpdatedAt.Time,
	}
}

func keysOf(rows []keyRow) []storage.Key {
	keys := make([]storage.Key, len(rows))
	for i, r := range rows {
		keys[i] = r.key()
	}
	return keys
}

// insertKey inserts k with ext (the pool or a transaction); the caller maps
// the error.
func (s *Store) insertKey(ctx context.Context, ext sqlx.ExecerContext, k storage.Key) error {
	_, err := ext.ExecContext(ctx, s.q(`INSERT INTO keys (`+keyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		k.ID, k.UserID, k.Provider, k.ProviderUserID, k.HashedPassword, k.AccessToken, k.RefreshToken,
		k.IDToken, s.tvp(k.TokenExpiry), k.Scope, k.TokenType, s.tv(k.CreatedAt), s.tv(k.UpdatedAt))
	return err
}

// CreateKey inserts k. An existing key id returns a *storage.ConflictError
// (ConflictKey); a missing user returns storage.ErrNotFound.
func (s *Store) CreateKey(ctx context.Context, k storage.Key) error {
	return dbErr("create key", s.insertKey(ctx, s.db, k))
}

// GetKey returns the key with id, or storage.ErrNotFound.
func (s *Store) GetKey(ctx context.Context, id string) (storage.Key, error) {
	var r keyRow
	if err := s.db.GetContext(ctx, &r, s.q(`SELECT `+keyColumns+` FROM keys WHERE id = ?`), id); err != nil {
		return storage.Key{}, dbErr("get key", err)
	}
	return r.key(), nil
}

// ListUserKeys returns the keys of a user, oldest first.
func (s *Store) ListUserKeys(ctx context.Context, userID string) ([]storage.Key, error) {
	var rows []keyRow
	if err := s.db.SelectContext(ctx, &rows, s.q(`SELECT `+keyColumns+` FROM keys WHERE user_id = ? ORDER BY created_at, id`), userID); err != nil {
		return nil, dbErr("list user keys", err)
	}
	return keysOf(rows), nil
}

// UpdateKey locks the key's row, lets update change it and writes it back,
// in one transaction. On PostgreSQL the lock is SELECT ... FOR UPDATE; on
// SQLite the transaction is BEGIN IMMEDIATE, which holds the database's write
// lock. Either way concurrent calls on one key, from any process, run one
// after another. ID, UserID, Provider, ProviderUserID and CreatedAt are
// restored if update changes them. An error from update is returned as is
// and nothing is written.
func (s *Store) UpdateKey(ctx context.Context, id string, update func(*storage.Key) error) (storage.Key, error) {
	var out storage.Key
	err := s.inTx(ctx, "update key", func(tx *sqlx.Tx) error {
		var r keyRow
		if err := tx.GetContext(ctx, &r, s.q(`SELECT `+keyColumns+` FROM keys WHERE id = ?`+s.forUpdate()), id); err != nil {
			return dbErr("update key", err)
		}
		k := r.key()
		if err := update(&k); err != nil {
			return err
		}
		k.ID, k.UserID, k.Provider, k.ProviderUserID, k.CreatedAt = r.ID, r.UserID, r.Provider, r.ProviderUserID, r.CreatedAt.Time
		err := tx.GetContext(ctx, &r, s.q(`UPDATE keys SET hashed_password = ?, access_token = ?, refresh_token = ?, id_token = ?,
			token_expiry = ?, scope = ?, token_type = ?, updated_at = ? WHERE id = ? RETURNING `+keyColumns),
			k.HashedPassword, k.AccessToken, k.RefreshToken, k.IDToken, s.tvp(k.TokenExpiry), k.Scope, k.TokenType, s.tv(k.UpdatedAt), id)
		if err != nil {
			return dbErr("update key", err)
		}
		out = r.key()
		return nil
	})
	return out, err
}

// DeleteKey deletes the key and returns it as it was (DELETE ... RETURNING),
// or storage.ErrNotFound.
func (s *Store) DeleteKey(ctx context.Context, id string) (storage.Key, error) {
	var r keyRow
	if err := s.db.GetContext(ctx, &r, s.q(`DELETE FROM keys WHERE id = ? RETURNING `+keyColumns), id); err != nil {
		return storage.Key{}, dbErr("delete key", err)
	}
	return r.key(), nil
}

// ListKeysWithTokens returns up to limit keys that hold an access, refresh
// or ID token, ordered by id (bytewise) and starting after id after. limit
// must be positive.
func (s *Store) ListKeysWithTokens(ctx context.Context, after string, limit int) ([]storage.Key, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("sqlstore: list keys with tokens: limit %d is not positive", limit)
	}
	var rows []keyRow
	err := s.db.SelectContext(ctx, &rows, s.q(`SELECT `+keyColumns+` FROM keys
		WHERE (access_token IS NOT NULL OR refresh_token IS NOT NULL OR id_token IS NOT NULL) AND id > ?
		ORDER BY id LIMIT ?`), after, limit)
	if err != nil {
		return nil, dbErr("list keys with tokens", err)
	}
	return keysOf(rows), nil
}
