package providersession

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/seal"
	"github.com/brokerauth/broker/providers"
	"github.com/brokerauth/broker/storage"
)

// Tokens are a provider's tokens for one identity (the seed's tokens):
// the access token plus the rest.
type Tokens struct {
	AccessToken  string
	RefreshToken string
	IDToken      string
	Expiry       time.Time // zero when the provider gave none
	Scope        string
	TokenType    string
}

// TokensFrom converts an oauth2 token (id_token and scope in its extras).
func TokensFrom(t *oauth2.Token) Tokens {
	if t == nil {
		return Tokens{}
	}
	out := Tokens{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, Expiry: t.Expiry, TokenType: t.TokenType}
	if s, ok := t.Extra("id_token").(string); ok {
		out.IDToken = s
	}
	if s, ok := t.Extra("scope").(string); ok {
		out.Scope = s
	}
	return out
}

// ProviderSession is the outcome of a provider callback (Lucia's
// ProviderSession): who signed in upstream, the local user that owns that
// identity if any, and how to create one or link it.
type ProviderSession struct {
	// ProviderID is the provider instance ("github", "google", an OIDC name).
	ProviderID string
	// Identity is what the provider said about the user.
	Identity providers.Identity
	// ExistingUser is the owner of key ProviderID:Identity.Subject, or nil.
	ExistingUser *auth.User
	// ProviderUser is the provider's typed profile (github.User, …).
	ProviderUser any
	// Tokens are the provider's tokens.
	Tokens Tokens

	a     *auth.Auth
	vault *TokenVault
}

// New builds the ProviderSession for identity id signed in at providerID,
// looking up the existing owner of its key.
func New(ctx context.Context, a *auth.Auth, vault *TokenVault, providerID string, id providers.Identity) (*ProviderSession, error) {
	if id.Subject == "" {
		return nil, fmt.Errorf("provider session: empty subject: %w", auth.ErrInvalidRequest)
	}
	ps := &ProviderSession{
		ProviderID:   providerID,
		Identity:     id,
		ProviderUser: id.Profile,
		Tokens:       TokensFrom(id.Tokens),
		a:            a,
		vault:        vault,
	}
	u, err := a.Store().GetUserByKey(ctx, ps.KeyID())
	switch {
	case err == nil:
		user, err := a.GetUser(ctx, u.ID)
		if err != nil {
			return nil, err
		}
		ps.ExistingUser = &user
	case !errors.Is(err, storage.ErrNotFound):
		return nil, fmt.Errorf("provider session: %w", err)
	}
	return ps, nil
}

// KeyID returns the key id of this identity: "provider:subject".
func (p *ProviderSession) KeyID() string { return auth.KeyID(p.ProviderID, p.Identity.Subject) }

func (p *ProviderSession) keySpec() (auth.KeySpec, error) {
	spec := auth.KeySpec{ProviderID: p.ProviderID, ProviderUserID: p.Identity.Subject}
	if p.vault != nil {
		kt, err := p.vault.Encrypt(p.KeyID(), p.Tokens)
		if err != nil {
			return spec, err
		}
		spec.Tokens = kt
	}
	return spec, nil
}

// CreateUser creates a user with attributes and this identity's key (with
// its tokens, encrypted) in one transaction. It returns
// auth.ErrDuplicateKeyID when the key was created meanwhile.
func (p *ProviderSession) CreateUser(ctx context.Context, attributes map[string]any) (auth.User, error) {
	spec, err := p.keySpec()
	if err != nil {
		return auth.User{}, err
	}
	return p.a.CreateUser(ctx, auth.CreateUserOptions{Key: &spec, Attributes: attributes})
}

// CreatePersistentKey adds this identity's key to the user userID (account
// linking). It returns auth.ErrDuplicateKeyID when the identity already
// belongs to a user, auth.ErrInvalidUserID for an unknown user.
func (p *ProviderSession) CreatePersistentKey(ctx context.Context, userID string) (auth.Key, error) {
	spec, err := p.keySpec()
	if err != nil {
		return auth.Key{}, err
	}
	return p.a.CreateKeySpec(ctx, userID, spec)
}

// StoreTokens replaces the stored tokens of this identity's existing key
// with the ones of this login.
func (p *ProviderSession) StoreTokens(ctx context.Context) error {
	if p.vault == nil {
		return nil
	}
	kt, err := p.vault.Encrypt(p.KeyID(), p.Tokens)
	if err != nil {
		return err
	}
	now := p.a.Now().UTC()
	_, err = p.a.Store().UpdateKey(ctx, p.KeyID(), func(k *storage.Key) error {
		kt.Apply(k)
		k.UpdatedAt = now
		return nil
	})
	if err != nil {
		return fmt.Errorf("store tokens: %w", err)
	}
	return nil
}

// ErrEmailOwned is returned by [Resolve] when the identity's verified email
// belongs to another user and the provider may not link by email: the user
// must sign in the usual way and link the provider from the account page.
// It matches auth.ErrConflict (HTTP 409).
var ErrEmailOwned = fmt.Errorf("the email address belongs to another account: %w", auth.ErrConflict)

// ResolvePolicy is a provider's linking policy.
type ResolvePolicy struct {
	// LinkVerifiedEmail lets a new identity whose provider-verified email
	// belongs to an existing user be attached to that user
	// (providers.<p>.link_verified_email).
	LinkVerifiedEmail bool
	// Attributes are set on the user at every login (the provider's CEL
	// attributes, already evaluated).
	Attributes map[string]any
}

// Outcome says what [Resolve] did.
type Outcome string

// Outcomes of Resolve.
const (
	OutcomeExisting Outcome = "existing" // the identity's key already had an owner
	OutcomeLinked   Outcome = "linked"   // attached to the owner of its verified email
	OutcomeCreated  Outcome = "created"  // a new user was created
)

// Resolve finds or creates the local user for a provider login, applying
// the linking rules of SPEC §4:
//   - the owner of key provider:subject signs in (tokens and attributes updated);
//   - otherwise, if the provider vouches for the email and a user holds that
//     address verified, the identity is linked to that user only when
//     policy.LinkVerifiedEmail is set, else ErrEmailOwned;
//   - otherwise a new user is created (email verified only when the
//     provider says so). Unverified emails never link or block: a new user
//     gets the address unverified.
//
// A concurrent first login of the same identity (a double click, two tabs)
// may create its user, verified email and key between this login's lookup
// and its insert, so that the email looks owned by someone else or the key
// exists: when the identity's key has an owner by then, that owner is the
// user and Resolve signs in as it.
func Resolve(ctx context.Context, p *ProviderSession, policy ResolvePolicy) (auth.User, Outcome, error) {
	u, how, err := resolve(ctx, p, policy)
	if err != nil && p.ExistingUser == nil && (errors.Is(err, auth.ErrConflict) || errors.Is(err, auth.ErrDuplicateKeyID)) {
		owner, gerr := p.a.Store().GetUserByKey(ctx, p.KeyID())
		if gerr != nil {
			return u, how, err
		}
		eu, gerr := p.a.GetUser(ctx, owner.ID)
		if gerr != nil {
			return u, how, err
		}
		p.ExistingUser = &eu
		return resolve(ctx, p, policy)
	}
	return u, how, err
}

func resolve(ctx context.Context, p *ProviderSession, policy ResolvePolicy) (auth.User, Outcome, error) {
	if p.ExistingUser != nil {
		if err := p.StoreTokens(ctx); err != nil {
			return auth.User{}, "", err
		}
		u := *p.ExistingUser
		if len(policy.Attributes) > 0 {
			var err error
			if u, err = p.a.UpdateUserAttributes(ctx, u.ID, policy.Attributes); err != nil {
				return auth.User{}, "", err
			}
		}
		return u, OutcomeExisting, nil
	}
	id := p.Identity
	if id.Email != "" && id.EmailVerified {
		owner, err := p.a.Store().GetUserByEmail(ctx, id.Email)
		switch {
		case err == nil:
			if !policy.LinkVerifiedEmail {
				return auth.User{}, "", ErrEmailOwned
			}
			if _, err := p.CreatePersistentKey(ctx, owner.ID); err != nil {
				return auth.User{}, "", err
			}
			u, err := p.a.GetUser(ctx, owner.ID)
			if err == nil && len(policy.Attributes) > 0 {
				u, err = p.a.UpdateUserAttributes(ctx, owner.ID, policy.Attributes)
			}
			return u, OutcomeLinked, err
		case !errors.Is(err, storage.ErrNotFound):
			return auth.User{}, "", fmt.Errorf("resolve: %w", err)
		}
	}
	attrs := map[string]any{}
	for k, v := range policy.Attributes {
		attrs[k] = v
	}
	if id.Email != "" {
		attrs["email"] = id.Email
		attrs["email_verified"] = id.EmailVerified
	}
	if id.Name != "" {
		attrs["name"] = id.Name
	}
	if id.Picture != "" {
		attrs["image"] = id.Picture
	}
	u, err := p.CreateUser(ctx, attrs)
	if err != nil {
		return auth.User{}, "", err
	}
	return u, OutcomeCreated, nil
}

// TokenVault encrypts provider tokens at rest (AES-256-GCM through a
// [seal.Keyring], so the token key can be rotated) and hands out valid
// access tokens, refreshing them when they expire.
type TokenVault struct {
	keys  *seal.Keyring
	store storage.Keys
	now   func() time.Time
	group singleflight.Group
	// Leeway is how long before its expiry an access token is refreshed
	// (default 30s).
	Leeway time.Duration
}

// NewTokenVault returns a vault over the keys of store.
func NewTokenVault(keys *seal.Keyring, store storage.Keys, now func() time.Time) *TokenVault {
	if now == nil {
		now = time.Now
	}
	return &TokenVault{keys: keys, store: store, now: now, Leeway: 30 * time.Second}
}

// additional data binds each ciphertext to its key and column, so a sealed
// refresh token cannot be swapped in as another key's or another field.
func ad(keyID, field string) string { return "token:" + keyID + ":" + field }

func (v *TokenVault) seal(keyID, field, s string) *string {
	if s == "" {
		return nil
	}
	out := v.keys.SealString(s, ad(keyID, field))
	return &out
}

func (v *TokenVault) open(keyID, field string, s *string) (string, error) {
	if s == nil || *s == "" {
		return "", nil
	}
	out, err := v.keys.OpenString(*s, ad(keyID, field))
	if err != nil {
		return "", fmt.Errorf("open %s of key %s: %w", field, keyID, err)
	}
	return out, nil
}

// Encrypt returns t as it is to be stored on key keyID.
func (v *TokenVault) Encrypt(keyID string, t Tokens) (*auth.KeyTokens, error) {
	kt := &auth.KeyTokens{
		AccessToken:  v.seal(keyID, "access_token", t.AccessToken),
		RefreshToken: v.seal(keyID, "refresh_token", t.RefreshToken),
		IDToken:      v.seal(keyID, "id_token", t.IDToken),
	}
	if !t.Expiry.IsZero() {
		e := t.Expiry.UTC()
		kt.Expiry = &e
	}
	if t.Scope != "" {
		kt.Scope = &t.Scope
	}
	if t.TokenType != "" {
		kt.TokenType = &t.TokenType
	}
	return kt, nil
}

// Decrypt returns the tokens stored on k.
func (v *TokenVault) Decrypt(k storage.Key) (Tokens, error) {
	var t Tokens
	var err error
	if t.AccessToken, err = v.open(k.ID, "access_token", k.AccessToken); err != nil {
		return t, err
	}
	if t.RefreshToken, err = v.open(k.ID, "refresh_token", k.RefreshToken); err != nil {
		return t, err
	}
	if t.IDToken, err = v.open(k.ID, "id_token", k.IDToken); err != nil {
		return t, err
	}
	if k.TokenExpiry != nil {
		t.Expiry = *k.TokenExpiry
	}
	if k.Scope != nil {
		t.Scope = *k.Scope
	}
	if k.TokenType != nil {
		t.TokenType = *k.TokenType
	}
	return t, nil
}

// Reencrypt re-seals the tokens of key keyID under the vault's first key
// (for `broker rotate-token-key`). It reports whether anything changed.
func (v *TokenVault) Reencrypt(ctx context.Context, keyID string) (bool, error) {
	changed := false
	_, err := v.store.UpdateKey(ctx, keyID, func(k *storage.Key) error {
		for _, p := range []**string{&k.AccessToken, &k.RefreshToken, &k.IDToken} {
			if *p != nil && v.keys.NeedsResealString(**p) {
				changed = true
			}
		}
		if !changed {
			return nil
		}
		t, err := v.Decrypt(*k)
		if err != nil {
			return err
		}
		kt, _ := v.Encrypt(k.ID, t)
		k.AccessToken, k.RefreshToken, k.IDToken = kt.AccessToken, kt.RefreshToken, kt.IDToken
		return nil
	})
	return changed, err
}

// ErrNoToken is returned by AccessToken when the key holds no usable
// access token and cannot refresh one (no refresh token, or the provider
// refused it): the user must sign in with the provider again.
var ErrNoToken = errors.New("providersession: no valid provider token; sign in with the provider again")

func (v *TokenVault) valid(t Tokens) bool {
	return t.AccessToken != "" && (t.Expiry.IsZero() || v.now().Add(v.Leeway).Before(t.Expiry))
}

// AccessToken returns a valid access token for key keyID, refreshing it
// with r when it has expired and storing the new tokens (including a
// rotated refresh token).
//
// Refresh is safe under concurrency, across replicas: callers in one
// process share one refresh (singleflight), and the refresh itself runs
// inside UpdateKey, which holds the key's row lock in the database, so a
// caller on another replica waits, then finds the fresh token and does not
// spend the (possibly single-use) refresh token again.
func (v *TokenVault) AccessToken(ctx context.Context, keyID string, r providers.Refresher) (string, error) {
	k, err := v.store.GetKey(ctx, keyID)
	if err != nil {
		return "", fmt.Errorf("access token: %w", err)
	}
	t, err := v.Decrypt(k)
	if err != nil {
		return "", err
	}
	if v.valid(t) {
		return t.AccessToken, nil
	}
	res, err, _ := v.group.Do(keyID, func() (any, error) {
		return v.refreshLocked(context.WithoutCancel(ctx), keyID, r)
	})
	if err != nil {
		return "", err
	}
	return res.(string), nil
}

func (v *TokenVault) refreshLocked(ctx context.Context, keyID string, r providers.Refresher) (string, error) {
	var access string
	_, err := v.store.UpdateKey(ctx, keyID, func(k *storage.Key) error {
		t, err := v.Decrypt(*k)
		if err != nil {
			return err
		}
		if v.valid(t) {
			access = t.AccessToken // another replica refreshed while we waited
			return nil
		}
		if t.RefreshToken == "" || r == nil {
			return ErrNoToken
		}
		nt, err := r.Refresh(ctx, t.RefreshToken)
		if err != nil {
			if errors.Is(err, providers.ErrInvalidGrant) {
				return fmt.Errorf("%w: %w", ErrNoToken, err)
			}
			return fmt.Errorf("refresh: %w", err)
		}
		fresh := TokensFrom(nt)
		if fresh.RefreshToken == "" {
			fresh.RefreshToken = t.RefreshToken
		}
		if fresh.IDToken == "" {
			fresh.IDToken = t.IDToken
		}
		if fresh.Scope == "" {
			fresh.Scope = t.Scope
		}
		kt, _ := v.Encrypt(k.ID, fresh)
		kt.Apply(k)
		k.UpdatedAt = v.now().UTC()
		access = fresh.AccessToken
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("access token for %s: %w", keyID, err)
	}
	return access, nil
}
