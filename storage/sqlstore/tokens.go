package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/brokerauth/broker/storage"
)

// verificationTokenRow is a row of verification_tokens.
type verificationTokenRow struct {
	Identifier string `db:"identifier"`
	TokenHash  string `db:"token_hash"`
	Expires    dbTime `db:"expires"`
	RedirectTo string `db:"redirect_to"`
	CreatedAt  dbTime `db:"created_at"`
}

// CreateVerificationToken inserts t. An existing token with the same
// identifier and hash returns a *storage.ConflictError
// (ConflictVerificationToken).
func (s *Store) CreateVerificationToken(ctx context.Context, t storage.VerificationToken) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO verification_tokens (identifier, token_hash, expires, redirect_to, created_at)
		VALUES (?, ?, ?, ?, ?)`), t.Identifier, t.TokenHash, s.tv(t.Expires), t.RedirectTo, s.tv(t.CreatedAt))
	return dbErr("create verification token", err)
}

// UseVerificationToken deletes and returns the token matching identifier and
// tokenHash with one DELETE ... RETURNING, so of concurrent calls exactly one
// gets it and the others storage.ErrNotFound. An expired token (Expires not
// after now) is deleted too and reported as storage.ErrNotFound.
func (s *Store) UseVerificationToken(ctx context.Context, identifier, tokenHash string, now time.Time) (storage.VerificationToken, error) {
	var r verificationTokenRow
	err := s.db.GetContext(ctx, &r, s.q(`DELETE FROM verification_tokens WHERE identifier = ? AND token_hash = ?
		RETURNING identifier, token_hash, expires, redirect_to, created_at`), identifier, tokenHash)
	if err != nil {
		return storage.VerificationToken{}, dbErr("use verification token", err)
	}
	if !r.Expires.After(now) {
		return storage.VerificationToken{}, fmt.Errorf("sqlstore: use verification token: expired: %w", storage.ErrNotFound)
	}
	return storage.VerificationToken{
		Identifier: r.Identifier,
		TokenHash:  r.TokenHash,
		Expires:    r.Expires.Time,
		RedirectTo: r.RedirectTo,
		CreatedAt:  r.CreatedAt.Time,
	}, nil
}

// DeleteExpiredVerificationTokens deletes up to limit tokens that expired at
// or before now, returning how many. limit must be positive.
func (s *Store) DeleteExpiredVerificationTokens(ctx context.Context, now time.Time, limit int) (int64, error) {
	return s.deleteBatch(ctx, "delete expired verification tokens",
		`DELETE FROM verification_tokens WHERE (identifier, token_hash) IN
			(SELECT identifier, token_hash FROM verification_tokens WHERE expires <= ? LIMIT ?)`, now, limit)
}

// ConsumeFlowState records id as used until expires. It returns
// storage.ErrConsumed when id was already recorded (and not yet swept).
func (s *Store) ConsumeFlowState(ctx context.Context, id string, expires time.Time) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO flow_states (id, expires) VALUES (?, ?)`), id, s.tv(expires))
	if err = dbErr("consume flow state", err); err != nil {
		if ce, ok := errors.AsType[*storage.ConflictError](err); ok && ce.Field == conflictFlowState {
			return fmt.Errorf("sqlstore: consume flow state: %w", storage.ErrConsumed)
		}
		return err
	}
	return nil
}

// DeleteExpiredFlowStates deletes up to limit records that expired at or
// before now, returning how many. limit must be positive.
func (s *Store) DeleteExpiredFlowStates(ctx context.Context, now time.Time, limit int) (int64, error) {
	return s.deleteBatch(ctx, "delete expired flow states",
		`DELETE FROM flow_states WHERE id IN (SELECT id FROM flow_states WHERE expires <= ? LIMIT ?)`, now, limit)
}
