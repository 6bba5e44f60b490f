package providersession_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/seal"
	"github.com/brokerauth/broker/providers"
	"github.com/brokerauth/broker/providersession"
	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

func key32(t testing.TB) []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

type fixture struct {
	a     *auth.Auth
	st    *sqlstore.Store
	vault *providersession.TokenVault
	keys  *seal.Keyring
	raw   []byte
	now   time.Time
}

func mustRing(t testing.TB, keys ...[]byte) *seal.Keyring {
	t.Helper()
	r, err := seal.NewKeyring(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newFixture(t *testing.T, st *sqlstore.Store) *fixture {
	t.Helper()
	f := &fixture{st: st, now: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
	a, err := auth.New(st, auth.Options{Now: func() time.Time { return f.now },
		Passwords: auth.NewPasswordHasher(auth.Argon2Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}, 2)})
	if err != nil {
		t.Fatal(err)
	}
	f.a = a
	f.raw = key32(t)
	f.keys = mustRing(t, f.raw)
	f.vault = providersession.NewTokenVault(f.keys, st, func() time.Time { return f.now })
	return f
}

func identity(sub, email string, verified bool) providers.Identity {
	tok := (&oauth2.Token{AccessToken: "at-" + sub, RefreshToken: "rt-" + sub, TokenType: "Bearer",
		Expiry: time.Date(2026, 3, 4, 6, 0, 0, 0, time.UTC)}).WithExtra(map[string]any{"id_token": "idt-" + sub, "scope": "openid email"})
	return providers.Identity{Subject: sub, Email: email, EmailVerified: verified, Name: "Name " + sub,
		Picture: "https://img.example/" + sub, Profile: map[string]string{"sub": sub}, Tokens: tok}
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, storagetest.OpenSQLite(t))

	// A new identity creates a user with its key, tokens encrypted.
	ps, err := providersession.New(ctx, f.a, f.vault, "dex", identity("s1", "Alice@Example.com", true))
	if err != nil {
		t.Fatal(err)
	}
	if ps.ExistingUser != nil || ps.KeyID() != "dex:s1" || ps.Tokens.AccessToken != "at-s1" || ps.Tokens.IDToken != "idt-s1" || ps.Tokens.Scope != "openid email" {
		t.Fatalf("new provider session = %+v", ps)
	}
	alice, out, err := providersession.Resolve(ctx, ps, providersession.ResolvePolicy{Attributes: map[string]any{"groups": []any{"dev"}}})
	if err != nil || out != providersession.OutcomeCreated {
		t.Fatalf("Resolve new = %v, %v", out, err)
	}
	if *alice.Email != "alice@example.com" || !alice.EmailVerified || *alice.Name != "Name s1" || alice.Attributes["groups"] == nil {
		t.Fatalf("created user = %+v", alice)
	}
	k, err := f.st.GetKey(ctx, "dex:s1")
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range []*string{k.AccessToken, k.RefreshToken, k.IDToken} {
		plain := []string{"at-s1", "rt-s1", "idt-s1"}[i]
		if s == nil || strings.Contains(*s, plain) {
			t.Fatalf("token stored in the clear or missing: %v", s)
		}
	}
	toks, err := f.vault.Decrypt(k)
	if err != nil || toks.AccessToken != "at-s1" || toks.RefreshToken != "rt-s1" || toks.IDToken != "idt-s1" {
		t.Fatalf("decrypt = %+v, %v", toks, err)
	}
	// A token sealed for one key does not open as another's.
	other := k
	other.ID = "dex:s2"
	if _, err := f.vault.Decrypt(other); err == nil {
		t.Fatal("token of dex:s1 opened as dex:s2")
	}

	// The same identity again: the existing user, tokens replaced.
	id := identity("s1", "alice@example.com", true)
	id.Tokens.AccessToken = "at-second"
	ps, _ = providersession.New(ctx, f.a, f.vault, "dex", id)
	if ps.ExistingUser == nil || ps.ExistingUser.ID != alice.ID {
		t.Fatalf("ExistingUser = %+v", ps.ExistingUser)
	}
	u, out, err := providersession.Resolve(ctx, ps, providersession.ResolvePolicy{Attributes: map[string]any{"groups": []any{"ops"}}})
	if err != nil || out != providersession.OutcomeExisting || u.ID != alice.ID {
		t.Fatalf("Resolve existing = %v %v %v", u.ID, out, err)
	}
	if g := u.Attributes["groups"].([]any); g[0] != "ops" {
		t.Fatalf("attributes not updated at login: %v", u.Attributes)
	}
	k, _ = f.st.GetKey(ctx, "dex:s1")
	if toks, _ := f.vault.Decrypt(k); toks.AccessToken != "at-second" {
		t.Fatalf("tokens not replaced: %+v", toks)
	}

	// Another provider's identity with alice's verified email: refused
	// unless the provider links verified emails; nothing is created.
	ps, _ = providersession.New(ctx, f.a, f.vault, "github", identity("77", "ALICE@example.com", true))
	if _, _, err := providersession.Resolve(ctx, ps, providersession.ResolvePolicy{}); !errors.Is(err, providersession.ErrEmailOwned) || !errors.Is(err, auth.ErrConflict) {
		t.Fatalf("verified email of another user: got %v; want ErrEmailOwned", err)
	}
	if _, err := f.st.GetKey(ctx, "github:77"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("key created despite refusal: %v", err)
	}
	u, out, err = providersession.Resolve(ctx, ps, providersession.ResolvePolicy{LinkVerifiedEmail: true})
	if err != nil || out != providersession.OutcomeLinked || u.ID != alice.ID {
		t.Fatalf("link_verified_email: %v %v %v", u.ID, out, err)
	}

	// An unverified email never links: a new user gets it unverified.
	ps, _ = providersession.New(ctx, f.a, f.vault, "google", identity("g1", "alice@example.com", false))
	u, out, err = providersession.Resolve(ctx, ps, providersession.ResolvePolicy{LinkVerifiedEmail: true})
	if err != nil || out != providersession.OutcomeCreated || u.ID == alice.ID || u.EmailVerified {
		t.Fatalf("unverified email: %+v %v %v", u, out, err)
	}

	// Explicit linking: CreatePersistentKey for a signed-in user; an
	// identity owned by another user is a duplicate.
	ps, _ = providersession.New(ctx, f.a, f.vault, "gitlab", identity("9", "", false))
	if _, err := ps.CreatePersistentKey(ctx, alice.ID); err != nil {
		t.Fatal(err)
	}
	ps, _ = providersession.New(ctx, f.a, f.vault, "gitlab", identity("9", "", false))
	if _, err := ps.CreatePersistentKey(ctx, u.ID); !errors.Is(err, auth.ErrDuplicateKeyID) {
		t.Fatalf("linking an identity owned by another user: %v", err)
	}
	if _, err := providersession.New(ctx, f.a, f.vault, "gitlab", providers.Identity{}); !errors.Is(err, auth.ErrInvalidRequest) {
		t.Fatalf("empty subject: %v", err)
	}
}

func TestReencryptRotation(t *testing.T) {
	ctx := context.Background()
	st := storagetest.OpenSQLite(t)
	f := newFixture(t, st)
	ps, _ := providersession.New(ctx, f.a, f.vault, "dex", identity("r1", "", false))
	if _, _, err := providersession.Resolve(ctx, ps, providersession.ResolvePolicy{}); err != nil {
		t.Fatal(err)
	}
	// Rotate: a ring whose first key is new and which still holds the old one.
	raw := key32(t)
	rotated := providersession.NewTokenVault(mustRing(t, raw, f.raw), st, nil)
	changed, err := rotated.Reencrypt(ctx, "dex:r1")
	if err != nil || !changed {
		t.Fatalf("Reencrypt = %v, %v; want changed", changed, err)
	}
	changed, _ = rotated.Reencrypt(ctx, "dex:r1")
	if changed {
		t.Fatal("second Reencrypt changed again")
	}
	// Only the new key is needed now.
	onlyNew := providersession.NewTokenVault(mustRing(t, raw), st, nil)
	k, _ := st.GetKey(ctx, "dex:r1")
	if toks, err := onlyNew.Decrypt(k); err != nil || toks.AccessToken != "at-r1" {
		t.Fatalf("after rotation: %+v %v", toks, err)
	}
}
