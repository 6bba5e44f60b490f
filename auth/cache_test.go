package auth_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// cacheStore counts the reads and writes of validation that reach the
// database, and can hold a lookup (to race it with an invalidation) or
// fail every call (an outage).
type cacheStore struct {
	storage.Store
	lookups, touches atomic.Int64
	down             atomic.Bool
	// hold, when set, is closed by the test to let a lookup finish;
	// reading is closed by the store once that lookup has read.
	mu      sync.Mutex
	hold    chan struct{}
	reading chan struct{}
}

var errDown = errors.New("database unreachable")

func (c *cacheStore) GetSessionAndUser(ctx context.Context, id string) (storage.Session, storage.User, error) {
	c.lookups.Add(1)
	if c.down.Load() {
		return storage.Session{}, storage.User{}, errDown
	}
	s, u, err := c.Store.GetSessionAndUser(ctx, id)
	c.mu.Lock()
	hold, reading := c.hold, c.reading
	c.hold, c.reading = nil, nil
	c.mu.Unlock()
	if hold != nil {
		close(reading)
		<-hold
	}
	return s, u, err
}

func (c *cacheStore) DeleteKey(ctx context.Context, id string) (storage.Key, error) {
	if c.down.Load() {
		return storage.Key{}, errDown
	}
	return c.Store.DeleteKey(ctx, id)
}

func (c *cacheStore) TouchSession(ctx context.Context, id string, a, i, l time.Time) error {
	c.touches.Add(1)
	if c.down.Load() {
		return errDown
	}
	return c.Store.TouchSession(ctx, id, a, i, l)
}

// bus is an in-process Invalidations that delivers to other Auths, as the
// PostgreSQL feed does between replicas.
type bus struct {
	mu        sync.Mutex
	receivers []*auth.Auth
	published []auth.Invalidation
	// fail, when set, is what Publish returns after recording the event,
	// delivering nothing (the database went away).
	fail error
}

func (b *bus) Publish(_ context.Context, ev auth.Invalidation) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.published = append(b.published, ev)
	if b.fail != nil {
		return b.fail
	}
	for _, a := range b.receivers {
		// Through the wire form, as the PostgreSQL feed carries it.
		got, ok := auth.ParseInvalidation(ev.String())
		if !ok {
			return fmt.Errorf("unparsable %q", ev.String())
		}
		a.ApplyInvalidation(got)
	}
	return nil
}

type cacheEnv struct {
	a     *auth.Auth
	st    *sqlstore.Store
	cs    *cacheStore
	clock *clock
}

func newCacheEnv(t *testing.T, st *sqlstore.Store, c *clock, o auth.Options) cacheEnv {
	t.Helper()
	if c == nil {
		c = newClock()
	}
	cs := &cacheStore{Store: st}
	o.Now, o.Passwords = c.Now, cheapHasher()
	if o.CacheSize == 0 {
		o.CacheSize = 1000
	}
	a, err := auth.New(cs, o)
	if err != nil {
		t.Fatal(err)
	}
	return cacheEnv{a: a, st: st, cs: cs, clock: c}
}

func (e cacheEnv) session(t *testing.T, attrs map[string]any) (auth.User, auth.Session) {
	t.Helper()
	ctx := context.Background()
	u, err := e.a.CreateUser(ctx, auth.CreateUserOptions{Attributes: attrs})
	if err != nil {
		t.Fatal(err)
	}
	s, err := e.a.CreateSession(ctx, u.ID, auth.SessionOptions{Attributes: map[string]any{"device": "laptop"}})
	if err != nil {
		t.Fatal(err)
	}
	return u, s
}

func (e cacheEnv) wantValid(t *testing.T, token string) auth.Session {
	t.Helper()
	s, err := e.a.ValidateSession(context.Background(), token)
	if err != nil {
		t.Fatalf("ValidateSession: got %v; want a session", err)
	}
	return s
}

func (e cacheEnv) wantInvalid(t *testing.T, token, why string) {
	t.Helper()
	if s, err := e.a.ValidateSession(context.Background(), token); !errors.Is(err, auth.ErrInvalidSessionID) {
		t.Fatalf("%s: ValidateSession got %+v, %v; want AUTH_INVALID_SESSION_ID", why, s.ID, err)
	}
}

func (e cacheEnv) wantLookups(t *testing.T, n int64, why string) {
	t.Helper()
	if got := e.cs.lookups.Load(); got != n {
		t.Fatalf("%s: %d database lookups; want %d", why, got, n)
	}
}

func TestCacheHitMiss(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{})
	ctx := context.Background()
	u, s := e.session(t, map[string]any{"role": "admin"})
	v := e.wantValid(t, s.Token)
	e.wantLookups(t, 1, "first validation")
	for range 10 {
		v2 := e.wantValid(t, s.Token)
		if v2.ID != v.ID || v2.User.ID != u.ID || v2.User.Attributes["role"] != "admin" ||
			v2.Attributes["device"] != "laptop" || v2.Token != s.Token || v2.State != auth.StateActive || v2.Fresh {
			t.Fatalf("cached validation = %+v; want %+v", v2, v)
		}
	}
	if _, err := e.a.GetSession(ctx, s.Token); err != nil {
		t.Fatal(err)
	}
	e.wantLookups(t, 1, "validations within the TTL")
	if n := e.a.CacheLen(); n != 1 {
		t.Fatalf("CacheLen = %d; want 1", n)
	}
	// Unknown and malformed tokens are never cached.
	for range 2 {
		e.wantInvalid(t, auth.GenerateSessionToken(), "unknown token")
		e.wantInvalid(t, "malformed", "malformed token")
	}
	e.wantLookups(t, 3, "unknown tokens")
	// What callers get is theirs: changing it does not change the cache.
	v.Attributes["device"] = "changed"
	v.User.Attributes["role"] = "changed"
	if v2 := e.wantValid(t, s.Token); v2.Attributes["device"] != "laptop" || v2.User.Attributes["role"] != "admin" {
		t.Fatalf("caller's change leaked into the cache: %v %v", v2.Attributes, v2.User.Attributes)
	}
}

func TestCacheTTL(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheTTL: 3 * time.Second})
	_, s := e.session(t, nil)
	e.wantValid(t, s.Token)
	e.clock.Advance(2 * time.Second)
	e.wantValid(t, s.Token)
	e.wantLookups(t, 1, "2s into a 3s TTL")
	e.clock.Advance(time.Second)
	e.wantValid(t, s.Token)
	e.wantLookups(t, 2, "at the TTL")
	// Refilled: good for another TTL.
	e.clock.Advance(2 * time.Second)
	e.wantValid(t, s.Token)
	e.wantLookups(t, 2, "after the refill")
	// A change made behind the cache's back (no invalidation) is seen
	// after at most the TTL.
	if err := e.st.DeleteSession(context.Background(), s.ID); err != nil {
		t.Fatal(err)
	}
	e.wantValid(t, s.Token)
	e.clock.Advance(time.Second)
	e.wantInvalid(t, s.Token, "deleted behind the cache, after the TTL")
}

// TestCacheTimeDeath: expiry is checked against the cached snapshot on
// every call, so a session that dies by time is refused at once however
// long the TTL; an idle one is reset and written.
func TestCacheTimeDeath(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheTTL: 365 * 24 * time.Hour})
	ctx := context.Background()
	_, s := e.session(t, nil)
	e.wantValid(t, s.Token)
	// Idle: reset (written), Fresh once.
	e.clock.Advance(auth.DefaultActivePeriod + time.Hour)
	touches := e.cs.touches.Load()
	v := e.wantValid(t, s.Token)
	if !v.Fresh || v.State != auth.StateActive || !v.ActiveExpires.Equal(e.clock.Now().Add(auth.DefaultActivePeriod)) {
		t.Fatalf("idle cached session: got %+v; want reset and fresh", v)
	}
	if e.cs.touches.Load() != touches+1 {
		t.Fatalf("the reset was not written")
	}
	stored, err := e.st.GetSession(ctx, s.ID)
	if err != nil || !stored.ActiveExpires.Equal(v.ActiveExpires) {
		t.Fatalf("stored after reset: %+v %v; want active until %v", stored, err, v.ActiveExpires)
	}
	if v := e.wantValid(t, s.Token); v.Fresh {
		t.Fatal("second validation after the reset is fresh again")
	}
	e.wantLookups(t, 1, "reset served from the cache")
	// Dead: one microsecond past idle expiry.
	e.clock.Advance(v.IdleExpires.Sub(e.clock.Now()) - time.Microsecond)
	if g, err := e.a.GetSession(ctx, s.Token); err != nil || g.State != auth.StateIdle {
		t.Fatalf("just before idle expiry: %+v %v; want idle", g, err)
	}
	e.clock.Advance(time.Microsecond)
	e.wantInvalid(t, s.Token, "past idle expiry, cached")
	if _, err := e.a.GetSession(ctx, s.Token); !errors.Is(err, auth.ErrInvalidSessionID) {
		t.Fatalf("GetSession of a dead cached session: %v", err)
	}
}

// TestCacheTimeDeathDatabaseDown: with the database unreachable, a cached
// session is still refused the moment it dies (never served past its
// expiry), and an uncached one gets the store's error (HTTP 503).
func TestCacheTimeDeathDatabaseDown(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheTTL: time.Hour, ActivePeriod: time.Minute, IdlePeriod: time.Minute})
	_, s := e.session(t, nil)
	_, other := e.session(t, nil)
	e.wantValid(t, s.Token)
	e.cs.down.Store(true)
	e.wantValid(t, s.Token) // within its TTL, no write due
	if _, err := e.a.ValidateSession(context.Background(), other.Token); !errors.Is(err, errDown) {
		t.Fatalf("uncached session with the database down: %v; want the store's error", err)
	}
	e.clock.Advance(2 * time.Minute)
	if _, err := e.a.ValidateSession(context.Background(), s.Token); err == nil {
		t.Fatal("a dead cached session validated with the database down")
	}
}

func TestCacheTouchCoalescing(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheTTL: time.Hour, TouchInterval: time.Minute})
	ctx := context.Background()
	_, s := e.session(t, nil)
	for range 5 {
		for range 20 {
			e.wantValid(t, s.Token)
		}
		e.clock.Advance(61 * time.Second)
	}
	// One write per interval that passed (the first one had none due).
	if n := e.cs.touches.Load(); n != 4 {
		t.Fatalf("%d last-seen writes over 5 intervals of 20 validations; want 4", n)
	}
	stored, err := e.st.GetSession(ctx, s.ID)
	if err != nil || e.clock.Now().Sub(stored.LastSeenAt) > 2*time.Minute {
		t.Fatalf("stored last seen %v (%v); want within 2 intervals of %v", stored.LastSeenAt, err, e.clock.Now())
	}
	// Concurrent validations of a due session write it once.
	e.clock.Advance(61 * time.Second)
	before := e.cs.touches.Load()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := e.a.ValidateSession(ctx, s.Token); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := e.cs.touches.Load() - before; n != 1 {
		t.Fatalf("%d concurrent last-seen writes; want 1", n)
	}
}

// TestCacheSweep: entries nobody asks for again leave the cache within two
// TTLs (the shards are swept in turn, each once per TTL, by the
// validations that come by), with the values and views they held; live
// entries stay.
func TestCacheSweep(t *testing.T) {
	t.Parallel()
	ttl := 10 * time.Second
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheTTL: ttl})
	var old []auth.Session
	for range 40 {
		_, s := e.session(t, nil)
		e.wantValid(t, s.Token)
		if v := e.a.CachedSessionView(s.Token); v == nil {
			t.Fatal("no view of a cached session")
		}
		old = append(old, s)
	}
	if n := e.a.CacheLen(); n != len(old) {
		t.Fatalf("CacheLen = %d; want %d", n, len(old))
	}
	e.clock.Advance(ttl + time.Second)
	// One session kept in use through a whole TTL of sweeps.
	_, live := e.session(t, nil)
	for range auth.CacheShards + 1 {
		e.clock.Advance(ttl/auth.CacheShards + time.Millisecond)
		e.wantValid(t, live.Token)
	}
	if n := e.a.CacheLen(); n != 1 {
		t.Fatalf("CacheLen = %d after a TTL of sweeps; want 1 (the session in use)", n)
	}
	// The swept sessions are valid still: read again when asked.
	before := e.cs.lookups.Load()
	e.wantValid(t, old[0].Token)
	if got := e.cs.lookups.Load() - before; got != 1 {
		t.Fatalf("a swept session took %d database lookups; want 1", got)
	}

	// After an idle spell the first validation catches up at once.
	for _, s := range old {
		e.wantValid(t, s.Token)
	}
	e.clock.Advance(3 * ttl)
	e.wantValid(t, live.Token)
	if n := e.a.CacheLen(); n != 1 {
		t.Fatalf("CacheLen = %d after an idle spell and one validation; want 1", n)
	}
	// A clock that goes back does not stop the sweeps.
	for _, s := range old {
		e.wantValid(t, s.Token)
	}
	e.clock.Advance(-time.Hour)
	e.wantValid(t, live.Token)
	if n := e.a.CacheLen(); n != 1 {
		t.Fatalf("CacheLen = %d after the clock went back; want 1 (entries from the future are stale)", n)
	}
}

// TestCacheInvalidationLocal: everything that ends a session or changes
// what it shows takes effect at once in the process that did it, whatever
// the TTL, and is published for the others.
func TestCacheInvalidationLocal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// evicted checks that the session, still valid, was read again.
	evicted := func(step string) func(*testing.T, cacheEnv, auth.Session) {
		return func(t *testing.T, e cacheEnv, s auth.Session) {
			e.wantValid(t, s.Token)
			e.wantLookups(t, 2, "after "+step+" (evicted)")
		}
	}
	steps := []struct {
		name  string
		do    func(e cacheEnv, u auth.User, s auth.Session) error
		check func(t *testing.T, e cacheEnv, s auth.Session)
		want  auth.Invalidation // what is published; UserID "*" for u.ID
	}{
		{"InvalidateSession", func(e cacheEnv, u auth.User, s auth.Session) error { return e.a.InvalidateSession(ctx, s.Token) },
			func(t *testing.T, e cacheEnv, s auth.Session) { e.wantInvalid(t, s.Token, "after InvalidateSession") },
			auth.Invalidation{SessionID: "*"}},
		{"InvalidateSessionID", func(e cacheEnv, u auth.User, s auth.Session) error {
			return e.a.InvalidateSessionID(ctx, u.ID, s.ID)
		}, func(t *testing.T, e cacheEnv, s auth.Session) { e.wantInvalid(t, s.Token, "after InvalidateSessionID") },
			auth.Invalidation{SessionID: "*"}},
		{"InvalidateAllUserSessions", func(e cacheEnv, u auth.User, s auth.Session) error {
			_, err := e.a.InvalidateAllUserSessions(ctx, u.ID)
			return err
		}, func(t *testing.T, e cacheEnv, s auth.Session) {
			e.wantInvalid(t, s.Token, "after InvalidateAllUserSessions")
		},
			auth.Invalidation{UserID: "*"}},
		{"DeleteUser", func(e cacheEnv, u auth.User, s auth.Session) error { return e.a.DeleteUser(ctx, u.ID) },
			func(t *testing.T, e cacheEnv, s auth.Session) { e.wantInvalid(t, s.Token, "after DeleteUser") },
			auth.Invalidation{UserID: "*"}},
		{"UpdateUserAttributes", func(e cacheEnv, u auth.User, s auth.Session) error {
			_, err := e.a.UpdateUserAttributes(ctx, u.ID, map[string]any{"role": "viewer", "name": "Renamed"})
			return err
		}, func(t *testing.T, e cacheEnv, s auth.Session) {
			v := e.wantValid(t, s.Token)
			if v.User.Attributes["role"] != "viewer" || v.User.Name == nil || *v.User.Name != "Renamed" {
				t.Fatalf("after UpdateUserAttributes: user %+v; want the new attributes", v.User)
			}
		}, auth.Invalidation{UserID: "*"}},
		{"UpdateSessionAttributes", func(e cacheEnv, u auth.User, s auth.Session) error {
			_, err := e.a.UpdateSessionAttributes(ctx, s.Token, map[string]any{"device": "phone"})
			return err
		}, func(t *testing.T, e cacheEnv, s auth.Session) {
			if v := e.wantValid(t, s.Token); v.Attributes["device"] != "phone" {
				t.Fatalf("after UpdateSessionAttributes: %v; want device phone", v.Attributes)
			}
		}, auth.Invalidation{SessionID: "*"}},
		{"Reauthenticate", func(e cacheEnv, u auth.User, s auth.Session) error {
			e.clock.Advance(time.Hour)
			return e.a.Reauthenticate(ctx, s.ID)
		}, func(t *testing.T, e cacheEnv, s auth.Session) {
			if err := e.a.RequireRecentAuth(e.wantValid(t, s.Token)); err != nil {
				t.Fatalf("after Reauthenticate: %v", err)
			}
		}, auth.Invalidation{SessionID: "*"}},
		{"UpdateKeyPassword", func(e cacheEnv, u auth.User, s auth.Session) error {
			_, err := e.a.UpdateKeyPassword(ctx, "email", "pw-"+u.ID, ptr("new password"))
			return err
		}, evicted("UpdateKeyPassword"), auth.Invalidation{UserID: "*"}},
		// Claims may read the user's keys: adding or removing one evicts.
		{"CreateKey", func(e cacheEnv, u auth.User, s auth.Session) error {
			_, err := e.a.CreateKey(ctx, u.ID, "github", "gh-"+u.ID, nil)
			return err
		}, evicted("CreateKey"), auth.Invalidation{UserID: "*"}},
		{"DeleteKey", func(e cacheEnv, u auth.User, s auth.Session) error {
			return e.a.DeleteKey(ctx, "email", "pw-"+u.ID)
		}, evicted("DeleteKey"), auth.Invalidation{UserID: "*"}},
		{"KeysChanged", func(e cacheEnv, u auth.User, s auth.Session) error {
			return e.a.KeysChanged(ctx, u.ID)
		}, evicted("KeysChanged"), auth.Invalidation{UserID: "*"}},
	}
	// Each step runs twice: publishing works, and publishing fails. When it
	// fails the write has been made and this process's cache has dropped
	// what it changed all the same; the caller gets the publish error
	// (other replicas did not hear of it).
	errPublish := errors.New("publish: connection refused")
	for _, step := range steps {
		for _, fail := range []bool{false, true} {
			name := step.name
			if fail {
				name += "/publish fails"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				runInvalidationStep(t, step.do, step.check, step.want, fail, errPublish)
			})
		}
	}
}

// TestDeleteKeyDatabaseDown: when the database cannot delete the key,
// DeleteKey says so, publishes nothing and drops nothing (nothing
// changed), and the key is still there once the database is back.
func TestDeleteKeyDatabaseDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := &bus{}
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheTTL: 24 * time.Hour, Invalidations: b})
	u, s := e.session(t, nil)
	if _, err := e.a.CreateKey(ctx, u.ID, "github", "gh-"+u.ID, nil); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.published = nil
	b.mu.Unlock()
	e.wantValid(t, s.Token)
	e.cs.down.Store(true)
	if err := e.a.DeleteKey(ctx, "github", "gh-"+u.ID); !errors.Is(err, errDown) {
		t.Fatalf("DeleteKey with the database down: %v; want its error", err)
	}
	e.cs.down.Store(false)
	b.mu.Lock()
	if len(b.published) != 0 {
		t.Errorf("published %+v for a delete that did not happen", b.published)
	}
	b.mu.Unlock()
	e.wantValid(t, s.Token)
	e.wantLookups(t, 1, "after the failed delete (still cached)")
	if _, err := e.a.GetKey(ctx, "github", "gh-"+u.ID); err != nil {
		t.Errorf("the key after the failed delete: %v; want it there", err)
	}
}

// runInvalidationStep makes a cached session, runs do (with publishing
// failing if fail), then check, and checks that want was published once.
func runInvalidationStep(t *testing.T, do func(e cacheEnv, u auth.User, s auth.Session) error,
	check func(t *testing.T, e cacheEnv, s auth.Session), want auth.Invalidation, fail bool, errPublish error) {
	ctx := context.Background()
	b := &bus{}
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheTTL: 24 * time.Hour, Invalidations: b})
	u, s := e.session(t, map[string]any{"role": "admin"})
	if _, err := e.a.CreateKey(ctx, u.ID, "email", "pw-"+u.ID, ptr("old password")); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.published = nil // the key's creation
	if fail {
		b.fail = errPublish
	}
	b.mu.Unlock()
	e.wantValid(t, s.Token)
	e.wantValid(t, s.Token)
	e.wantLookups(t, 1, "before")
	err := do(e, u, s)
	switch {
	case fail && !errors.Is(err, errPublish):
		t.Fatalf("publish failing: got %v; want the publish error", err)
	case !fail && err != nil:
		t.Fatal(err)
	}
	check(t, e, s)
	if want.SessionID == "*" {
		want.SessionID = s.ID
	}
	if want.UserID == "*" {
		want.UserID = u.ID
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.published) != 1 || b.published[0] != want {
		t.Fatalf("published %+v; want [%+v]", b.published, want)
	}
}

// TestCacheInvalidationAcrossAuths: two Auths on one database (two
// replicas) with a bus between them: a revocation through A is refused by
// B at once, while B without the bus would serve its cached copy.
func TestCacheInvalidationAcrossAuths(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storagetest.OpenSQLite(t)
	c := newClock()
	b := &bus{}
	a := newCacheEnv(t, st, c, auth.Options{CacheTTL: time.Hour, Invalidations: b})
	bb := newCacheEnv(t, st, c, auth.Options{CacheTTL: time.Hour, Invalidations: b})
	deaf := newCacheEnv(t, st, c, auth.Options{CacheTTL: time.Hour})
	b.receivers = []*auth.Auth{a.a, bb.a}
	_, s := a.session(t, nil)
	u2, s2 := a.session(t, nil)
	for _, e := range []cacheEnv{a, bb, deaf} {
		e.wantValid(t, s.Token)
		e.wantValid(t, s2.Token)
	}
	if err := a.a.InvalidateSession(ctx, s.Token); err != nil {
		t.Fatal(err)
	}
	bb.wantInvalid(t, s.Token, "B after a revocation through A")
	a.wantInvalid(t, s.Token, "A after its own revocation")
	deaf.wantValid(t, s.Token) // what the feed is for: within its TTL it cannot know
	if _, err := bb.a.InvalidateAllUserSessions(ctx, u2.ID); err != nil {
		t.Fatal(err)
	}
	a.wantInvalid(t, s2.Token, "A after revoke-all through B")
	// The feed going down empties the cache and bypasses it until it is
	// back; then it starts empty.
	_, s3 := a.session(t, nil)
	bb.wantValid(t, s3.Token)
	n := bb.cs.lookups.Load()
	bb.a.SetInvalidationFeed(false)
	if bb.a.CacheLen() != 0 {
		t.Fatal("cache not emptied when the feed went down")
	}
	bb.wantValid(t, s3.Token)
	bb.wantValid(t, s3.Token)
	bb.wantLookups(t, n+2, "feed down: every validation reads the database")
	bb.a.SetInvalidationFeed(true)
	bb.wantValid(t, s3.Token)
	bb.wantValid(t, s3.Token)
	bb.wantLookups(t, n+3, "feed back: cached again")
	bb.a.FlushCache()
	bb.wantValid(t, s3.Token)
	bb.wantLookups(t, n+4, "after FlushCache")
}

// TestCacheFillRacesInvalidation: a lookup that read the database before
// an invalidation and finishes after it must not cache what it read.
func TestCacheFillRacesInvalidation(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheTTL: time.Hour})
	_, s := e.session(t, nil)
	hold, reading := make(chan struct{}), make(chan struct{})
	e.cs.mu.Lock()
	e.cs.hold, e.cs.reading = hold, reading
	e.cs.mu.Unlock()
	done := make(chan error)
	go func() {
		_, err := e.a.ValidateSession(context.Background(), s.Token)
		done <- err
	}()
	<-reading
	// Another replica revokes it; its notification arrives now.
	if err := e.st.DeleteSession(context.Background(), s.ID); err != nil {
		t.Fatal(err)
	}
	e.a.ApplyInvalidation(auth.Invalidation{SessionID: s.ID})
	close(hold)
	if err := <-done; err != nil {
		t.Fatalf("the racing validation: %v (it read before the revocation)", err)
	}
	e.wantInvalid(t, s.Token, "after the racing fill")
}

func TestCacheBounded(t *testing.T) {
	t.Parallel()
	const size = 128 // 2 per shard
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheSize: size, CacheTTL: time.Hour})
	ctx := context.Background()
	u, _ := e.session(t, nil)
	var tokens []string
	for range 1000 {
		s, err := e.a.CreateSession(ctx, u.ID, auth.SessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, s.Token)
		e.wantValid(t, s.Token)
		if n := e.a.CacheLen(); n > size {
			t.Fatalf("CacheLen = %d; want at most %d", n, size)
		}
	}
	if n := e.a.CacheLen(); n < size/2 {
		t.Fatalf("CacheLen = %d; want close to %d", n, size)
	}
	// Least recently used goes first: the last one validated is still in.
	n := e.cs.lookups.Load()
	e.wantValid(t, tokens[len(tokens)-1])
	e.wantLookups(t, n, "most recent session")
	// A user invalidation reaches every shard.
	if _, err := e.a.InvalidateAllUserSessions(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if n := e.a.CacheLen(); n != 0 {
		t.Fatalf("CacheLen after revoking the user's sessions = %d; want 0", n)
	}
}

// TestCacheConcurrent hammers the cache from many goroutines (run with
// -race) and checks the one promise that matters: once InvalidateSession
// has returned, no validation in this process accepts that session.
func TestCacheConcurrent(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheSize: 64, CacheTTL: time.Hour, TouchInterval: time.Millisecond})
	ctx := context.Background()
	u, _ := e.session(t, nil)
	var tokens []string
	for range 200 {
		s, err := e.a.CreateSession(ctx, u.ID, auth.SessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, s.Token)
	}
	var revoked sync.Map
	// Validators run until the invalidator is done and for at least
	// minRounds each, so that they overlap it however the scheduler runs
	// them.
	const minRounds = 200
	done := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i, n := g, 0; ; i, n = i+7, n+1 {
				if n >= minRounds {
					select {
					case <-done:
						return
					default:
					}
				}
				tok := tokens[i%len(tokens)]
				_, wasRevoked := revoked.Load(tok)
				var err error
				if g%2 == 0 {
					// Views share the cache's slots with get's values.
					var v *auth.SessionView
					if v, err = e.a.ValidateSessionView(ctx, tok); err == nil && v.Session.Token != tok {
						t.Errorf("view of session %d has another token", i%len(tokens))
						return
					}
				} else {
					_, err = e.a.ValidateSession(ctx, tok)
				}
				if wasRevoked && err == nil {
					t.Errorf("revoked session %d validated", i%len(tokens))
					return
				}
				if err != nil && !errors.Is(err, auth.ErrInvalidSessionID) {
					t.Error(err)
					return
				}
				if i%50 == 0 {
					e.clock.Advance(time.Millisecond)
				}
			}
		})
	}
	wg.Go(func() {
		defer close(done)
		for i := 0; i < len(tokens); i += 3 {
			if err := e.a.InvalidateSession(ctx, tokens[i]); err != nil {
				t.Error(err)
				return
			}
			revoked.Store(tokens[i], true)
			switch i % 30 {
			case 0:
				e.a.FlushCache()
			case 9:
				e.a.SetInvalidationFeed(false)
				e.a.SetInvalidationFeed(true)
			case 18:
				e.a.ApplyInvalidation(auth.Invalidation{UserID: u.ID})
			}
			runtime.Gosched()
		}
	})
	wg.Wait()
	if n := e.a.CacheLen(); n > 64 {
		t.Fatalf("CacheLen = %d; want at most 64", n)
	}
}

func TestParseInvalidation(t *testing.T) {
	t.Parallel()
	for _, ev := range []auth.Invalidation{{SessionID: "ab12"}, {UserID: "u1"}, {UserID: "with:colon"}} {
		got, ok := auth.ParseInvalidation(ev.String())
		if !ok || got != ev {
			t.Errorf("ParseInvalidation(%q) = %+v, %v; want %+v", ev.String(), got, ok, ev)
		}
	}
	for _, bad := range []string{"", "s:", "x:1", "nocolon"} {
		if got, ok := auth.ParseInvalidation(bad); ok {
			t.Errorf("ParseInvalidation(%q) = %+v; want not ok", bad, got)
		}
	}
}

// BenchmarkValidateSessionCached validates an active session that the
// cache holds: no database work at all.
func BenchmarkValidateSessionCached(b *testing.B) {
	for _, be := range []struct {
		name string
		open func(testing.TB) *sqlstore.Store
	}{{"sqlite", func(t testing.TB) *sqlstore.Store { return storagetest.OpenSQLite(t) }}, {"postgres", func(t testing.TB) *sqlstore.Store { return storagetest.OpenPostgres(t) }}} {
		b.Run(be.name, func(b *testing.B) {
			a, err := auth.New(be.open(b), auth.Options{Passwords: cheapHasher(), CacheSize: 10000})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			u, err := a.CreateUser(ctx, auth.CreateUserOptions{Attributes: map[string]any{"role": "admin"}})
			if err != nil {
				b.Fatal(err)
			}
			s, err := a.CreateSession(ctx, u.ID, auth.SessionOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := a.ValidateSession(ctx, s.Token); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestCacheLRUPromotion: a hit moves its entry to the front of the LRU
// list (at most once a second), so a session in use outlives idle ones.
func TestCacheLRUPromotion(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheSize: 128, CacheTTL: time.Hour}) // 2 per shard
	ctx := context.Background()
	u, _ := e.session(t, nil)
	// Three sessions of one shard (the first byte of the id, modulo 64).
	byShard := map[string][]string{}
	var same []string
	for same == nil {
		s, err := e.a.CreateSession(ctx, u.ID, auth.SessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := strconv.ParseUint(s.ID[:2], 16, 8)
		shard := strconv.FormatUint(b%64, 10)
		byShard[shard] = append(byShard[shard], s.Token)
		if len(byShard[shard]) == 3 {
			same = byShard[shard]
		}
	}
	a, b, c := same[0], same[1], same[2]
	e.wantValid(t, a)
	e.clock.Advance(2 * time.Second)
	e.wantValid(t, b) // the shard holds b, a (a least recently used)
	e.clock.Advance(2 * time.Second)
	e.wantValid(t, a) // a hit: a moves to the front
	n := e.cs.lookups.Load()
	e.wantValid(t, c) // a miss that evicts the least recently used: b
	e.wantValid(t, a)
	e.wantLookups(t, n+1, "the promoted session after an eviction")
	e.wantValid(t, b)
	e.wantLookups(t, n+2, "the evicted session")
}
