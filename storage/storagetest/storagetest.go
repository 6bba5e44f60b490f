// Package storagetest is the conformance suite of [storage.Store] and the
// helpers that give tests a real database.
//
// [Run] checks every Store method and rule against a backend. The helpers
// [OpenSQLite] and [OpenPostgres] return migrated [sqlstore.Store]s in a
// temporary SQLite file or a fresh PostgreSQL schema; other packages' tests
// use them too. PostgreSQL comes from BROKER_TEST_DATABASE_URL (default
// [DefaultPostgresURL]); when it does not answer, tests skip, or fail when
// CI=true.
package storagetest

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/brokerauth/broker/storage"
)

// t0 is the suite's clock: a fixed time with microseconds, so that round
// trips are exact in both dialects.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)

// at returns t0 plus d.
func at(d time.Duration) time.Time { return t0.Add(d) }

func ptr[T any](v T) *T { return &v }

// deref returns *p, or the zero value for nil.
func deref[T any](p *T) T {
	var v T
	if p != nil {
		v = *p
	}
	return v
}

// equate compares records field by field; time.Time fields compare with
// their Equal method, and nil and empty slices and maps are equal.
var equate = cmpopts.EquateEmpty()

// Run runs the conformance suite. newStore must return a new, empty,
// migrated store for each call; it is called once per subtest, from
// parallel subtests.
func Run(t *testing.T, newStore func(t *testing.T) storage.Store) {
	suite := []struct {
		name string
		fn   func(t *testing.T, s storage.Store)
	}{
		{"Ping", testPing},
		{"Users/CreateAndGet", testCreateAndGetUser},
		{"Users/NilAttributes", testUserNilAttributes},
		{"Users/TimesUTCMicroseconds", testUserTimes},
		{"Users/CreateWithKey", testCreateUserWithKey},
		{"Users/DuplicateID", testDuplicateUserID},
		{"Users/DuplicateKeyLeavesNoUser", testCreateUserDuplicateKey},
		{"Users/ConcurrentCreateSameKey", testConcurrentCreateUserSameKey},
		{"Users/Username", testUsername},
		{"Users/VerifiedEmail", testVerifiedEmail},
		{"Users/EmailLowerCased", testEmailLowerCased},
		{"Users/WebAuthnHandle", testWebAuthnHandle},
		{"Users/Update", testUpdateUser},
		{"Users/UpdateErrorWritesNothing", testUpdateUserError},
		{"Users/UpdateConflictWritesNothing", testUpdateUserConflict},
		{"Users/Delete", testDeleteUser},
		{"Users/List", testListUsers},
		{"Keys/CRUD", testKeys},
		{"Keys/MissingUser", testKeyMissingUser},
		{"Keys/Update", testUpdateKey},
		{"Keys/UpdateConcurrent", testUpdateKeyConcurrent},
		{"Keys/ListWithTokens", testListKeysWithTokens},
		{"Sessions/CreateAndGet", testSessions},
		{"Sessions/GetSessionAndUser", testGetSessionAndUser},
		{"Sessions/ListUserSessions", testListUserSessions},
		{"Sessions/TimeComparison", testSessionTimeComparison},
		{"Sessions/Touch", testTouchSession},
		{"Sessions/Reauthenticate", testReauthenticateSession},
		{"Sessions/Attributes", testSessionAttributes},
		{"Sessions/Delete", testDeleteSessions},
		{"Sessions/DeleteDeadSessions", testDeleteDeadSessions},
		{"Authenticators/CreateAndGet", testAuthenticators},
		{"Authenticators/List", testListAuthenticators},
		{"Authenticators/UpdateCounter", testUpdateAuthenticatorCounter},
		{"Authenticators/CreatePasskey", testCreatePasskey},
		{"Authenticators/RenameDelete", testRenameDeleteAuthenticator},
		{"VerificationTokens/UseOnce", testVerificationTokenUseOnce},
		{"VerificationTokens/Expired", testVerificationTokenExpired},
		{"VerificationTokens/Concurrent", testVerificationTokenConcurrent},
		{"VerificationTokens/DeleteExpired", testDeleteExpiredVerificationTokens},
		{"FlowStates", testFlowStates},
	}
	suite = append(suite, rateLimitTests...)
	suite = append(suite, auditTests...)
	for _, tc := range suite {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

// --- helpers ---

func newUser(id string) storage.User {
	return storage.User{ID: id, Attributes: map[string]any{}, CreatedAt: t0, UpdatedAt: t0}
}

func newKey(userID, provider, subject string) storage.Key {
	return storage.Key{
		ID: provider + ":" + subject, UserID: userID, Provider: provider, ProviderUserID: subject,
		CreatedAt: t0, UpdatedAt: t0,
	}
}

func newSession(id, userID string, idleExpires time.Time) storage.Session {
	return storage.Session{
		ID: id, UserID: userID,
		ActiveExpires: idleExpires.Add(-time.Hour), IdleExpires: idleExpires,
		CreatedAt: t0, AuthenticatedAt: t0, LastSeenAt: t0,
		UserAgent: "test", IP: "192.0.2.1", Attributes: map[string]any{},
	}
}

func newAuthenticator(id, userID string) storage.Authenticator {
	return storage.Authenticator{
		CredentialID: []byte(id), UserID: userID, PublicKey: []byte("pk-" + id),
		DeviceType: "singleDevice", Transports: []string{"internal"}, AttestationType: "none",
		Name: "key " + id, CreatedAt: t0,
	}
}

func mustCreateUser(t *testing.T, s storage.Store, u storage.User, k *storage.Key) {
	t.Helper()
	if err := s.CreateUser(t.Context(), u, k); err != nil {
		t.Fatalf("CreateUser(%s) = %v", u.ID, err)
	}
}

func mustCreateSession(t *testing.T, s storage.Store, sess storage.Session) {
	t.Helper()
	if err := s.CreateSession(t.Context(), sess); err != nil {
		t.Fatalf("CreateSession(%s) = %v", sess.ID, err)
	}
}

func mustCreateKey(t *testing.T, s storage.Store, k storage.Key) {
	t.Helper()
	if err := s.CreateKey(t.Context(), k); err != nil {
		t.Fatalf("CreateKey(%s) = %v", k.ID, err)
	}
}

func mustCreateAuthenticator(t *testing.T, s storage.Store, a storage.Authenticator) {
	t.Helper()
	if err := s.CreateAuthenticator(t.Context(), a); err != nil {
		t.Fatalf("CreateAuthenticator(%s) = %v", a.CredentialID, err)
	}
}

func mustGetUser(t *testing.T, s storage.Store, id string) storage.User {
	t.Helper()
	u, err := s.GetUser(t.Context(), id)
	if err != nil {
		t.Fatalf("GetUser(%s) = %v", id, err)
	}
	return u
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("%s: got error %v; want storage.ErrNotFound", what, err)
	}
}

func wantConflict(t *testing.T, what string, err error, field string) {
	t.Helper()
	var ce *storage.ConflictError
	if !errors.As(err, &ce) {
		t.Errorf("%s: got error %v; want *storage.ConflictError{Field: %q}", what, err, field)
		return
	}
	if ce.Field != field {
		t.Errorf("%s: got conflict on %q; want %q", what, ce.Field, field)
	}
	if !errors.Is(err, storage.ErrAlreadyExists) {
		t.Errorf("%s: errors.Is(%v, storage.ErrAlreadyExists) = false; want true", what, err)
	}
}

func noErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func diff(t *testing.T, what string, want, got any) {
	t.Helper()
	if d := cmp.Diff(want, got, equate); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}

// --- users ---

func testPing(t *testing.T, s storage.Store) {
	noErr(t, "Ping", s.Ping(t.Context()))
}

func testCreateAndGetUser(t *testing.T, s storage.Store) {
	ctx := t.Context()
	u := storage.User{
		ID:              "u1",
		Username:        ptr("Alice"),
		Email:           ptr("alice@example.com"),
		EmailVerifiedAt: ptr(at(time.Minute)),
		Name:            ptr("Alice Liddell"),
		Image:           ptr("https://example.com/a.png"),
		Attributes:      map[string]any{"role": "admin", "n": float64(3), "tags": []any{"a", "b"}, "nested": map[string]any{"x": true}},
		WebAuthnHandle:  []byte{0, 1, 2, 255},
		CreatedAt:       t0,
		UpdatedAt:       at(time.Second),
	}
	mustCreateUser(t, s, u, nil)
	diff(t, "GetUser", u, mustGetUser(t, s, "u1"))

	// A user with nothing optional.
	bare := newUser("u2")
	mustCreateUser(t, s, bare, nil)
	diff(t, "GetUser(bare)", bare, mustGetUser(t, s, "u2"))

	_, err := s.GetUser(ctx, "missing")
	wantNotFound(t, "GetUser(missing)", err)
	_, err = s.GetUserByEmail(ctx, "nobody@example.com")
	wantNotFound(t, "GetUserByEmail(unknown)", err)
	_, err = s.GetUserByUsername(ctx, "nobody")
	wantNotFound(t, "GetUserByUsername(unknown)", err)
	_, err = s.GetUserByKey(ctx, "github:1")
	wantNotFound(t, "GetUserByKey(unknown)", err)
}

func testUserNilAttributes(t *testing.T, s storage.Store) {
	u := newUser("u1")
	u.Attributes = nil
	mustCreateUser(t, s, u, nil)
	got := mustGetUser(t, s, "u1")
	if got.Attributes == nil || len(got.Attributes) != 0 {
		t.Errorf("Attributes = %#v; want a non-nil empty map", got.Attributes)
	}
}

func testUserTimes(t *testing.T, s storage.Store) {
	// The wall clock, truncated to the microsecond, survives a round trip.
	now := time.Now()
	u := newUser("u1")
	u.CreatedAt = now
	// Nanoseconds are dropped; a non-UTC location comes back as UTC.
	u.UpdatedAt = time.Date(2031, 6, 7, 8, 9, 10, 123456789, time.FixedZone("X", -5*3600))
	mustCreateUser(t, s, u, nil)
	got := mustGetUser(t, s, "u1")
	if want := now.Truncate(time.Microsecond); !got.CreatedAt.Equal(want) {
		t.Errorf("CreatedAt = %v; want %v", got.CreatedAt, want)
	}
	if want := time.Date(2031, 6, 7, 13, 9, 10, 123456000, time.UTC); got.UpdatedAt != want {
		t.Errorf("UpdatedAt = %v (%v); want %v in UTC", got.UpdatedAt, got.UpdatedAt.Location(), want)
	}
	if got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt location = %v; want UTC", got.CreatedAt.Location())
	}

	// The zero time survives too.
	zero := storage.User{ID: "u2", Attributes: map[string]any{}}
	mustCreateUser(t, s, zero, nil)
	diff(t, "user with zero times", zero, mustGetUser(t, s, "u2"))
}

func testCreateUserWithKey(t *testing.T, s storage.Store) {
	ctx := t.Context()
	u := newUser("u1")
	k := newKey("u1", "email", "alice@example.com")
	k.HashedPassword = ptr("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA")
	mustCreateUser(t, s, u, &k)

	gotKey, err := s.GetKey(ctx, k.ID)
	noErr(t, "GetKey", err)
	diff(t, "GetKey", k, gotKey)
	gotUser, err := s.GetUserByKey(ctx, k.ID)
	noErr(t, "GetUserByKey", err)
	diff(t, "GetUserByKey", u, gotUser)

	// The key's UserID may be left empty: it is the new user's.
	k2 := newKey("", "github", "42")
	mustCreateUser(t, s, newUser("u2"), &k2)
	gotKey, err = s.GetKey(ctx, k2.ID)
	noErr(t, "GetKey(k2)", err)
	if gotKey.UserID != "u2" {
		t.Errorf("key UserID = %q; want u2", gotKey.UserID)
	}
}

func testDuplicateUserID(t *testing.T, s storage.Store) {
	mustCreateUser(t, s, newUser("u1"), nil)
	u := newUser("u1")
	u.Name = ptr("other")
	wantConflict(t, "CreateUser(same id)", s.CreateUser(t.Context(), u, nil), storage.ConflictUserID)
	if got := mustGetUser(t, s, "u1"); got.Name != nil {
		t.Errorf("Name = %q; want the first user untouched", *got.Name)
	}
}

func testCreateUserDuplicateKey(t *testing.T, s storage.Store) {
	ctx := t.Context()
	k := newKey("u1", "github", "42")
	mustCreateUser(t, s, newUser("u1"), &k)

	k2 := newKey("u2", "github", "42")
	u2 := newUser("u2")
	u2.Username = ptr("bob")
	wantConflict(t, "CreateUser(duplicate key)", s.CreateUser(ctx, u2, &k2), storage.ConflictKey)
	_, err := s.GetUser(ctx, "u2")
	wantNotFound(t, "GetUser after failed CreateUser", err)
	_, err = s.GetUserByUsername(ctx, "bob")
	wantNotFound(t, "GetUserByUsername after failed CreateUser", err)
	owner, err := s.GetUserByKey(ctx, k.ID)
	noErr(t, "GetUserByKey", err)
	if owner.ID != "u1" {
		t.Errorf("key owner = %q; want u1", owner.ID)
	}
}

func testConcurrentCreateUserSameKey(t *testing.T, s storage.Store) {
	ctx := t.Context()
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("u%d", i)
			k := newKey(id, "github", "42")
			errs[i] = s.CreateUser(ctx, newUser(id), &k)
		})
	}
	wg.Wait()
	winner := ""
	for i, err := range errs {
		id := fmt.Sprintf("u%d", i)
		if err == nil {
			if winner != "" {
				t.Errorf("both %s and %s created a user with key github:42", winner, id)
			}
			winner = id
			continue
		}
		wantConflict(t, "CreateUser("+id+")", err, storage.ConflictKey)
		_, err := s.GetUser(ctx, id)
		wantNotFound(t, "GetUser("+id+") of a loser", err)
	}
	if winner == "" {
		t.Fatalf("no CreateUser succeeded: %v", errs)
	}
	owner, err := s.GetUserByKey(ctx, "github:42")
	noErr(t, "GetUserByKey", err)
	if owner.ID != winner {
		t.Errorf("key owner = %q; want %q", owner.ID, winner)
	}
}

func testUsername(t *testing.T, s storage.Store) {
	ctx := t.Context()
	u := newUser("u1")
	u.Username = ptr("Alice")
	mustCreateUser(t, s, u, nil)
	// Users without a username do not collide.
	mustCreateUser(t, s, newUser("u2"), nil)
	mustCreateUser(t, s, newUser("u3"), nil)

	for _, name := range []string{"Alice", "alice", "ALICE"} {
		got, err := s.GetUserByUsername(ctx, name)
		noErr(t, "GetUserByUsername("+name+")", err)
		if got.ID != "u1" || got.Username == nil || *got.Username != "Alice" {
			t.Errorf("GetUserByUsername(%s) = %s %q; want u1 with its username as written", name, got.ID, deref(got.Username))
		}
	}
	dup := newUser("u4")
	dup.Username = ptr("aLiCe")
	wantConflict(t, "CreateUser(aLiCe)", s.CreateUser(ctx, dup, nil), storage.ConflictUsername)
	_, err := s.GetUser(ctx, "u4")
	wantNotFound(t, "GetUser(u4)", err)
}

func testVerifiedEmail(t *testing.T, s storage.Store) {
	ctx := t.Context()
	owner := newUser("owner")
	owner.Email = ptr("a@example.com")
	owner.EmailVerifiedAt = ptr(t0)
	mustCreateUser(t, s, owner, nil)

	// Unverified holders of the same address never block and are never matched.
	for _, id := range []string{"pending1", "pending2"} {
		u := newUser(id)
		u.Email = ptr("A@example.com")
		mustCreateUser(t, s, u, nil)
	}
	got, err := s.GetUserByEmail(ctx, "A@Example.COM")
	noErr(t, "GetUserByEmail", err)
	if got.ID != "owner" {
		t.Errorf("GetUserByEmail = %s; want owner", got.ID)
	}

	// A second verified holder is a conflict.
	thief := newUser("thief")
	thief.Email = ptr("A@EXAMPLE.com")
	thief.EmailVerifiedAt = ptr(t0)
	wantConflict(t, "CreateUser(verified duplicate)", s.CreateUser(ctx, thief, nil), storage.ConflictEmail)

	// Verifying an unverified duplicate is a conflict too, and writes nothing.
	_, err = s.UpdateUser(ctx, "pending1", func(u *storage.User) error {
		u.EmailVerifiedAt = ptr(at(time.Hour))
		u.Name = ptr("changed")
		return nil
	})
	wantConflict(t, "UpdateUser(verify duplicate)", err, storage.ConflictEmail)
	if p := mustGetUser(t, s, "pending1"); p.EmailVerifiedAt != nil || p.Name != nil {
		t.Errorf("pending1 = %+v; want it unchanged", p)
	}

	// An address held only unverified is not found.
	u := newUser("lonely")
	u.Email = ptr("b@example.com")
	mustCreateUser(t, s, u, nil)
	_, err = s.GetUserByEmail(ctx, "b@example.com")
	wantNotFound(t, "GetUserByEmail(unverified only)", err)

	// Once the owner lets the address go, a pending holder can verify it.
	_, err = s.UpdateUser(ctx, "owner", func(u *storage.User) error { u.Email = ptr("new@example.com"); return nil })
	noErr(t, "UpdateUser(owner)", err)
	_, err = s.UpdateUser(ctx, "pending2", func(u *storage.User) error { u.EmailVerifiedAt = ptr(t0); return nil })
	noErr(t, "UpdateUser(pending2 verifies)", err)
	got, err = s.GetUserByEmail(ctx, "a@example.com")
	noErr(t, "GetUserByEmail after transfer", err)
	if got.ID != "pending2" {
		t.Errorf("GetUserByEmail = %s; want pending2", got.ID)
	}
}

func testEmailLowerCased(t *testing.T, s storage.Store) {
	u := newUser("u1")
	u.Email = ptr("Bob@Example.COM")
	mustCreateUser(t, s, u, nil)
	if got := mustGetUser(t, s, "u1"); deref(got.Email) != "bob@example.com" {
		t.Errorf("Email = %q; want bob@example.com", deref(got.Email))
	}
	got, err := s.UpdateUser(t.Context(), "u1", func(u *storage.User) error { u.Email = ptr("New@Example.Org"); return nil })
	noErr(t, "UpdateUser", err)
	if deref(got.Email) != "new@example.org" {
		t.Errorf("UpdateUser Email = %q; want new@example.org", deref(got.Email))
	}
	if got := mustGetUser(t, s, "u1"); deref(got.Email) != "new@example.org" {
		t.Errorf("stored Email = %q; want new@example.org", deref(got.Email))
	}
}

func testWebAuthnHandle(t *testing.T, s storage.Store) {
	ctx := t.Context()
	u := newUser("u1")
	u.WebAuthnHandle = []byte("handle-1")
	mustCreateUser(t, s, u, nil)
	mustCreateUser(t, s, newUser("u2"), nil)
	mustCreateUser(t, s, newUser("u3"), nil) // two users without a handle do not collide

	got, err := s.GetUserByWebAuthnHandle(ctx, []byte("handle-1"))
	noErr(t, "GetUserByWebAuthnHandle", err)
	if got.ID != "u1" {
		t.Errorf("GetUserByWebAuthnHandle = %s; want u1", got.ID)
	}
	_, err = s.GetUserByWebAuthnHandle(ctx, []byte("handle-2"))
	wantNotFound(t, "GetUserByWebAuthnHandle(unknown)", err)
	_, err = s.GetUserByWebAuthnHandle(ctx, nil)
	wantNotFound(t, "GetUserByWebAuthnHandle(nil)", err)

	// Set once through UpdateUser.
	_, err = s.UpdateUser(ctx, "u2", func(u *storage.User) error { u.WebAuthnHandle = []byte("handle-2"); return nil })
	noErr(t, "UpdateUser(set handle)", err)
	got, err = s.GetUserByWebAuthnHandle(ctx, []byte("handle-2"))
	noErr(t, "GetUserByWebAuthnHandle(handle-2)", err)
	if got.ID != "u2" {
		t.Errorf("GetUserByWebAuthnHandle(handle-2) = %s; want u2", got.ID)
	}
	_, err = s.UpdateUser(ctx, "u3", func(u *storage.User) error { u.WebAuthnHandle = []byte("handle-1"); return nil })
	wantConflict(t, "UpdateUser(duplicate handle)", err, storage.ConflictWebAuthnHandle)
}

func testUpdateUser(t *testing.T, s storage.Store) {
	ctx := t.Context()
	u := newUser("u1")
	u.Username = ptr("alice")
	u.Attributes = map[string]any{"a": "1", "b": "2"}
	mustCreateUser(t, s, u, nil)

	got, err := s.UpdateUser(ctx, "u1", func(u *storage.User) error {
		if u.Username == nil || *u.Username != "alice" {
			return fmt.Errorf("update got username %q; want alice", deref(u.Username))
		}
		u.ID = "hijack"         // cannot change
		u.CreatedAt = at(-9999) // cannot change
		u.Username = ptr("Alicia")
		u.Name = ptr("Alicia L.")
		u.Image = ptr("https://example.com/x.png")
		u.Attributes = map[string]any{"a": "changed"}
		u.UpdatedAt = at(time.Hour)
		return nil
	})
	noErr(t, "UpdateUser", err)
	want := newUser("u1")
	want.Username = ptr("Alicia")
	want.Name = ptr("Alicia L.")
	want.Image = ptr("https://example.com/x.png")
	want.Attributes = map[string]any{"a": "changed"}
	want.UpdatedAt = at(time.Hour)
	diff(t, "UpdateUser result", want, got)
	diff(t, "GetUser after UpdateUser", want, mustGetUser(t, s, "u1"))
	_, err = s.GetUser(ctx, "hijack")
	wantNotFound(t, "GetUser(hijack)", err)

	// Clearing optional fields.
	got, err = s.UpdateUser(ctx, "u1", func(u *storage.User) error {
		u.Username, u.Name, u.Image, u.Attributes = nil, nil, nil, nil
		return nil
	})
	noErr(t, "UpdateUser(clear)", err)
	want.Username, want.Name, want.Image, want.Attributes = nil, nil, nil, map[string]any{}
	diff(t, "UpdateUser(clear) result", want, got)
	if got.Attributes == nil {
		t.Errorf("Attributes = nil; want an empty map")
	}

	_, err = s.UpdateUser(ctx, "missing", func(*storage.User) error { return nil })
	wantNotFound(t, "UpdateUser(missing)", err)
}

var errStop = errors.New("stop")

func testUpdateUserError(t *testing.T, s storage.Store) {
	u := newUser("u1")
	u.Name = ptr("before")
	mustCreateUser(t, s, u, nil)
	_, err := s.UpdateUser(t.Context(), "u1", func(u *storage.User) error {
		u.Name = ptr("after")
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Errorf("UpdateUser = %v; want the closure's error", err)
	}
	diff(t, "user after failed update", u, mustGetUser(t, s, "u1"))
}

func testUpdateUserConflict(t *testing.T, s storage.Store) {
	a := newUser("a")
	a.Username = ptr("alice")
	mustCreateUser(t, s, a, nil)
	b := newUser("b")
	b.Username = ptr("bob")
	mustCreateUser(t, s, b, nil)

	_, err := s.UpdateUser(t.Context(), "b", func(u *storage.User) error {
		u.Name = ptr("Bob")
		u.Username = ptr("ALICE")
		return nil
	})
	wantConflict(t, "UpdateUser(duplicate username)", err, storage.ConflictUsername)
	diff(t, "b after conflicting update", b, mustGetUser(t, s, "b"))
}

func testDeleteUser(t *testing.T, s storage.Store) {
	ctx := t.Context()
	for _, id := range []string{"doomed", "kept"} {
		k := newKey(id, "github", id)
		mustCreateUser(t, s, newUser(id), &k)
		mustCreateKey(t, s, newKey(id, "email", id+"@example.com"))
		mustCreateSession(t, s, newSession("s-"+id, id, at(time.Hour)))
		mustCreateAuthenticator(t, s, newAuthenticator("c-"+id, id))
	}
	noErr(t, "DeleteUser", s.DeleteUser(ctx, "doomed"))

	_, err := s.GetUser(ctx, "doomed")
	wantNotFound(t, "GetUser(doomed)", err)
	for _, id := range []string{"github:doomed", "email:doomed@example.com"} {
		_, err = s.GetKey(ctx, id)
		wantNotFound(t, "GetKey("+id+")", err)
	}
	_, err = s.GetSession(ctx, "s-doomed")
	wantNotFound(t, "GetSession(s-doomed)", err)
	_, err = s.GetAuthenticator(ctx, []byte("c-doomed"))
	wantNotFound(t, "GetAuthenticator(c-doomed)", err)
	keys, err := s.ListUserKeys(ctx, "doomed")
	noErr(t, "ListUserKeys(doomed)", err)
	if len(keys) != 0 {
		t.Errorf("ListUserKeys(doomed) = %d keys; want 0", len(keys))
	}

	// The other user keeps everything.
	mustGetUser(t, s, "kept")
	keys, err = s.ListUserKeys(ctx, "kept")
	noErr(t, "ListUserKeys(kept)", err)
	if len(keys) != 2 {
		t.Errorf("ListUserKeys(kept) = %d keys; want 2", len(keys))
	}
	_, err = s.GetSession(ctx, "s-kept")
	noErr(t, "GetSession(s-kept)", err)
	_, err = s.GetAuthenticator(ctx, []byte("c-kept"))
	noErr(t, "GetAuthenticator(c-kept)", err)

	noErr(t, "DeleteUser(unknown)", s.DeleteUser(ctx, "unknown"))
	noErr(t, "DeleteUser(again)", s.DeleteUser(ctx, "doomed"))
}

func testListUsers(t *testing.T, s storage.Store) {
	ctx := t.Context()
	// Creation order differs from id order; c and d share a creation time.
	created := map[string]time.Duration{"e": 1, "c": 2, "d": 2, "a": 3, "b": 4}
	for id, d := range created {
		u := newUser(id)
		u.CreatedAt = at(d * time.Minute)
		mustCreateUser(t, s, u, nil)
	}
	want := []string{"e", "c", "d", "a", "b"}

	var got []string
	after := ""
	for range 10 {
		page, err := s.ListUsers(ctx, after, 2)
		noErr(t, "ListUsers", err)
		if len(page) > 2 {
			t.Fatalf("ListUsers returned %d users; want at most 2", len(page))
		}
		if len(page) == 0 {
			break
		}
		for _, u := range page {
			got = append(got, u.ID)
		}
		after = page[len(page)-1].ID
	}
	diff(t, "ListUsers pages", want, got)

	all, err := s.ListUsers(ctx, "", 100)
	noErr(t, "ListUsers(all)", err)
	if len(all) != 5 || !all[0].CreatedAt.Equal(at(time.Minute)) {
		t.Errorf("ListUsers(all) = %d users; want 5, the first created at %v", len(all), at(time.Minute))
	}
	if _, err := s.ListUsers(ctx, "", 0); err == nil {
		t.Errorf("ListUsers(limit 0) = nil error; want an error")
	}
}

// --- keys ---

func testKeys(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, newUser("u1"), nil)
	mustCreateUser(t, s, newUser("u2"), nil)

	pw := newKey("u1", "email", "alice@example.com")
	pw.HashedPassword = ptr("hash")
	pw.CreatedAt = at(2 * time.Minute)
	oauth := newKey("u1", "oidc", "sub:with:colons")
	oauth.AccessToken = ptr("enc-access")
	oauth.RefreshToken = ptr("enc-refresh")
	oauth.IDToken = ptr("enc-id")
	oauth.TokenExpiry = ptr(at(time.Hour))
	oauth.Scope = ptr("openid email")
	oauth.TokenType = ptr("Bearer")
	oauth.CreatedAt = at(time.Minute)
	other := newKey("u2", "github", "7")
	for _, k := range []storage.Key{pw, oauth, other} {
		mustCreateKey(t, s, k)
	}

	got, err := s.GetKey(ctx, oauth.ID)
	noErr(t, "GetKey", err)
	diff(t, "GetKey(oauth)", oauth, got)
	got, err = s.GetKey(ctx, pw.ID)
	noErr(t, "GetKey", err)
	diff(t, "GetKey(pw)", pw, got)

	list, err := s.ListUserKeys(ctx, "u1")
	noErr(t, "ListUserKeys", err)
	diff(t, "ListUserKeys (oldest first)", []storage.Key{oauth, pw}, list)
	list, err = s.ListUserKeys(ctx, "nobody")
	noErr(t, "ListUserKeys(nobody)", err)
	if len(list) != 0 {
		t.Errorf("ListUserKeys(nobody) = %d keys; want 0", len(list))
	}

	dup := newKey("u2", "email", "alice@example.com")
	wantConflict(t, "CreateKey(duplicate)", s.CreateKey(ctx, dup), storage.ConflictKey)
	got, err = s.GetKey(ctx, pw.ID)
	noErr(t, "GetKey after duplicate", err)
	if got.UserID != "u1" {
		t.Errorf("key owner = %s; want u1", got.UserID)
	}

	gone, err := s.DeleteKey(ctx, pw.ID)
	noErr(t, "DeleteKey", err)
	if gone.ID != pw.ID || gone.UserID != "u1" || gone.Provider != pw.Provider || gone.HashedPassword == nil {
		t.Errorf("DeleteKey returned %+v; want the deleted key of u1", gone)
	}
	_, err = s.GetKey(ctx, pw.ID)
	wantNotFound(t, "GetKey after DeleteKey", err)
	_, err = s.DeleteKey(ctx, pw.ID)
	wantNotFound(t, "DeleteKey(unknown)", err)
	_, err = s.GetKey(ctx, "github:unknown")
	wantNotFound(t, "GetKey(unknown)", err)
}

func testKeyMissingUser(t *testing.T, s storage.Store) {
	err := s.CreateKey(t.Context(), newKey("ghost", "github", "1"))
	wantNotFound(t, "CreateKey(missing user)", err)
	_, err = s.GetKey(t.Context(), "github:1")
	wantNotFound(t, "GetKey after failed CreateKey", err)
}

func testUpdateKey(t *testing.T, s storage.Store) {
	ctx := t.Context()
	k := newKey("u1", "oidc", "sub")
	k.AccessToken = ptr("old")
	mustCreateUser(t, s, newUser("u1"), &k)

	got, err := s.UpdateKey(ctx, k.ID, func(k *storage.Key) error {
		if k.AccessToken == nil || *k.AccessToken != "old" {
			return fmt.Errorf("update got access token %q; want old", deref(k.AccessToken))
		}
		k.ID, k.UserID, k.Provider, k.ProviderUserID = "x:y", "u9", "x", "y" // cannot change
		k.CreatedAt = at(-time.Hour)                                         // cannot change
		k.HashedPassword = ptr("new-hash")
		k.AccessToken = ptr("new")
		k.RefreshToken = ptr("refresh")
		k.IDToken = ptr("id")
		k.TokenExpiry = ptr(at(2 * time.Hour))
		k.Scope = ptr("openid")
		k.TokenType = ptr("Bearer")
		k.UpdatedAt = at(time.Minute)
		return nil
	})
	noErr(t, "UpdateKey", err)
	want := k
	want.HashedPassword = ptr("new-hash")
	want.AccessToken = ptr("new")
	want.RefreshToken = ptr("refresh")
	want.IDToken = ptr("id")
	want.TokenExpiry = ptr(at(2 * time.Hour))
	want.Scope = ptr("openid")
	want.TokenType = ptr("Bearer")
	want.UpdatedAt = at(time.Minute)
	diff(t, "UpdateKey result", want, got)
	stored, err := s.GetKey(ctx, k.ID)
	noErr(t, "GetKey", err)
	diff(t, "GetKey after UpdateKey", want, stored)

	// Clearing the tokens.
	got, err = s.UpdateKey(ctx, k.ID, func(k *storage.Key) error {
		k.AccessToken, k.RefreshToken, k.IDToken, k.TokenExpiry = nil, nil, nil, nil
		return nil
	})
	noErr(t, "UpdateKey(clear)", err)
	want.AccessToken, want.RefreshToken, want.IDToken, want.TokenExpiry = nil, nil, nil, nil
	diff(t, "UpdateKey(clear) result", want, got)

	// An error from update writes nothing.
	_, err = s.UpdateKey(ctx, k.ID, func(k *storage.Key) error {
		k.HashedPassword = ptr("lost")
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Errorf("UpdateKey = %v; want the closure's error", err)
	}
	stored, err = s.GetKey(ctx, k.ID)
	noErr(t, "GetKey", err)
	diff(t, "GetKey after failed UpdateKey", want, stored)

	_, err = s.UpdateKey(ctx, "missing:key", func(*storage.Key) error { return nil })
	wantNotFound(t, "UpdateKey(missing)", err)
}

// UpdateKeyConcurrently runs n goroutines that each increment a counter kept
// in the Scope of key keyID, alternating between the given stores (which may
// be separate connection pools on one database), and checks that no
// increment is lost. The key's Scope must start as nil or "0".
func UpdateKeyConcurrently(t *testing.T, keyID string, n int, stores ...storage.Store) {
	t.Helper()
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		s := stores[i%len(stores)]
		wg.Go(func() {
			_, err := s.UpdateKey(ctx, keyID, func(k *storage.Key) error {
				v := 0
				if k.Scope != nil {
					var err error
					if v, err = strconv.Atoi(*k.Scope); err != nil {
						return err
					}
				}
				// Yield, so that an unlocked read-modify-write would
				// interleave with the others.
				time.Sleep(time.Millisecond)
				k.Scope = ptr(strconv.Itoa(v + 1))
				return nil
			})
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("UpdateKey: %v", err)
	}
	k, err := stores[0].GetKey(ctx, keyID)
	noErr(t, "GetKey", err)
	if got := deref(k.Scope); got != strconv.Itoa(n) {
		t.Errorf("counter = %q; want %d (an update was lost)", got, n)
	}
}

func testUpdateKeyConcurrent(t *testing.T, s storage.Store) {
	k := newKey("u1", "oidc", "sub")
	mustCreateUser(t, s, newUser("u1"), &k)
	UpdateKeyConcurrently(t, k.ID, 20, s)
}

func testListKeysWithTokens(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, newUser("u1"), nil)
	var want []string
	for i := range 7 {
		k := newKey("u1", "oidc", fmt.Sprintf("s%d", i))
		switch i % 4 {
		case 0:
			k.AccessToken = ptr("a")
		case 1:
			k.RefreshToken = ptr("r")
		case 2:
			k.IDToken = ptr("i")
		case 3:
			k.HashedPassword = ptr("no tokens")
		}
		if k.HashedPassword == nil {
			want = append(want, k.ID)
		}
		mustCreateKey(t, s, k)
	}
	slices.Sort(want)

	var got []string
	after := ""
	for range 10 {
		page, err := s.ListKeysWithTokens(ctx, after, 2)
		noErr(t, "ListKeysWithTokens", err)
		if len(page) > 2 {
			t.Fatalf("ListKeysWithTokens returned %d keys; want at most 2", len(page))
		}
		if len(page) == 0 {
			break
		}
		for _, k := range page {
			got = append(got, k.ID)
		}
		after = page[len(page)-1].ID
	}
	diff(t, "ListKeysWithTokens pages", want, got)
	if _, err := s.ListKeysWithTokens(ctx, "", 0); err == nil {
		t.Errorf("ListKeysWithTokens(limit 0) = nil error; want an error")
	}
}

// --- sessions ---

func testSessions(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, newUser("u1"), nil)
	sess := storage.Session{
		ID:              "0123abcd",
		UserID:          "u1",
		ActiveExpires:   at(24 * time.Hour),
		IdleExpires:     at(15 * 24 * time.Hour),
		CreatedAt:       t0,
		AuthenticatedAt: at(-time.Minute),
		LastSeenAt:      at(time.Second),
		UserAgent:       "Mozilla/5.0",
		IP:              "2001:db8::1",
		Attributes:      map[string]any{"theme": "dark", "n": float64(1)},
	}
	mustCreateSession(t, s, sess)
	got, err := s.GetSession(ctx, sess.ID)
	noErr(t, "GetSession", err)
	diff(t, "GetSession", sess, got)

	wantConflict(t, "CreateSession(duplicate)", s.CreateSession(ctx, sess), storage.ConflictSession)
	wantNotFound(t, "CreateSession(missing user)", s.CreateSession(ctx, newSession("s2", "ghost", at(time.Hour))))
	_, err = s.GetSession(ctx, "s2")
	wantNotFound(t, "GetSession(s2)", err)

	// Nil attributes come back as an empty map.
	bare := newSession("s3", "u1", at(time.Hour))
	bare.Attributes = nil
	mustCreateSession(t, s, bare)
	got, err = s.GetSession(ctx, "s3")
	noErr(t, "GetSession(s3)", err)
	if got.Attributes == nil || len(got.Attributes) != 0 {
		t.Errorf("Attributes = %#v; want a non-nil empty map", got.Attributes)
	}

	// GetSession returns dead sessions too: expiry is the caller's business.
	mustCreateSession(t, s, newSession("dead", "u1", at(-time.Hour)))
	_, err = s.GetSession(ctx, "dead")
	noErr(t, "GetSession(dead)", err)
}

func testGetSessionAndUser(t *testing.T, s storage.Store) {
	ctx := t.Context()
	u := newUser("u1")
	u.Username = ptr("alice")
	u.Email = ptr("alice@example.com")
	u.EmailVerifiedAt = ptr(t0)
	u.Attributes = map[string]any{"role": "admin"}
	mustCreateUser(t, s, u, nil)
	mustCreateUser(t, s, newUser("u2"), nil)
	sess := newSession("s1", "u1", at(time.Hour))
	sess.Attributes = map[string]any{"k": "v"}
	mustCreateSession(t, s, sess)
	mustCreateSession(t, s, newSession("s2", "u2", at(time.Hour)))

	gotS, gotU, err := s.GetSessionAndUser(ctx, "s1")
	noErr(t, "GetSessionAndUser", err)
	diff(t, "session", sess, gotS)
	diff(t, "user", u, gotU)

	_, _, err = s.GetSessionAndUser(ctx, "unknown")
	wantNotFound(t, "GetSessionAndUser(unknown)", err)
}

func testListUserSessions(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, newUser("u1"), nil)
	mustCreateUser(t, s, newUser("u2"), nil)
	now := at(10 * time.Hour)
	for i, idle := range []time.Time{now.Add(time.Hour), now.Add(-time.Hour), now, now.Add(time.Microsecond), now.Add(48 * time.Hour)} {
		sess := newSession(fmt.Sprintf("s%d", i), "u1", idle)
		sess.CreatedAt = at(time.Duration(10-i) * time.Minute) // newest first by index
		mustCreateSession(t, s, sess)
	}
	mustCreateSession(t, s, newSession("other", "u2", now.Add(time.Hour)))

	list, err := s.ListUserSessions(ctx, "u1", now)
	noErr(t, "ListUserSessions", err)
	var ids []string
	for _, sess := range list {
		ids = append(ids, sess.ID)
	}
	// s1 is dead, s2 expires exactly now (dead); oldest first.
	diff(t, "ListUserSessions", []string{"s4", "s3", "s0"}, ids)

	list, err = s.ListUserSessions(ctx, "nobody", now)
	noErr(t, "ListUserSessions(nobody)", err)
	if len(list) != 0 {
		t.Errorf("ListUserSessions(nobody) = %d sessions; want 0", len(list))
	}
}

// testSessionTimeComparison checks that expiry comparisons are chronological
// for times whose stored forms differ in length or sign (before 1970, after
// 2286), which a textual comparison would get wrong.
func testSessionTimeComparison(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, newUser("u1"), nil)
	times := map[string]time.Time{
		"1969": time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC),
		"1999": time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC),
		"2001": time.Date(2001, 9, 9, 1, 46, 40, 0, time.UTC), // 10^15 µs
		"2300": time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for id, idle := range times {
		mustCreateSession(t, s, newSession(id, "u1", idle))
	}
	now := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	list, err := s.ListUserSessions(ctx, "u1", now)
	noErr(t, "ListUserSessions", err)
	var ids []string
	for _, sess := range list {
		ids = append(ids, sess.ID)
		if want := times[sess.ID]; !sess.IdleExpires.Equal(want) {
			t.Errorf("session %s IdleExpires = %v; want %v", sess.ID, sess.IdleExpires, want)
		}
	}
	slices.Sort(ids)
	diff(t, "alive sessions", []string{"2001", "2300"}, ids)

	n, err := s.DeleteDeadSessions(ctx, now, 10)
	noErr(t, "DeleteDeadSessions", err)
	if n != 2 {
		t.Errorf("DeleteDeadSessions = %d; want 2 (1969, 1999)", n)
	}
}

func testTouchSession(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, newUser("u1"), nil)
	sess := newSession("s1", "u1", at(time.Hour))
	mustCreateSession(t, s, sess)

	noErr(t, "TouchSession", s.TouchSession(ctx, "s1", at(25*time.Hour), at(30*24*time.Hour), at(2*time.Hour)))
	got, err := s.GetSession(ctx, "s1")
	noErr(t, "GetSession", err)
	sess.ActiveExpires, sess.IdleExpires, sess.LastSeenAt = at(25*time.Hour), at(30*24*time.Hour), at(2*time.Hour)
	diff(t, "session after TouchSession", sess, got)

	wantNotFound(t, "TouchSession(unknown)", s.TouchSession(ctx, "unknown", t0, t0, t0))
}

func testReauthenticateSession(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, newUser("u1"), nil)
	sess := newSession("s1", "u1", at(time.Hour))
	mustCreateSession(t, s, sess)

	noErr(t, "ReauthenticateSession", s.ReauthenticateSession(ctx, "s1", at(5*time.Minute)))
	got, err := s.GetSession(ctx, "s1")
	noErr(t, "GetSession", err)
	sess.AuthenticatedAt = at(5 * time.Minute)
	diff(t, "session after ReauthenticateSession", sess, got)

	wantNotFound(t, "ReauthenticateSession(unknown)", s.ReauthenticateSession(ctx, "unknown", t0))
}

func testSessionAttributes(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, newUser("u1"), nil)
	sess := newSession("s1", "u1", at(time.Hour))
	sess.Attributes = map[string]any{"keep": "1", "drop": "2", "change": "3"}
	mustCreateSession(t, s, sess)

	got, err := s.UpdateSessionAttributes(ctx, "s1", map[string]any{
		"drop":   nil,
		"change": "33",
		"add":    map[string]any{"nested": []any{float64(1), "two"}},
		"absent": nil, // removing what is not there is fine
	})
	noErr(t, "UpdateSessionAttributes", err)
	sess.Attributes = map[string]any{"keep": "1", "change": "33", "add": map[string]any{"nested": []any{float64(1), "two"}}}
	diff(t, "UpdateSessionAttributes result", sess, got)
	stored, err := s.GetSession(ctx, "s1")
	noErr(t, "GetSession", err)
	diff(t, "GetSession after UpdateSessionAttributes", sess, stored)

	got, err = s.UpdateSessionAttributes(ctx, "s1", nil)
	noErr(t, "UpdateSessionAttributes(nil)", err)
	diff(t, "UpdateSessionAttributes(nil) result", sess, got)

	_, err = s.UpdateSessionAttributes(ctx, "unknown", map[string]any{"a": "b"})
	wantNotFound(t, "UpdateSessionAttributes(unknown)", err)
}

func testDeleteSessions(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, newUser("u1"), nil)
	mustCreateUser(t, s, newUser("u2"), nil)
	now := at(time.Hour)
	mustCreateSession(t, s, newSession("a1", "u1", now.Add(time.Hour)))
	mustCreateSession(t, s, newSession("a2", "u1", now.Add(-time.Hour)))
	mustCreateSession(t, s, newSession("a3", "u1", now))
	mustCreateSession(t, s, newSession("a4", "u1", now.Add(time.Hour)))
	mustCreateSession(t, s, newSession("b1", "u2", now.Add(-time.Hour)))
	mustCreateSession(t, s, newSession("b2", "u2", now.Add(time.Hour)))

	noErr(t, "DeleteSession", s.DeleteSession(ctx, "a4"))
	_, err := s.GetSession(ctx, "a4")
	wantNotFound(t, "GetSession after DeleteSession", err)
	noErr(t, "DeleteSession(unknown)", s.DeleteSession(ctx, "a4"))

	// Dead sessions of u1 (idle expiry at or before now) go; u2's stay.
	noErr(t, "DeleteDeadUserSessions", s.DeleteDeadUserSessions(ctx, "u1", now))
	for id, alive := range map[string]bool{"a1": true, "a2": false, "a3": false, "b1": true, "b2": true} {
		_, err := s.GetSession(ctx, id)
		if alive && err != nil {
			t.Errorf("GetSession(%s) = %v; want it kept", id, err)
		}
		if !alive {
			wantNotFound(t, "GetSession("+id+") after DeleteDeadUserSessions", err)
		}
	}

	ids, err := s.DeleteUserSessions(ctx, "u2")
	noErr(t, "DeleteUserSessions", err)
	slices.Sort(ids)
	diff(t, "DeleteUserSessions ids", []string{"b1", "b2"}, ids)
	for _, id := range []string{"b1", "b2"} {
		_, err := s.GetSession(ctx, id)
		wantNotFound(t, "GetSession("+id+") after DeleteUserSessions", err)
	}
	_, err = s.GetSession(ctx, "a1")
	noErr(t, "GetSession(a1) after DeleteUserSessions(u2)", err)
	ids, err = s.DeleteUserSessions(ctx, "u2")
	noErr(t, "DeleteUserSessions(again)", err)
	if len(ids) != 0 {
		t.Errorf("DeleteUserSessions(again) = %v; want none", ids)
	}
}

func testDeleteDeadSessions(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, newUser("u1"), nil)
	mustCreateUser(t, s, newUser("u2"), nil)
	now := at(time.Hour)
	for i := range 5 {
		mustCreateSession(t, s, newSession(fmt.Sprintf("dead%d", i), []string{"u1", "u2"}[i%2], now.Add(-time.Duration(i)*time.Minute)))
	}
	mustCreateSession(t, s, newSession("alive1", "u1", now.Add(time.Microsecond)))
	mustCreateSession(t, s, newSession("alive2", "u2", now.Add(time.Hour)))

	var counts []int64
	for range 4 {
		n, err := s.DeleteDeadSessions(ctx, now, 2)
		noErr(t, "DeleteDeadSessions", err)
		counts = append(counts, n)
	}
	diff(t, "DeleteDeadSessions batches", []int64{2, 2, 1, 0}, counts)
	for _, id := range []string{"alive1", "alive2"} {
		_, err := s.GetSession(ctx, id)
		noErr(t, "GetSession("+id+")", err)
	}
	if _, err := s.DeleteDeadSessions(ctx, now, 0); err == nil {
		t.Errorf("DeleteDeadSessions(limit 0) = nil error; want an error")
	}
}

// --- authenticators ---

func testAuthenticators(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, newUser("u1"), nil)
	a := storage.Authenticator{
		CredentialID:    []byte{0xde, 0xad, 0xbe, 0xef, 0},
		UserID:          "u1",
		PublicKey:       []byte{1, 2, 3},
		SignCount:       4294967295,
		BackupEligible:  true,
		BackedUp:        true,
		DeviceType:      "multiDevice",
		Transports:      []string{"internal", "hybrid", "usb"},
		AAGUID:          []byte{0xad, 0xce, 0, 2, 0x35, 0xbc, 0xc6, 0x0a, 0x64, 0x8b, 0x0b, 0x25, 0xf1, 0xf0, 0x55, 0x03},
		AttestationType: "packed",
		Name:            "iCloud Keychain",
		CreatedAt:       t0,
		LastUsedAt:      ptr(at(time.Minute)),
	}
	mustCreateAuthenticator(t, s, a)
	got, err := s.GetAuthenticator(ctx, a.CredentialID)
	noErr(t, "GetAuthenticator", err)
	diff(t, "GetAuthenticator", a, got)

	// Optional fields left out; transports come back empty, not nil.
	bare := storage.Authenticator{CredentialID: []byte("bare"), UserID: "u1", PublicKey: []byte{9}, CreatedAt: t0}
	mustCreateAuthenticator(t, s, bare)
	got, err = s.GetAuthenticator(ctx, bare.CredentialID)
	noErr(t, "GetAuthenticator(bare)", err)
	diff(t, "GetAuthenticator(bare)", bare, got)
	if got.Transports == nil {
		t.Errorf("Transports = nil; want an empty slice")
	}

	dup := newAuthenticator("x", "u1")
	dup.CredentialID = a.CredentialID
	wantConflict(t, "CreateAuthenticator(duplicate)", s.CreateAuthenticator(ctx, dup), storage.ConflictCredential)
	wantNotFound(t, "CreateAuthenticator(missing user)", s.CreateAuthenticator(ctx, newAuthenticator("y", "ghost")))
	_, err = s.GetAuthenticator(ctx, []byte("y"))
	wantNotFound(t, "GetAuthenticator(unknown)", err)
	// Credential ids are compared as bytes.
	_, err = s.GetAuthenticator(ctx, []byte{0xde, 0xad, 0xbe, 0xef})
	wantNotFound(t, "GetAuthenticator(prefix)", err)
}

func testListAuthenticators(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, newUser("u1"), nil)
	mustCreateUser(t, s, newUser("u2"), nil)
	var want []storage.Authenticator
	for i, id := range []string{"c", "a", "b"} {
		a := newAuthenticator(id, "u1")
		a.CreatedAt = at(time.Duration(i) * time.Minute)
		mustCreateAuthenticator(t, s, a)
		want = append(want, a)
	}
	mustCreateAuthenticator(t, s, newAuthenticator("other", "u2"))

	got, err := s.ListAuthenticatorsByUserID(ctx, "u1")
	noErr(t, "ListAuthenticatorsByUserID", err)
	diff(t, "ListAuthenticatorsByUserID (oldest first)", want, got)
	got, err = s.ListAuthenticatorsByUserID(ctx, "nobody")
	noErr(t, "ListAuthenticatorsByUserID(nobody)", err)
	if len(got) != 0 {
		t.Errorf("ListAuthenticatorsByUserID(nobody) = %d; want 0", len(got))
	}
}

func testUpdateAuthenticatorCounter(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, newUser("u1"), nil)
	a := newAuthenticator("c1", "u1")
	a.SignCount = 5
	a.BackupEligible = true
	mustCreateAuthenticator(t, s, a)

	got, err := s.UpdateAuthenticatorCounter(ctx, a.CredentialID, 6, true, at(time.Hour))
	noErr(t, "UpdateAuthenticatorCounter", err)
	a.SignCount, a.BackedUp, a.LastUsedAt = 6, true, ptr(at(time.Hour))
	diff(t, "UpdateAuthenticatorCounter result", a, got)
	stored, err := s.GetAuthenticator(ctx, a.CredentialID)
	noErr(t, "GetAuthenticator", err)
	diff(t, "GetAuthenticator after UpdateAuthenticatorCounter", a, stored)

	_, err = s.UpdateAuthenticatorCounter(ctx, []byte("unknown"), 1, false, t0)
	wantNotFound(t, "UpdateAuthenticatorCounter(unknown)", err)

	// A count at or below the stored one loses (two uses of one count:
	// the second is refused) and changes nothing.
	for _, c := range []uint32{6, 5} {
		if _, err := s.UpdateAuthenticatorCounter(ctx, a.CredentialID, c, false, at(2*time.Hour)); !errors.Is(err, storage.ErrConsumed) {
			t.Errorf("UpdateAuthenticatorCounter(%d) with 6 stored: %v; want ErrConsumed", c, err)
		}
	}
	stored, err = s.GetAuthenticator(ctx, a.CredentialID)
	noErr(t, "GetAuthenticator", err)
	diff(t, "GetAuthenticator after refused updates", a, stored)

	// An authenticator without a counter always sends 0.
	z := newAuthenticator("c0", "u1")
	mustCreateAuthenticator(t, s, z)
	for i := range 2 {
		got, err := s.UpdateAuthenticatorCounter(ctx, z.CredentialID, 0, false, at(time.Duration(i)*time.Minute))
		noErr(t, "UpdateAuthenticatorCounter(0)", err)
		if got.SignCount != 0 || !got.LastUsedAt.Equal(at(time.Duration(i)*time.Minute)) {
			t.Errorf("UpdateAuthenticatorCounter(0) #%d = %+v", i, got)
		}
	}
}

// testCreatePasskey: a sign-up's user, key and authenticator, or an added
// passkey's key and authenticator, are written together or not at all.
func testCreatePasskey(t *testing.T, s storage.Store) {
	ctx := t.Context()
	u := newUser("u1")
	u.WebAuthnHandle = []byte("handle-1")
	k := newKey("u1", "webauthn", "c1")
	a := newAuthenticator("c1", "u1")
	noErr(t, "CreatePasskey(sign-up)", s.CreatePasskey(ctx, &u, k, a))
	diff(t, "user", u, mustGetUser(t, s, "u1"))
	gotK, err := s.GetKey(ctx, k.ID)
	noErr(t, "GetKey", err)
	diff(t, "key", k, gotK)
	gotA, err := s.GetAuthenticator(ctx, a.CredentialID)
	noErr(t, "GetAuthenticator", err)
	diff(t, "authenticator", a, gotA)

	// A sign-up whose credential is taken writes nothing: no user, no key.
	u2 := newUser("u2")
	u2.WebAuthnHandle = []byte("handle-2")
	err = s.CreatePasskey(ctx, &u2, newKey("u2", "webauthn", "c1-again"), newAuthenticator("c1", "u2"))
	wantConflict(t, "CreatePasskey(taken credential)", err, storage.ConflictCredential)
	if _, err := s.GetUser(ctx, "u2"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the refused sign-up left its user: %v", err)
	}
	if _, err := s.GetKey(ctx, "webauthn:c1-again"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the refused sign-up left its key: %v", err)
	}

	// Adding to an existing user; a taken key leaves no authenticator.
	noErr(t, "CreatePasskey(add)", s.CreatePasskey(ctx, nil, newKey("u1", "webauthn", "c2"), newAuthenticator("c2", "u1")))
	err = s.CreatePasskey(ctx, nil, newKey("u1", "webauthn", "c2"), newAuthenticator("c3", "u1"))
	wantConflict(t, "CreatePasskey(taken key)", err, storage.ConflictKey)
	if _, err := s.GetAuthenticator(ctx, []byte("c3")); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the refused add left its authenticator: %v", err)
	}
	as, err := s.ListAuthenticatorsByUserID(ctx, "u1")
	noErr(t, "ListAuthenticatorsByUserID", err)
	if len(as) != 2 {
		t.Errorf("u1 has %d authenticators; want 2", len(as))
	}
	// An unknown user.
	err = s.CreatePasskey(ctx, nil, newKey("nobody", "webauthn", "c4"), newAuthenticator("c4", "nobody"))
	wantNotFound(t, "CreatePasskey(unknown user)", err)
	if _, err := s.GetKey(ctx, "webauthn:c4"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the refused add left its key: %v", err)
	}
}

func testRenameDeleteAuthenticator(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustCreateUser(t, s, newUser("u1"), nil)
	mustCreateUser(t, s, newUser("u2"), nil)
	mine := newAuthenticator("mine", "u1")
	theirs := newAuthenticator("theirs", "u2")
	mustCreateAuthenticator(t, s, mine)
	mustCreateAuthenticator(t, s, theirs)

	noErr(t, "RenameAuthenticator", s.RenameAuthenticator(ctx, "u1", mine.CredentialID, "Laptop"))
	got, err := s.GetAuthenticator(ctx, mine.CredentialID)
	noErr(t, "GetAuthenticator", err)
	if got.Name != "Laptop" {
		t.Errorf("Name = %q; want Laptop", got.Name)
	}
	wantNotFound(t, "RenameAuthenticator(another user's)", s.RenameAuthenticator(ctx, "u1", theirs.CredentialID, "Stolen"))
	wantNotFound(t, "RenameAuthenticator(unknown)", s.RenameAuthenticator(ctx, "u1", []byte("unknown"), "x"))
	wantNotFound(t, "DeleteAuthenticator(another user's)", s.DeleteAuthenticator(ctx, "u1", theirs.CredentialID))
	got, err = s.GetAuthenticator(ctx, theirs.CredentialID)
	noErr(t, "GetAuthenticator(theirs)", err)
	diff(t, "another user's authenticator", theirs, got)

	noErr(t, "DeleteAuthenticator", s.DeleteAuthenticator(ctx, "u1", mine.CredentialID))
	_, err = s.GetAuthenticator(ctx, mine.CredentialID)
	wantNotFound(t, "GetAuthenticator after DeleteAuthenticator", err)
	wantNotFound(t, "DeleteAuthenticator(again)", s.DeleteAuthenticator(ctx, "u1", mine.CredentialID))
}

// --- verification tokens ---

func newToken(identifier, hash string, expires time.Time) storage.VerificationToken {
	return storage.VerificationToken{Identifier: identifier, TokenHash: hash, Expires: expires, RedirectTo: "/after", CreatedAt: t0}
}

func testVerificationTokenUseOnce(t *testing.T, s storage.Store) {
	ctx := t.Context()
	tok := newToken("a@example.com", "hash1", at(time.Hour))
	noErr(t, "CreateVerificationToken", s.CreateVerificationToken(ctx, tok))
	noErr(t, "CreateVerificationToken(other hash)", s.CreateVerificationToken(ctx, newToken("a@example.com", "hash2", at(time.Hour))))
	wantConflict(t, "CreateVerificationToken(duplicate)", s.CreateVerificationToken(ctx, tok), storage.ConflictVerificationToken)

	_, err := s.UseVerificationToken(ctx, "a@example.com", "wrong", t0)
	wantNotFound(t, "UseVerificationToken(wrong hash)", err)
	_, err = s.UseVerificationToken(ctx, "b@example.com", "hash1", t0)
	wantNotFound(t, "UseVerificationToken(wrong identifier)", err)

	got, err := s.UseVerificationToken(ctx, "a@example.com", "hash1", t0)
	noErr(t, "UseVerificationToken", err)
	diff(t, "UseVerificationToken", tok, got)
	_, err = s.UseVerificationToken(ctx, "a@example.com", "hash1", t0)
	wantNotFound(t, "UseVerificationToken(second use)", err)

	// The other token of the same address is unaffected.
	_, err = s.UseVerificationToken(ctx, "a@example.com", "hash2", t0)
	noErr(t, "UseVerificationToken(hash2)", err)
}

func testVerificationTokenExpired(t *testing.T, s storage.Store) {
	ctx := t.Context()
	noErr(t, "CreateVerificationToken", s.CreateVerificationToken(ctx, newToken("a@example.com", "h", at(time.Hour))))
	// Expires not after now: expired, and deleted.
	_, err := s.UseVerificationToken(ctx, "a@example.com", "h", at(time.Hour))
	wantNotFound(t, "UseVerificationToken(expired)", err)
	_, err = s.UseVerificationToken(ctx, "a@example.com", "h", t0)
	wantNotFound(t, "UseVerificationToken(after expired use)", err)

	noErr(t, "CreateVerificationToken", s.CreateVerificationToken(ctx, newToken("a@example.com", "h2", at(time.Hour))))
	_, err = s.UseVerificationToken(ctx, "a@example.com", "h2", at(time.Hour-time.Microsecond))
	noErr(t, "UseVerificationToken(just in time)", err)
}

func testVerificationTokenConcurrent(t *testing.T, s storage.Store) {
	ctx := t.Context()
	noErr(t, "CreateVerificationToken", s.CreateVerificationToken(ctx, newToken("a@example.com", "h", at(time.Hour))))
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.UseVerificationToken(ctx, "a@example.com", "h", t0)
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case errors.Is(err, storage.ErrNotFound):
		default:
			t.Errorf("UseVerificationToken = %v; want nil or storage.ErrNotFound", err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d concurrent UseVerificationToken calls got the token; want exactly 1", won, n)
	}
}

func testDeleteExpiredVerificationTokens(t *testing.T, s storage.Store) {
	ctx := t.Context()
	now := at(time.Hour)
	for i := range 3 {
		noErr(t, "CreateVerificationToken", s.CreateVerificationToken(ctx, newToken(fmt.Sprintf("e%d@example.com", i), "h", now.Add(-time.Duration(i)*time.Minute))))
	}
	noErr(t, "CreateVerificationToken", s.CreateVerificationToken(ctx, newToken("live@example.com", "h", now.Add(time.Microsecond))))

	var counts []int64
	for range 3 {
		n, err := s.DeleteExpiredVerificationTokens(ctx, now, 2)
		noErr(t, "DeleteExpiredVerificationTokens", err)
		counts = append(counts, n)
	}
	diff(t, "DeleteExpiredVerificationTokens batches", []int64{2, 1, 0}, counts)
	_, err := s.UseVerificationToken(ctx, "live@example.com", "h", now)
	noErr(t, "UseVerificationToken(live)", err)
	if _, err := s.DeleteExpiredVerificationTokens(ctx, now, 0); err == nil {
		t.Errorf("DeleteExpiredVerificationTokens(limit 0) = nil error; want an error")
	}
}

// --- flow states ---

func testFlowStates(t *testing.T, s storage.Store) {
	ctx := t.Context()
	noErr(t, "ConsumeFlowState", s.ConsumeFlowState(ctx, "state1", at(time.Minute)))
	err := s.ConsumeFlowState(ctx, "state1", at(time.Minute))
	if !errors.Is(err, storage.ErrConsumed) {
		t.Errorf("ConsumeFlowState(twice) = %v; want storage.ErrConsumed", err)
	}
	noErr(t, "ConsumeFlowState(state2)", s.ConsumeFlowState(ctx, "state2", at(2*time.Minute)))
	noErr(t, "ConsumeFlowState(state3)", s.ConsumeFlowState(ctx, "state3", at(time.Hour)))

	// Concurrent consumers of one state: exactly one wins.
	const n = 6
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = s.ConsumeFlowState(ctx, "race", at(time.Hour)) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, storage.ErrConsumed):
			t.Errorf("ConsumeFlowState(race) = %v; want nil or storage.ErrConsumed", err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d concurrent ConsumeFlowState calls won; want exactly 1", won, n)
	}

	// Sweep what expired at or before now, in batches.
	now := at(2 * time.Minute)
	var counts []int64
	for range 3 {
		c, err := s.DeleteExpiredFlowStates(ctx, now, 1)
		noErr(t, "DeleteExpiredFlowStates", err)
		counts = append(counts, c)
	}
	diff(t, "DeleteExpiredFlowStates batches", []int64{1, 1, 0}, counts)
	// A swept state can be recorded again; a live one cannot.
	noErr(t, "ConsumeFlowState(swept)", s.ConsumeFlowState(ctx, "state1", at(time.Hour)))
	if err := s.ConsumeFlowState(ctx, "state3", at(time.Hour)); !errors.Is(err, storage.ErrConsumed) {
		t.Errorf("ConsumeFlowState(state3) = %v; want storage.ErrConsumed", err)
	}
	if _, err := s.DeleteExpiredFlowStates(ctx, now, 0); err == nil {
		t.Errorf("DeleteExpiredFlowStates(limit 0) = nil error; want an error")
	}
}
