package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/brokerauth/broker/storage"
)

// Key is a way to sign in as a user (a Lucia key): "email:alice@example.com"
// with a password, "github:1234" without one.
type Key struct {
	ID              string    `json:"id"`
	UserID          string    `json:"user_id"`
	ProviderID      string    `json:"provider_id"`
	ProviderUserID  string    `json:"provider_user_id"`
	PasswordDefined bool      `json:"password_defined"`
	CreatedAt       time.Time `json:"created_at"`
	// NeedsRehash is set by UseKey when the stored hash verified but used a
	// scheme or parameters the broker no longer prefers. UseKey has already
	// replaced it with a fresh argon2id hash when it returns.
	NeedsRehash bool `json:"-"`
}

func transformKey(k storage.Key) Key {
	return Key{
		ID:              k.ID,
		UserID:          k.UserID,
		ProviderID:      k.Provider,
		ProviderUserID:  k.ProviderUserID,
		PasswordDefined: k.HashedPassword != nil,
		CreatedAt:       k.CreatedAt,
	}
}

func (a *Auth) newKey(ctx context.Context, userID, providerID, providerUserID string, password *string, now time.Time) (storage.Key, error) {
	if err := checkKeyParts(providerID, providerUserID); err != nil {
		return storage.Key{}, err
	}
	k := storage.Key{
		ID:             KeyID(providerID, providerUserID),
		UserID:         userID,
		Provider:       providerID,
		ProviderUserID: providerUserID,
		CreatedAt:      now,
		UpdatedAt:      now,
	}
	if password != nil {
		h, err := a.pw.Hash(ctx, *password)
		if err != nil {
			return storage.Key{}, fmt.Errorf("hash password: %w", err)
		}
		k.HashedPassword = &h
	}
	return k, nil
}

// CreateKey adds a key to a user. A nil password makes a key without one.
// It returns ErrInvalidUserID for an unknown user and ErrDuplicateKeyID when
// the key exists.
func (a *Auth) CreateKey(ctx context.Context, userID, providerID, providerUserID string, password *string) (Key, error) {
	return a.CreateKeySpec(ctx, userID, KeySpec{ProviderID: providerID, ProviderUserID: providerUserID, Password: password})
}

// CreateKeySpec is CreateKey for a full [KeySpec], tokens included.
func (a *Auth) CreateKeySpec(ctx context.Context, userID string, spec KeySpec) (Key, error) {
	k, err := a.newKey(ctx, userID, spec.ProviderID, spec.ProviderUserID, spec.Password, a.now().UTC())
	if err != nil {
		return Key{}, err
	}
	spec.Tokens.Apply(&k)
	if err := a.store.CreateKey(ctx, k); err != nil {
		return Key{}, mapConflict("create key", err)
	}
	if err := a.KeysChanged(ctx, userID); err != nil {
		return Key{}, fmt.Errorf("create key: publish: %w", err)
	}
	return transformKey(k), nil
}

// KeysChanged drops userID's cached sessions in every process, as a change
// to the user does, so that what is kept with them (claims, which may read
// the user's keys) is computed afresh. Auth's own key methods call it;
// code that adds or removes a key through the store directly must call it
// after the change is committed.
func (a *Auth) KeysChanged(ctx context.Context, userID string) error {
	return a.invalidate(ctx, Invalidation{UserID: userID})
}

// GetKey returns a key without checking any password, or ErrInvalidKeyID.
func (a *Auth) GetKey(ctx context.Context, providerID, providerUserID string) (Key, error) {
	if err := checkKeyParts(providerID, providerUserID); err != nil {
		return Key{}, err
	}
	k, err := a.store.GetKey(ctx, KeyID(providerID, providerUserID))
	if err != nil {
		return Key{}, notFound(err, ErrInvalidKeyID, "get key")
	}
	return transformKey(k), nil
}

// GetAllUserKeys returns the keys of a user, or ErrInvalidUserID.
func (a *Auth) GetAllUserKeys(ctx context.Context, userID string) ([]Key, error) {
	if _, err := a.store.GetUser(ctx, userID); err != nil {
		return nil, notFound(err, ErrInvalidUserID, "get user keys")
	}
	ks, err := a.store.ListUserKeys(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("get user keys: %w", err)
	}
	out := make([]Key, len(ks))
	for i, k := range ks {
		out[i] = transformKey(k)
	}
	return out, nil
}

// UseKey validates a key and its password (nil for keys without one):
// unknown key → ErrInvalidKeyID; key with a password and a wrong or missing
// password → ErrInvalidPassword; key without a password given one →
// ErrInvalidPassword; a stored hash the broker cannot verify →
// ErrOutdatedPassword (the user must reset it). A hash that verifies but is
// no longer preferred is replaced at once and the key says NeedsRehash.
//
// Callers that must not reveal which keys exist should call
// Passwords().DummyVerify when UseKey returns ErrInvalidKeyID, so both
// failures cost the same.
func (a *Auth) UseKey(ctx context.Context, providerID, providerUserID string, password *string) (Key, error) {
	if err := checkKeyParts(providerID, providerUserID); err != nil {
		return Key{}, err
	}
	id := KeyID(providerID, providerUserID)
	k, err := a.store.GetKey(ctx, id)
	if err != nil {
		return Key{}, notFound(err, ErrInvalidKeyID, "use key")
	}
	if k.HashedPassword == nil {
		if password != nil {
			return Key{}, fmt.Errorf("use key: key has no password: %w", ErrInvalidPassword)
		}
		return transformKey(k), nil
	}
	if password == nil {
		return Key{}, fmt.Errorf("use key: password required: %w", ErrInvalidPassword)
	}
	ok, rehash, err := a.pw.Verify(ctx, *k.HashedPassword, *password)
	if err != nil {
		return Key{}, fmt.Errorf("use key: %w", err)
	}
	if !ok {
		return Key{}, fmt.Errorf("use key: %w", ErrInvalidPassword)
	}
	out := transformKey(k)
	if rehash {
		out.NeedsRehash = true
		h, err := a.pw.Hash(ctx, *password)
		if err != nil {
			return Key{}, fmt.Errorf("use key: rehash: %w", err)
		}
		now := a.now().UTC()
		_, err = a.store.UpdateKey(ctx, id, func(sk *storage.Key) error {
			// Only replace the hash we verified: a concurrent password
			// change wins over this rehash.
			if sk.HashedPassword == nil || *sk.HashedPassword != *k.HashedPassword {
				return errKeyChanged
			}
			sk.HashedPassword = &h
			sk.UpdatedAt = now
			return nil
		})
		if err != nil && !errors.Is(err, errKeyChanged) {
			return Key{}, fmt.Errorf("use key: rehash: %w", err)
		}
	}
	return out, nil
}

var errKeyChanged = errors.New("key changed concurrently")

// UpdateKeyPassword sets (or, with nil, removes) a key's password and
// returns the key, or ErrInvalidKeyID.
func (a *Auth) UpdateKeyPassword(ctx context.Context, providerID, providerUserID string, password *string) (Key, error) {
	if err := checkKeyParts(providerID, providerUserID); err != nil {
		return Key{}, err
	}
	var hashed *string
	if password != nil {
		h, err := a.pw.Hash(ctx, *password)
		if err != nil {
			return Key{}, fmt.Errorf("update key password: %w", err)
		}
		hashed = &h
	}
	now := a.now().UTC()
	k, err := a.store.UpdateKey(ctx, KeyID(providerID, providerUserID), func(k *storage.Key) error {
		k.HashedPassword = hashed
		k.UpdatedAt = now
		return nil
	})
	if err != nil {
		return Key{}, notFound(err, ErrInvalidKeyID, "update key password")
	}
	// Nothing cached shows the password, but a password change is when
	// callers end other sessions; evicting the user's cached sessions
	// keeps every replica's view of them no older than this change.
	if err := a.invalidate(ctx, Invalidation{UserID: k.UserID}); err != nil {
		return Key{}, fmt.Errorf("update key password: publish: %w", err)
	}
	return transformKey(k), nil
}

// DeleteKey deletes a key. It succeeds whatever the key id.
func (a *Auth) DeleteKey(ctx context.Context, providerID, providerUserID string) error {
	// The deleted key says whose sessions to invalidate.
	k, err := a.store.DeleteKey(ctx, KeyID(providerID, providerUserID))
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete key: %w", err)
	}
	if err := a.KeysChanged(ctx, k.UserID); err != nil {
		return fmt.Errorf("delete key: publish: %w", err)
	}
	return nil
}
