package auth_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/internal/testclock"
	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// clock is a settable test clock.
type clock = testclock.Clock

func newClock() *clock { return testclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) }

// countingStore counts the session lookups that reach the database.
type countingStore struct {
	storage.Store
	lookups atomic.Int64
}

func (c *countingStore) GetSessionAndUser(ctx context.Context, id string) (storage.Session, storage.User, error) {
	c.lookups.Add(1)
	return c.Store.GetSessionAndUser(ctx, id)
}

func cheapHasher() *auth.PasswordHasher {
	return auth.NewPasswordHasher(auth.Argon2Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}, 4)
}

type env struct {
	a     *auth.Auth
	store *sqlstore.Store
	count *countingStore
	clock *clock
}

// backends runs f on SQLite and on PostgreSQL (skipped locally when
// PostgreSQL is missing, fatal under CI=true).
func backends(t *testing.T, f func(t *testing.T, e env)) {
	t.Helper()
	for _, b := range []struct {
		name string
		open func(testing.TB) *sqlstore.Store
	}{{"sqlite", func(t testing.TB) *sqlstore.Store { return storagetest.OpenSQLite(t) }}, {"postgres", func(t testing.TB) *sqlstore.Store { return storagetest.OpenPostgres(t) }}} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			st := b.open(t)
			f(t, newEnv(t, st, auth.Options{}))
		})
	}
}

func newEnv(t *testing.T, st *sqlstore.Store, o auth.Options) env {
	t.Helper()
	c := newClock()
	cs := &countingStore{Store: st}
	if o.Now == nil {
		o.Now = c.Now
	}
	if o.Passwords == nil {
		o.Passwords = cheapHasher()
	}
	a, err := auth.New(cs, o)
	if err != nil {
		t.Fatal(err)
	}
	return env{a: a, store: st, count: cs, clock: c}
}

func ptr[T any](v T) *T { return &v }

func TestIDShapes(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		id := auth.GenerateUserID()
		if len(id) != 15 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
			t.Fatalf("user id %q: want 15 chars of [a-z0-9]", id)
		}
		tok := auth.GenerateSessionToken()
		if !auth.ValidSessionToken(tok) {
			t.Fatalf("session token %q: want 40 chars of [a-z0-9]", tok)
		}
		if seen[tok] {
			t.Fatalf("token %q repeated", tok)
		}
		seen[tok] = true
	}
	for _, bad := range []string{"", "abc", strings.Repeat("A", 40), strings.Repeat("a", 39) + "-", strings.Repeat("a", 41), strings.Repeat("é", 20)} {
		if auth.ValidSessionToken(bad) {
			t.Errorf("ValidSessionToken(%q) = true; want false", bad)
		}
	}
}

func TestKeyID(t *testing.T) {
	if got := auth.KeyID("oidc", "a:b:c"); got != "oidc:a:b:c" {
		t.Fatalf("KeyID = %q", got)
	}
	p, u, ok := auth.SplitKeyID("oidc:a:b:c")
	if !ok || p != "oidc" || u != "a:b:c" {
		t.Fatalf("SplitKeyID = %q %q %v; want oidc a:b:c true", p, u, ok)
	}
	for _, bad := range []string{"", "nocolon", ":x", "x:"} {
		if _, _, ok := auth.SplitKeyID(bad); ok {
			t.Errorf("SplitKeyID(%q) ok; want not ok", bad)
		}
	}
}

func TestUsersAndKeys(t *testing.T) {
	backends(t, func(t *testing.T, e env) {
		ctx := context.Background()
		u, err := e.a.CreateUser(ctx, auth.CreateUserOptions{
			Key: &auth.KeySpec{ProviderID: "email", ProviderUserID: "alice@example.com", Password: ptr("correct horse")},
			Attributes: map[string]any{
				"username": "Alice", "email": "Alice@Example.com", "email_verified": true,
				"name": "Alice", "role": "admin",
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(u.ID) != 15 || *u.Email != "alice@example.com" || !u.EmailVerified || u.Attributes["role"] != "admin" {
			t.Fatalf("created user = %+v", u)
		}
		// Custom user id.
		u2, err := e.a.CreateUser(ctx, auth.CreateUserOptions{UserID: "custom-id", Attributes: map[string]any{"username": "bob"}})
		if err != nil || u2.ID != "custom-id" {
			t.Fatalf("custom id: %v %+v", err, u2)
		}
		// Duplicate key: AUTH_DUPLICATE_KEY_ID and no user left behind.
		_, err = e.a.CreateUser(ctx, auth.CreateUserOptions{UserID: "dupe-user",
			Key: &auth.KeySpec{ProviderID: "email", ProviderUserID: "alice@example.com"}})
		if !errors.Is(err, auth.ErrDuplicateKeyID) || auth.CodeOf(err) != "AUTH_DUPLICATE_KEY_ID" {
			t.Fatalf("duplicate key: got %v; want AUTH_DUPLICATE_KEY_ID", err)
		}
		if _, err := e.a.GetUser(ctx, "dupe-user"); !errors.Is(err, auth.ErrInvalidUserID) {
			t.Fatalf("user of failed create exists: %v", err)
		}
		// Username taken (case-insensitively): CONFLICT, nothing written.
		_, err = e.a.UpdateUserAttributes(ctx, u2.ID, map[string]any{"username": "ALICE", "name": "Bobby"})
		if !errors.Is(err, auth.ErrConflict) {
			t.Fatalf("username conflict: got %v; want CONFLICT", err)
		}
		if got, _ := e.a.GetUser(ctx, u2.ID); got.Name != nil {
			t.Fatalf("half-written update: name = %q", *got.Name)
		}
		// Wrong attribute type.
		if _, err := e.a.UpdateUserAttributes(ctx, u2.ID, map[string]any{"name": 42}); !errors.Is(err, auth.ErrInvalidRequest) {
			t.Fatalf("bad type: got %v", err)
		}
		// Partial update with nulls.
		got, err := e.a.UpdateUserAttributes(ctx, u.ID, map[string]any{"name": nil, "role": nil, "team": "core"})
		if err != nil || got.Name != nil || got.Attributes["role"] != nil || got.Attributes["team"] != "core" || *got.Username != "Alice" {
			t.Fatalf("partial update: %v %+v", err, got)
		}
		if _, err := e.a.UpdateUserAttributes(ctx, "nobody", map[string]any{"name": "x"}); !errors.Is(err, auth.ErrInvalidUserID) {
			t.Fatalf("update unknown user: %v", err)
		}

		// Keys.
		if _, err := e.a.CreateKey(ctx, "nobody", "github", "1", nil); !errors.Is(err, auth.ErrInvalidUserID) {
			t.Fatalf("key for unknown user: %v", err)
		}
		if _, err := e.a.CreateKey(ctx, u.ID, "oidc", "sub:with:colons", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := e.a.CreateKey(ctx, u.ID, "oidc", "sub:with:colons", nil); !errors.Is(err, auth.ErrDuplicateKeyID) {
			t.Fatalf("duplicate CreateKey: %v", err)
		}
		k, err := e.a.GetKey(ctx, "oidc", "sub:with:colons")
		if err != nil || k.ID != "oidc:sub:with:colons" || k.UserID != u.ID || k.PasswordDefined {
			t.Fatalf("GetKey = %+v, %v", k, err)
		}
		if _, err := e.a.GetKey(ctx, "github", "404"); !errors.Is(err, auth.ErrInvalidKeyID) {
			t.Fatalf("GetKey unknown: %v", err)
		}
		keys, err := e.a.GetAllUserKeys(ctx, u.ID)
		if err != nil || len(keys) != 2 {
			t.Fatalf("GetAllUserKeys = %v, %v", keys, err)
		}
		if _, err := e.a.GetAllUserKeys(ctx, "nobody"); !errors.Is(err, auth.ErrInvalidUserID) {
			t.Fatalf("GetAllUserKeys unknown: %v", err)
		}
		if err := e.a.DeleteKey(ctx, "oidc", "sub:with:colons"); err != nil {
			t.Fatal(err)
		}
		if err := e.a.DeleteKey(ctx, "nope", "nope"); err != nil {
			t.Fatalf("DeleteKey unknown: %v", err)
		}
		if err := e.a.DeleteUser(ctx, "nobody"); err != nil {
			t.Fatalf("DeleteUser unknown: %v", err)
		}
	})
}

func TestUseKey(t *testing.T) {
	backends(t, func(t *testing.T, e env) {
		ctx := context.Background()
		u, err := e.a.CreateUser(ctx, auth.CreateUserOptions{Key: &auth.KeySpec{ProviderID: "email", ProviderUserID: "a@example.com", Password: ptr("hunter22")}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.a.CreateKey(ctx, u.ID, "github", "7", nil); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name     string
			provider string
			user     string
			password *string
			want     error
		}{
			{"right password", "email", "a@example.com", ptr("hunter22"), nil},
			{"wrong password", "email", "a@example.com", ptr("hunter23"), auth.ErrInvalidPassword},
			{"missing password", "email", "a@example.com", nil, auth.ErrInvalidPassword},
			{"password for key without one", "github", "7", ptr("x"), auth.ErrInvalidPassword},
			{"key without password", "github", "7", nil, nil},
			{"unknown key", "email", "b@example.com", ptr("x"), auth.ErrInvalidKeyID},
			{"malformed key", "", "x", nil, auth.ErrInvalidKeyID},
		}
		for _, c := range cases {
			k, err := e.a.UseKey(ctx, c.provider, c.user, c.password)
			if c.want == nil {
				if err != nil || k.UserID != u.ID {
					t.Errorf("%s: got %+v, %v; want the key", c.name, k, err)
				}
			} else if !errors.Is(err, c.want) {
				t.Errorf("%s: got %v; want %v", c.name, err, c.want)
			}
		}
		// A hash the broker cannot verify: AUTH_OUTDATED_PASSWORD.
		if _, err := e.a.CreateKey(ctx, u.ID, "legacy", "bcrypt", nil); err != nil {
			t.Fatal(err)
		}
		bcrypt := "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"
		if _, err := e.store.UpdateKey(ctx, "legacy:bcrypt", func(k *storage.Key) error { k.HashedPassword = &bcrypt; return nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := e.a.UseKey(ctx, "legacy", "bcrypt", ptr("whatever")); !errors.Is(err, auth.ErrOutdatedPassword) {
			t.Fatalf("bcrypt hash: got %v; want AUTH_OUTDATED_PASSWORD", err)
		}
		// A weaker argon2id hash verifies, says NeedsRehash and is replaced.
		weak := auth.NewPasswordHasher(auth.Argon2Params{Memory: 32, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}, 1)
		h, err := weak.Hash(ctx, "old-password")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.a.CreateKey(ctx, u.ID, "legacy", "weak", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.UpdateKey(ctx, "legacy:weak", func(k *storage.Key) error { k.HashedPassword = &h; return nil }); err != nil {
			t.Fatal(err)
		}
		k, err := e.a.UseKey(ctx, "legacy", "weak", ptr("old-password"))
		if err != nil || !k.NeedsRehash {
			t.Fatalf("weak hash: got %+v, %v; want NeedsRehash", k, err)
		}
		sk, _ := e.store.GetKey(ctx, "legacy:weak")
		if *sk.HashedPassword == h || !strings.Contains(*sk.HashedPassword, "m=64,") {
			t.Fatalf("hash not replaced with current parameters: %q", *sk.HashedPassword)
		}
		k, err = e.a.UseKey(ctx, "legacy", "weak", ptr("old-password"))
		if err != nil || k.NeedsRehash {
			t.Fatalf("after rehash: got %+v, %v; want no rehash", k, err)
		}
		// UpdateKeyPassword sets and removes.
		if _, err := e.a.UpdateKeyPassword(ctx, "email", "a@example.com", ptr("new-secret")); err != nil {
			t.Fatal(err)
		}
		if _, err := e.a.UseKey(ctx, "email", "a@example.com", ptr("hunter22")); !errors.Is(err, auth.ErrInvalidPassword) {
			t.Fatalf("old password still works: %v", err)
		}
		if _, err := e.a.UseKey(ctx, "email", "a@example.com", ptr("new-secret")); err != nil {
			t.Fatal(err)
		}
		k, err = e.a.UpdateKeyPassword(ctx, "email", "a@example.com", nil)
		if err != nil || k.PasswordDefined {
			t.Fatalf("remove password: %+v %v", k, err)
		}
		if _, err := e.a.UpdateKeyPassword(ctx, "email", "zzz@example.com", ptr("x")); !errors.Is(err, auth.ErrInvalidKeyID) {
			t.Fatalf("UpdateKeyPassword unknown: %v", err)
		}
	})
}

func TestConcurrentCreateUserSameKey(t *testing.T) {
	backends(t, func(t *testing.T, e env) {
		ctx := context.Background()
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				_, errs[i] = e.a.CreateUser(ctx, auth.CreateUserOptions{Key: &auth.KeySpec{ProviderID: "github", ProviderUserID: "42"}})
			})
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, auth.ErrDuplicateKeyID):
				t.Errorf("unexpected error %v", err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d creations succeeded; want exactly 1", ok)
		}
		users, err := e.store.ListUsers(ctx, "", 100)
		if err != nil || len(users) != 1 {
			t.Fatalf("users = %d (%v); want 1", len(users), err)
		}
	})
}

func TestSessionLifecycle(t *testing.T) {
	backends(t, func(t *testing.T, e env) {
		ctx := context.Background()
		u, err := e.a.CreateUser(ctx, auth.CreateUserOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.a.CreateSession(ctx, "nobody", auth.SessionOptions{}); !errors.Is(err, auth.ErrInvalidUserID) {
			t.Fatalf("session for unknown user: %v", err)
		}
		start := e.clock.Now()
		s, err := e.a.CreateSession(ctx, u.ID, auth.SessionOptions{UserAgent: "test", IP: "127.0.0.1", Attributes: map[string]any{"device": "laptop"}})
		if err != nil {
			t.Fatal(err)
		}
		if !auth.ValidSessionToken(s.Token) || s.ID != auth.SessionIDFromToken(s.Token) || s.State != auth.StateActive || s.Fresh {
			t.Fatalf("new session = %+v", s)
		}
		if !s.ActiveExpires.Equal(start.Add(24*time.Hour)) || !s.IdleExpires.Equal(start.Add(24*time.Hour+14*24*time.Hour)) {
			t.Fatalf("expiries = %v / %v", s.ActiveExpires, s.IdleExpires)
		}
		// Active: validate does not reset.
		v, err := e.a.ValidateSession(ctx, s.Token)
		if err != nil || v.Fresh || v.State != auth.StateActive || v.User.ID != u.ID || v.Attributes["device"] != "laptop" {
			t.Fatalf("validate active = %+v, %v", v, err)
		}
		// Idle: GetSession reports idle and does not reset.
		e.clock.Advance(25 * time.Hour)
		g, err := e.a.GetSession(ctx, s.Token)
		if err != nil || g.State != auth.StateIdle || g.Fresh || !g.ActiveExpires.Equal(s.ActiveExpires) {
			t.Fatalf("get idle = %+v, %v", g, err)
		}
		g, _ = e.a.GetSession(ctx, s.Token)
		if g.State != auth.StateIdle {
			t.Fatalf("GetSession reset the session: %+v", g)
		}
		// ValidateSession resets it: Fresh, both expiries from now.
		now := e.clock.Now()
		v, err = e.a.ValidateSession(ctx, s.Token)
		if err != nil || !v.Fresh || v.State != auth.StateActive ||
			!v.ActiveExpires.Equal(now.Add(24*time.Hour)) || !v.IdleExpires.Equal(now.Add(24*time.Hour+14*24*time.Hour)) {
			t.Fatalf("validate idle = %+v, %v", v, err)
		}
		v, _ = e.a.ValidateSession(ctx, s.Token)
		if v.Fresh {
			t.Fatal("second validation is fresh again")
		}
		// Just before idle expiry it is idle; at idle expiry it is dead.
		e.clock.Advance(24*time.Hour + 14*24*time.Hour - time.Microsecond)
		if g, err := e.a.GetSession(ctx, s.Token); err != nil || g.State != auth.StateIdle {
			t.Fatalf("before idle expiry: %+v %v", g, err)
		}
		e.clock.Advance(time.Microsecond)
		if _, err := e.a.ValidateSession(ctx, s.Token); !errors.Is(err, auth.ErrInvalidSessionID) {
			t.Fatalf("dead session validated: %v", err)
		}
		if _, err := e.a.GetSession(ctx, s.Token); !errors.Is(err, auth.ErrInvalidSessionID) {
			t.Fatalf("dead session returned: %v", err)
		}
		// GetAllUserSessions: active and idle, never dead.
		live, _ := e.a.CreateSession(ctx, u.ID, auth.SessionOptions{})
		e.clock.Advance(30 * time.Hour)
		idle, _ := e.a.CreateSession(ctx, u.ID, auth.SessionOptions{})
		all, err := e.a.GetAllUserSessions(ctx, u.ID)
		if err != nil || len(all) != 2 {
			t.Fatalf("GetAllUserSessions = %d sessions (%v); want 2", len(all), err)
		}
		for _, x := range all {
			if x.Token != "" {
				t.Fatal("session listing carries a token")
			}
		}
		if _, err := e.a.GetAllUserSessions(ctx, "nobody"); !errors.Is(err, auth.ErrInvalidUserID) {
			t.Fatalf("GetAllUserSessions unknown: %v", err)
		}
		// DeleteDeadUserSessions removes the dead one only.
		if err := e.a.DeleteDeadUserSessions(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.GetSession(ctx, s.ID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("dead session still stored: %v", err)
		}
		if _, err := e.store.GetSession(ctx, live.ID); err != nil {
			t.Fatalf("live session deleted: %v", err)
		}
		// Session attributes.
		up, err := e.a.UpdateSessionAttributes(ctx, idle.Token, map[string]any{"device": "phone"})
		if err != nil || up.Attributes["device"] != "phone" {
			t.Fatalf("UpdateSessionAttributes = %+v, %v", up, err)
		}
		if _, err := e.a.UpdateSessionAttributes(ctx, auth.GenerateSessionToken(), nil); !errors.Is(err, auth.ErrInvalidSessionID) {
			t.Fatalf("UpdateSessionAttributes unknown: %v", err)
		}
		// Invalidate: by token, by id (owner only), all; garbage succeeds.
		for _, bad := range []string{"", "garbage", auth.GenerateSessionToken()} {
			if err := e.a.InvalidateSession(ctx, bad); err != nil {
				t.Fatalf("InvalidateSession(%q) = %v", bad, err)
			}
		}
		if err := e.a.InvalidateSessionID(ctx, "someone-else", live.ID); !errors.Is(err, auth.ErrInvalidSessionID) {
			t.Fatalf("InvalidateSessionID by another user: %v", err)
		}
		if err := e.a.InvalidateSessionID(ctx, u.ID, live.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.a.ValidateSession(ctx, live.Token); !errors.Is(err, auth.ErrInvalidSessionID) {
			t.Fatalf("invalidated session validates: %v", err)
		}
		if _, err := e.a.InvalidateAllUserSessions(ctx, "nobody"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.a.InvalidateAllUserSessions(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.a.ValidateSession(ctx, idle.Token); !errors.Is(err, auth.ErrInvalidSessionID) {
			t.Fatalf("session survives InvalidateAllUserSessions: %v", err)
		}
		if err := e.a.DeleteDeadUserSessions(ctx, "nobody"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRecentAuth(t *testing.T) {
	backends(t, func(t *testing.T, e env) {
		ctx := context.Background()
		u, _ := e.a.CreateUser(ctx, auth.CreateUserOptions{})
		s, _ := e.a.CreateSession(ctx, u.ID, auth.SessionOptions{})
		if err := e.a.RequireRecentAuth(s); err != nil {
			t.Fatalf("new session not recent: %v", err)
		}
		e.clock.Advance(11 * time.Minute)
		s, _ = e.a.ValidateSession(ctx, s.Token)
		if err := e.a.RequireRecentAuth(s); !errors.Is(err, auth.ErrReauthenticationRequired) {
			t.Fatalf("old session: got %v; want AUTH_REAUTHENTICATION_REQUIRED", err)
		}
		if err := e.a.Reauthenticate(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
		s, _ = e.a.ValidateSession(ctx, s.Token)
		if err := e.a.RequireRecentAuth(s); err != nil {
			t.Fatalf("after reauthentication: %v", err)
		}
	})
}

func TestMalformedTokenNeverReachesDatabase(t *testing.T) {
	e := newEnv(t, storagetest.OpenSQLite(t), auth.Options{})
	ctx := context.Background()
	for _, bad := range []string{"", "short", strings.Repeat("a", 41), strings.Repeat("A", 40), strings.Repeat("a", 39) + "'", "' OR 1=1 --"} {
		if _, err := e.a.ValidateSession(ctx, bad); !errors.Is(err, auth.ErrInvalidSessionID) {
			t.Errorf("ValidateSession(%q) = %v; want AUTH_INVALID_SESSION_ID", bad, err)
		}
		if _, err := e.a.GetSession(ctx, bad); !errors.Is(err, auth.ErrInvalidSessionID) {
			t.Errorf("GetSession(%q) = %v", bad, err)
		}
	}
	if n := e.count.lookups.Load(); n != 0 {
		t.Fatalf("%d database lookups for malformed tokens; want 0", n)
	}
	if _, err := e.a.ValidateSession(ctx, auth.GenerateSessionToken()); !errors.Is(err, auth.ErrInvalidSessionID) {
		t.Fatal(err)
	}
	if n := e.count.lookups.Load(); n != 1 {
		t.Fatalf("well-formed unknown token: %d lookups; want 1", n)
	}
}

func TestTokenNeverStored(t *testing.T) {
	backends(t, func(t *testing.T, e env) {
		ctx := context.Background()
		u, _ := e.a.CreateUser(ctx, auth.CreateUserOptions{})
		s, err := e.a.CreateSession(ctx, u.ID, auth.SessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rows, err := e.store.DB().QueryxContext(ctx, "SELECT * FROM sessions")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		n := 0
		for rows.Next() {
			n++
			m := map[string]any{}
			if err := rows.MapScan(m); err != nil {
				t.Fatal(err)
			}
			for col, v := range m {
				if strings.Contains(fmt.Sprint(v), s.Token) || strings.Contains(fmt.Sprintf("%s", v), s.Token) {
					t.Fatalf("column %s holds the session token", col)
				}
			}
			if m["id"] == nil || !strings.Contains(fmt.Sprintf("%s", m["id"]), s.ID) {
				t.Fatalf("session row id = %v; want the SHA-256 %s", m["id"], s.ID)
			}
		}
		if n != 1 {
			t.Fatalf("%d session rows; want 1", n)
		}
	})
}

func TestAttributeHooks(t *testing.T) {
	st := storagetest.OpenSQLite(t)
	e := newEnv(t, st, auth.Options{
		UserAttributes: func(u storage.User) map[string]any {
			return map[string]any{"role": u.Attributes["role"], "shaped": true}
		},
		SessionAttributes: func(s storage.Session) map[string]any { return map[string]any{"ua": s.UserAgent} },
	})
	ctx := context.Background()
	u, err := e.a.CreateUser(ctx, auth.CreateUserOptions{Attributes: map[string]any{"role": "admin", "secret": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if u.Attributes["shaped"] != true || u.Attributes["secret"] != nil {
		t.Fatalf("user attributes = %v", u.Attributes)
	}
	s, _ := e.a.CreateSession(ctx, u.ID, auth.SessionOptions{UserAgent: "curl"})
	v, err := e.a.ValidateSession(ctx, s.Token)
	if err != nil || v.Attributes["ua"] != "curl" || v.User.Attributes["role"] != "admin" {
		t.Fatalf("session attributes = %v, user %v, %v", v.Attributes, v.User.Attributes, err)
	}
}

func TestCookies(t *testing.T) {
	st := storagetest.OpenSQLite(t)
	e := newEnv(t, st, auth.Options{Cookie: auth.CookieOptions{Secure: true, Domain: "example.com"}})
	ctx := context.Background()
	u, _ := e.a.CreateUser(ctx, auth.CreateUserOptions{})
	s, _ := e.a.CreateSession(ctx, u.ID, auth.SessionOptions{})
	c := e.a.CreateSessionCookie(&s)
	if c.Name != "auth_session" || c.Value != s.Token || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode ||
		c.Path != "/" || !c.Secure || c.Domain != "example.com" || !c.Expires.Equal(s.IdleExpires) {
		t.Fatalf("session cookie = %+v", c)
	}
	blank := e.a.CreateSessionCookie(nil)
	if blank.Value != "" || blank.MaxAge >= 0 || !blank.Expires.Before(e.clock.Now()) || !blank.HttpOnly {
		t.Fatalf("blank cookie = %+v", blank)
	}
	if s := blank.String(); !strings.Contains(s, "Max-Age=0") {
		t.Fatalf("blank cookie header %q does not expire the cookie", s)
	}

	e2 := newEnv(t, st, auth.Options{Cookie: auth.CookieOptions{Name: "sid"}})
	if c := e2.a.CreateSessionCookie(&s); c.Name != "sid" || c.Secure {
		t.Fatalf("custom cookie = %+v", c)
	}
	for _, c := range []struct {
		header string
		want   string
		ok     bool
	}{
		{"auth_session=abc", "abc", true},
		{"a=1; auth_session=abc; b=2", "abc", true},
		{`auth_session="abc"`, "abc", true},
		{"auth_session=", "", false},
		{"other=abc", "", false},
		{"", "", false},
		{"garbage;;;=;auth_session=x", "x", true},
		{"xauth_session=abc", "", false},
	} {
		got, ok := e.a.ReadSessionCookie(c.header)
		if got != c.want || ok != c.ok {
			t.Errorf("ReadSessionCookie(%q) = %q, %v; want %q, %v", c.header, got, ok, c.want, c.ok)
		}
	}
	for _, c := range []struct {
		header string
		want   string
		ok     bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer abc", "abc", true},
		{"  Bearer   abc  ", "abc", true},
		{"Basic abc", "", false},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Bearer a b", "", false},
		{"", "", false},
	} {
		got, ok := auth.ReadBearerToken(c.header)
		if got != c.want || ok != c.ok {
			t.Errorf("ReadBearerToken(%q) = %q, %v; want %q, %v", c.header, got, ok, c.want, c.ok)
		}
	}
}

func TestValidateRequestOrigin(t *testing.T) {
	st := storagetest.OpenSQLite(t)
	e := newEnv(t, st, auth.Options{
		Origin:            "https://example.com",
		AllowedOrigins:    []string{"http://127.0.0.1:3000"},
		AllowedSubdomains: []string{"app"},
	})
	star := newEnv(t, st, auth.Options{Origin: "https://example.com", AllowedSubdomains: []string{"*"}})
	cases := []struct {
		a      *auth.Auth
		method string
		origin string
		ok     bool
	}{
		{e.a, "GET", "https://evil.example", true},
		{e.a, "HEAD", "", true},
		{e.a, "OPTIONS", "https://evil.example", true},
		{e.a, "POST", "https://example.com", true},
		{e.a, "POST", "https://EXAMPLE.com:443", true},
		{e.a, "DELETE", "http://127.0.0.1:3000", true},
		{e.a, "POST", "https://app.example.com", true},
		{e.a, "POST", "https://other.example.com", false},
		{e.a, "POST", "http://example.com", false},
		{e.a, "POST", "https://evilexample.com", false},
		{e.a, "POST", "https://example.com.evil.com", false},
		{e.a, "POST", "https://app.example.com.evil.com", false},
		{e.a, "POST", "", false},
		{e.a, "POST", "null", false},
		{e.a, "PATCH", "http://127.0.0.1:3001", false},
		{star.a, "POST", "https://deep.app.example.com", true},
		{star.a, "POST", "https://evilexample.com", false},
		{star.a, "POST", "https://example.com.evil.com", false},
	}
	for _, c := range cases {
		r := httptest.NewRequest(c.method, "https://example.com/logout", nil)
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		err := c.a.ValidateRequestOrigin(r)
		if (err == nil) != c.ok {
			t.Errorf("%s Origin %q: err = %v; want ok=%v", c.method, c.origin, err, c.ok)
		}
		if err != nil && !errors.Is(err, auth.ErrInvalidRequest) {
			t.Errorf("error %v is not AUTH_INVALID_REQUEST", err)
		}
	}
	if _, err := auth.New(st, auth.Options{AllowedOrigins: []string{"https://x.example/path"}}); err == nil {
		t.Fatal("an origin with a path was accepted")
	}
}

func TestCheckCrossOrigin(t *testing.T) {
	e := newEnv(t, storagetest.OpenSQLite(t), auth.Options{
		Origin: "http://localhost:8080", AllowedOrigins: []string{"http://127.0.0.1:3000"}, AllowedSubdomains: []string{"app"},
	})
	cases := []struct {
		name    string
		method  string
		headers map[string]string
		ok      bool
	}{
		{"non-browser client", "POST", nil, true},
		{"same origin", "POST", map[string]string{"Origin": "http://localhost:8080", "Sec-Fetch-Site": "same-origin"}, true},
		{"allowed origin", "POST", map[string]string{"Origin": "http://127.0.0.1:3000", "Sec-Fetch-Site": "cross-site"}, true},
		{"allowed subdomain", "POST", map[string]string{"Origin": "http://app.localhost:8080", "Sec-Fetch-Site": "same-site"}, true},
		{"cross-site", "POST", map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, false},
		{"cross-site without fetch metadata", "POST", map[string]string{"Origin": "https://evil.example"}, false},
		{"look-alike", "POST", map[string]string{"Origin": "http://evillocalhost:8080", "Sec-Fetch-Site": "cross-site"}, false},
		{"cross-site GET", "GET", map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, true},
	}
	h := e.a.ProtectCrossOrigin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	for _, c := range cases {
		r := httptest.NewRequest(c.method, "http://localhost:8080/logout", nil)
		for k, v := range c.headers {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if (w.Code == 204) != c.ok {
			t.Errorf("%s: status %d; want ok=%v", c.name, w.Code, c.ok)
		}
		if !c.ok && (w.Code != 403 || !strings.Contains(w.Body.String(), "AUTH_INVALID_REQUEST")) {
			t.Errorf("%s: got %d %s; want 403 AUTH_INVALID_REQUEST", c.name, w.Code, w.Body)
		}
	}
}

func TestMiddleware(t *testing.T) {
	backends(t, func(t *testing.T, e env) {
		ctx := context.Background()
		u, _ := e.a.CreateUser(ctx, auth.CreateUserOptions{})
		s, _ := e.a.CreateSession(ctx, u.ID, auth.SessionOptions{})
		h := e.a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if s, ok := auth.SessionFromContext(r.Context()); ok {
				fmt.Fprint(w, s.User.ID)
				return
			}
			fmt.Fprint(w, "anonymous")
		}))
		do := func(hdr, val string) *httptest.ResponseRecorder {
			r := httptest.NewRequest("GET", "/", nil)
			if hdr != "" {
				r.Header.Set(hdr, val)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			return w
		}
		if w := do("", ""); w.Body.String() != "anonymous" || w.Header().Get("Set-Cookie") != "" {
			t.Fatalf("no cookie: %q %q", w.Body, w.Header().Get("Set-Cookie"))
		}
		w := do("Cookie", "auth_session="+s.Token)
		if w.Body.String() != u.ID || w.Header().Get("Set-Cookie") != "" {
			t.Fatalf("active cookie: body %q, Set-Cookie %q", w.Body, w.Header().Get("Set-Cookie"))
		}
		if w := do("Authorization", "Bearer "+s.Token); w.Body.String() != u.ID {
			t.Fatalf("bearer: %q", w.Body)
		}
		// Idle session: reset, cookie refreshed with the new expiry.
		e.clock.Advance(25 * time.Hour)
		w = do("Cookie", "auth_session="+s.Token)
		sc := w.Result().Cookies()
		if w.Body.String() != u.ID || len(sc) != 1 || sc[0].Value != s.Token || !sc[0].Expires.After(s.IdleExpires) {
			t.Fatalf("idle cookie: body %q cookies %+v", w.Body, sc)
		}
		// Invalid cookie: anonymous and cleared.
		w = do("Cookie", "auth_session="+auth.GenerateSessionToken())
		sc = w.Result().Cookies()
		if w.Body.String() != "anonymous" || len(sc) != 1 || sc[0].MaxAge >= 0 {
			t.Fatalf("invalid cookie: body %q cookies %+v", w.Body, sc)
		}
	})
}

func TestMiddlewareStoreDown(t *testing.T) {
	st := storagetest.OpenSQLite(t)
	e := newEnv(t, st, auth.Options{})
	ctx := context.Background()
	u, _ := e.a.CreateUser(ctx, auth.CreateUserOptions{})
	s, _ := e.a.CreateSession(ctx, u.ID, auth.SessionOptions{})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	h := e.a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.Error("handler reached with store down") }))
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Cookie", "auth_session="+s.Token)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 503 || !strings.Contains(w.Body.String(), "SERVICE_UNAVAILABLE") {
		t.Fatalf("store down: %d %s; want 503 SERVICE_UNAVAILABLE", w.Code, w.Body)
	}
}
