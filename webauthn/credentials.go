package webauthn

import (
	"context"
	"errors"
	"fmt"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/storage"
)

// List returns the user's passkeys, oldest first.
func (rp *RelyingParty) List(ctx context.Context, userID string) ([]Passkey, error) {
	as, err := rp.store.ListAuthenticatorsByUserID(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("webauthn: list passkeys: %w", err)
	}
	out := make([]Passkey, len(as))
	for i, a := range as {
		out[i] = toPasskey(a)
	}
	return out, nil
}

// Rename sets the label of one of the user's passkeys (id as the API shows
// it). A passkey of another user, or none, is [ErrNotFound]; an empty or
// overlong name [auth.ErrInvalidRequest].
func (rp *RelyingParty) Rename(ctx context.Context, userID, id, name string) (Passkey, error) {
	name, err := CleanPasskeyName(name)
	if err != nil {
		return Passkey{}, err
	}
	if name == "" {
		return Passkey{}, invalid("a name is required")
	}
	credID, ok := DecodeID(id)
	if !ok {
		return Passkey{}, ErrNotFound
	}
	if err := rp.store.RenameAuthenticator(ctx, userID, credID, name); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return Passkey{}, ErrNotFound
		}
		return Passkey{}, fmt.Errorf("webauthn: rename passkey: %w", err)
	}
	a, err := rp.store.GetAuthenticator(ctx, credID)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return Passkey{}, ErrNotFound // removed meanwhile
		}
		return Passkey{}, fmt.Errorf("webauthn: rename passkey: %w", err)
	}
	return toPasskey(a), nil
}

// Remove deletes one of the signed-in user's passkeys and its key. It
// needs a recent authentication ([auth.ErrReauthenticationRequired]); a
// passkey of another user, or none, is [ErrNotFound]; the user's last way
// to sign in is [ErrLastSignInMethod] (with [auth.ErrConflict]).
func (rp *RelyingParty) Remove(ctx context.Context, sess *auth.Session, id string) error {
	if sess == nil {
		return fmt.Errorf("webauthn: remove passkey: %w", auth.ErrInvalidSessionID)
	}
	if err := rp.auth.RequireRecentAuth(*sess); err != nil {
		return fmt.Errorf("webauthn: remove passkey: %w", err)
	}
	credID, ok := DecodeID(id)
	if !ok {
		return ErrNotFound
	}
	a, err := rp.store.GetAuthenticator(ctx, credID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && a.UserID != sess.UserID) {
		return ErrNotFound
	} else if err != nil {
		return fmt.Errorf("webauthn: remove passkey: %w", err)
	}
	keys, err := rp.store.ListUserKeys(ctx, sess.UserID)
	if err != nil {
		return fmt.Errorf("webauthn: remove passkey: %w", err)
	}
	others := 0
	for _, k := range keys {
		if k.ID != KeyID(credID) {
			others++
		}
	}
	if others == 0 {
		return fmt.Errorf("%w: %w", ErrLastSignInMethod, auth.ErrConflict)
	}
	// The authenticator first: once it is gone the passkey cannot sign in,
	// whatever happens to the key.
	if err := rp.store.DeleteAuthenticator(ctx, sess.UserID, credID); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return ErrNotFound
		}
		return fmt.Errorf("webauthn: remove passkey: %w", err)
	}
	// The key, and the invalidation of its user's cached sessions.
	if err := rp.auth.DeleteKey(ctx, ProviderID, EncodeID(credID)); err != nil {
		return fmt.Errorf("webauthn: remove passkey: %w", err)
	}
	return nil
}
