package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/brokerauth/broker/storage"
)

const authenticatorColumns = `credential_id, user_id, public_key, sign_count, backup_eligible, backed_up, device_type,
	transports, aaguid, attestation_type, name, created_at, last_used_at`

// authenticatorRow is a row of authenticators.
type authenticatorRow struct {
	CredentialID    []byte     `db:"credential_id"`
	UserID          string     `db:"user_id"`
	PublicKey       []byte     `db:"public_key"`
	SignCount       int64      `db:"sign_count"`
	BackupEligible  bool       `db:"backup_eligible"`
	BackedUp        bool       `db:"backed_up"`
	DeviceType      string     `db:"device_type"`
	Transports      stringList `db:"transports"`
	AAGUID          []byte     `db:"aaguid"`
	AttestationType string     `db:"attestation_type"`
	Name            string     `db:"name"`
	CreatedAt       dbTime     `db:"created_at"`
	LastUsedAt      nullTime   `db:"last_used_at"`
}

func (r authenticatorRow) authenticator() storage.Authenticator {
	a := storage.Authenticator{
		CredentialID:    r.CredentialID,
		UserID:          r.UserID,
		PublicKey:       r.PublicKey,
		SignCount:       uint32(r.SignCount), // the column's CHECK keeps it in range
		BackupEligible:  r.BackupEligible,
		BackedUp:        r.BackedUp,
		DeviceType:      r.DeviceType,
		Transports:      []string(r.Transports),
		AttestationType: r.AttestationType,
		Name:            r.Name,
		CreatedAt:       r.CreatedAt.Time,
		LastUsedAt:      r.LastUsedAt.ptr(),
	}
	if a.Transports == nil {
		a.Transports = []string{}
	}
	if len(r.AAGUID) > 0 {
		a.AAGUID = r.AAGUID
	}
	return a
}

// CreateAuthenticator inserts a; a duplicate credential id returns a
// *storage.ConflictError (ConflictCredential), a missing user
// storage.ErrNotFound.
func (s *Store) CreateAuthenticator(ctx context.Context, a storage.Authenticator) error {
	if len(a.CredentialID) == 0 {
		return fmt.Errorf("sqlstore: create authenticator: empty credential id")
	}
	return dbErr("create authenticator", s.insertAuthenticator(ctx, s.db, a))
}

func (s *Store) insertAuthenticator(ctx context.Context, ext sqlx.ExecerContext, a storage.Authenticator) error {
	_, err := ext.ExecContext(ctx, s.q(`INSERT INTO authenticators (`+authenticatorColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		a.CredentialID, a.UserID, a.PublicKey, int64(a.SignCount), a.BackupEligible, a.BackedUp, a.DeviceType,
		stringList(a.Transports), nullBytes(a.AAGUID), a.AttestationType, a.Name, s.tv(a.CreatedAt), s.tvp(a.LastUsedAt))
	return err
}

// CreatePasskey stores a passkey in one transaction: the user u when it is
// not nil, then key and a (see storage.Authenticators.CreatePasskey).
func (s *Store) CreatePasskey(ctx context.Context, u *storage.User, key storage.Key, a storage.Authenticator) error {
	if len(a.CredentialID) == 0 {
		return fmt.Errorf("sqlstore: create passkey: empty credential id")
	}
	if key.UserID != a.UserID || (u != nil && u.ID != a.UserID) {
		return fmt.Errorf("sqlstore: create passkey: key, authenticator and user disagree on the user")
	}
	var attrs any
	if u != nil {
		var err error
		if attrs, err = encodeObject(u.Attributes); err != nil {
			return fmt.Errorf("sqlstore: create passkey: %w", err)
		}
	}
	return s.inTx(ctx, "create passkey", func(tx *sqlx.Tx) error {
		if u != nil {
			if err := s.insertUser(ctx, tx, *u, attrs); err != nil {
				return dbErr("create passkey: create user", err)
			}
		}
		if err := s.insertKey(ctx, tx, key); err != nil {
			return dbErr("create passkey: create key", err)
		}
		return dbErr("create passkey: create authenticator", s.insertAuthenticator(ctx, tx, a))
	})
}

// GetAuthenticator returns the authenticator with credentialID, or
// storage.ErrNotFound.
func (s *Store) GetAuthenticator(ctx context.Context, credentialID []byte) (storage.Authenticator, error) {
	var r authenticatorRow
	err := s.db.GetContext(ctx, &r, s.q(`SELECT `+authenticatorColumns+` FROM authenticators WHERE credential_id = ?`), credentialID)
	if err != nil {
		return storage.Authenticator{}, dbErr("get authenticator", err)
	}
	return r.authenticator(), nil
}

// ListAuthenticatorsByUserID returns the user's authenticators, oldest first.
func (s *Store) ListAuthenticatorsByUserID(ctx context.Context, userID string) ([]storage.Authenticator, error) {
	var rows []authenticatorRow
	err := s.db.SelectContext(ctx, &rows, s.q(`SELECT `+authenticatorColumns+` FROM authenticators
		WHERE user_id = ? ORDER BY created_at, credential_id`), userID)
	if err != nil {
		return nil, dbErr("list authenticators", err)
	}
	out := make([]storage.Authenticator, len(rows))
	for i, r := range rows {
		out[i] = r.authenticator()
	}
	return out, nil
}

// UpdateAuthenticatorCounter records a successful use: the new sign count,
// backup state and last-used time. It returns the updated authenticator, or
// storage.ErrNotFound.
func (s *Store) UpdateAuthenticatorCounter(ctx context.Context, credentialID []byte, counter uint32, backedUp bool, usedAt time.Time) (storage.Authenticator, error) {
	var r authenticatorRow
	err := s.db.GetContext(ctx, &r, s.q(`UPDATE authenticators SET sign_count = ?, backed_up = ?, last_used_at = ?
		WHERE credential_id = ? AND (? = 0 OR sign_count < ?) RETURNING `+authenticatorColumns),
		int64(counter), backedUp, s.tv(usedAt), credentialID, int64(counter), int64(counter))
	if errors.Is(err, sql.ErrNoRows) {
		// Unknown, or its counter is already at or past this one.
		if _, gerr := s.GetAuthenticator(ctx, credentialID); gerr == nil {
			return storage.Authenticator{}, fmt.Errorf("sqlstore: update authenticator counter: counter %d not above the stored one: %w", counter, storage.ErrConsumed)
		}
	}
	if err != nil {
		return storage.Authenticator{}, dbErr("update authenticator counter", err)
	}
	return r.authenticator(), nil
}

// RenameAuthenticator sets the name of a user's authenticator, or returns
// storage.ErrNotFound (also when it belongs to another user).
func (s *Store) RenameAuthenticator(ctx context.Context, userID string, credentialID []byte, name string) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE authenticators SET name = ? WHERE credential_id = ? AND user_id = ?`),
		name, credentialID, userID)
	return mustAffect("rename authenticator", res, err)
}

// DeleteAuthenticator deletes a user's authenticator, or returns
// storage.ErrNotFound (also when it belongs to another user).
func (s *Store) DeleteAuthenticator(ctx context.Context, userID string, credentialID []byte) error {
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM authenticators WHERE credential_id = ? AND user_id = ?`),
		credentialID, userID)
	return mustAffect("delete authenticator", res, err)
}
