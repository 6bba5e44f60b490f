package auth_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/storagetest"
)

// TestSessionViewShared: a session the cache holds is answered with one
// shared view, whose memo is computed once, without reaching the database;
// every change to the session or its user gives a new view.
func TestSessionViewShared(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheTTL: time.Hour, TouchInterval: time.Minute})
	ctx := context.Background()
	u, s := e.session(t, map[string]any{"role": "admin"})
	if v := e.a.CachedSessionView(s.Token); v != nil {
		t.Fatal("CachedSessionView answered for a session never validated")
	}
	e.wantValid(t, s.Token)
	v1 := e.a.CachedSessionView(s.Token)
	if v1 == nil || !v1.Shared() {
		t.Fatalf("CachedSessionView: %v for a cached session; want a shared view", v1)
	}
	if v1.Session.ID != s.ID || v1.Session.Token != s.Token || v1.Session.User.ID != u.ID ||
		v1.Session.User.Attributes["role"] != "admin" || v1.Session.Attributes["device"] != "laptop" ||
		v1.Session.State != auth.StateActive || v1.Session.Fresh {
		t.Fatalf("view = %+v", v1.Session)
	}
	var computed atomic.Int64
	key := new(int)
	memo := func(s *auth.Session) (any, bool) { computed.Add(1); return s.User.Attributes["role"], true }
	for range 10 {
		v, err := e.a.ValidateSessionView(ctx, s.Token)
		if err != nil || v != v1 {
			t.Fatalf("ValidateSessionView = %p, %v; want the shared view %p", v, err, v1)
		}
		if got := v.Memo(key, memo); got != "admin" {
			t.Fatalf("Memo = %v; want admin", got)
		}
	}
	if n := computed.Load(); n != 1 {
		t.Fatalf("memo computed %d times over 10 hits; want 1", n)
	}
	if got := v1.Memo(new(int), func(*auth.Session) (any, bool) { return "other", true }); got != "other" {
		t.Fatalf("Memo with another key = %v; want its own value", got)
	}
	// A result that is not to be kept answers its call only.
	other, transient := new(int), 0
	for i := range 3 {
		got := v1.Memo(other, func(*auth.Session) (any, bool) { transient++; return transient, i == 2 })
		if got != i+1 {
			t.Fatalf("Memo call %d = %v; want %d (the results not kept are computed again)", i+1, got, i+1)
		}
	}
	if got := v1.Memo(other, func(*auth.Session) (any, bool) { return "recomputed", true }); got != 3 {
		t.Fatalf("Memo after a kept result = %v; want the kept 3", got)
	}
	e.wantLookups(t, 1, "view hits")

	// A user change (here, through this process) ends the view at once.
	if _, err := e.a.UpdateUserAttributes(ctx, u.ID, map[string]any{"role": "viewer"}); err != nil {
		t.Fatal(err)
	}
	if v := e.a.CachedSessionView(s.Token); v != nil {
		t.Fatalf("view of an invalidated user: %+v", v.Session.User.Attributes)
	}
	v2, err := e.a.ValidateSessionView(ctx, s.Token)
	if err != nil || v2 == v1 || v2.Session.User.Attributes["role"] != "viewer" {
		t.Fatalf("after the change: %+v, %v; want a new view with role viewer", v2, err)
	}
	if v3 := e.a.CachedSessionView(s.Token); v3 == nil || v3 == v1 || v3.Memo(key, memo) != "viewer" {
		t.Fatalf("the cache's view after the change is stale or missing: %+v", v3)
	}

	// A last-seen write due: no view until validation has written it,
	// then a new one showing it.
	before := e.a.CachedSessionView(s.Token)
	e.clock.Advance(61 * time.Second)
	if v := e.a.CachedSessionView(s.Token); v != nil {
		t.Fatal("CachedSessionView answered with a last-seen write due")
	}
	if n := e.cs.touches.Load(); n != 0 {
		t.Fatalf("CachedSessionView wrote %d times; want none", n)
	}
	e.wantValid(t, s.Token)
	after := e.a.CachedSessionView(s.Token)
	if after == nil || after == before || !after.Session.LastSeenAt.Equal(e.clock.Now()) {
		t.Fatalf("view after the last-seen write: %+v; want a new one seen at %v", after, e.clock.Now())
	}

	// Ending the session ends its view.
	if err := e.a.InvalidateSession(ctx, s.Token); err != nil {
		t.Fatal(err)
	}
	if v := e.a.CachedSessionView(s.Token); v != nil {
		t.Fatal("view of an ended session")
	}
	if _, err := e.a.ValidateSessionView(ctx, s.Token); !errors.Is(err, auth.ErrInvalidSessionID) {
		t.Fatalf("ValidateSessionView of an ended session: %v; want AUTH_INVALID_SESSION_ID", err)
	}
}

// TestSessionViewTime: a view is never answered for a session that time
// made idle (a reset is due: the caller must validate, and send the
// cookie) or dead, nor past the cache TTL.
func TestSessionViewTime(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{
		CacheTTL: time.Hour, ActivePeriod: time.Hour, IdlePeriod: time.Hour, TouchInterval: 24 * time.Hour,
	})
	ctx := context.Background()
	_, s := e.session(t, nil)
	e.wantValid(t, s.Token)
	if e.a.CachedSessionView(s.Token) == nil {
		t.Fatal("no view of a cached active session")
	}
	e.clock.Advance(time.Hour) // exactly at the active expiry: idle
	if v := e.a.CachedSessionView(s.Token); v != nil {
		t.Fatalf("view of an idle session: %+v", v.Session)
	}
	v, err := e.a.ValidateSessionView(ctx, s.Token)
	if err != nil || !v.Session.Fresh || !v.Session.ActiveExpires.Equal(e.clock.Now().Add(time.Hour)) {
		t.Fatalf("ValidateSessionView of an idle session: %+v, %v; want it reset and Fresh", v, err)
	}
	if v2 := e.a.CachedSessionView(s.Token); v2 == nil || v2.Session.Fresh || !v2.Session.ActiveExpires.Equal(v.Session.ActiveExpires) {
		t.Fatalf("view after the reset: %+v; want the reset session, not Fresh", v2)
	}
	e.clock.Advance(2*time.Hour + time.Second) // dead
	if v := e.a.CachedSessionView(s.Token); v != nil {
		t.Fatal("view of a dead session")
	}
	if _, err := e.a.ValidateSessionView(ctx, s.Token); !errors.Is(err, auth.ErrInvalidSessionID) {
		t.Fatalf("ValidateSessionView of a dead session: %v", err)
	}

	// The TTL: a snapshot older than it is not answered for.
	e2 := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheTTL: time.Second})
	_, s2 := e2.session(t, nil)
	e2.wantValid(t, s2.Token)
	e2.clock.Advance(time.Second)
	if v := e2.a.CachedSessionView(s2.Token); v != nil {
		t.Fatal("view of a snapshot as old as the TTL")
	}

	// Without a cache there are no shared views; validation still works.
	off, err := auth.New(storagetest.OpenSQLite(t), auth.Options{Passwords: cheapHasher()})
	if err != nil {
		t.Fatal(err)
	}
	e3 := cacheEnv{a: off}
	_, s3 := e3.session(t, nil)
	e3.wantValid(t, s3.Token)
	if v := off.CachedSessionView(s3.Token); v != nil {
		t.Fatal("view with the cache off")
	}
	if v, err := off.ValidateSessionView(ctx, s3.Token); err != nil || v.Session.ID != s3.ID || v.Shared() {
		t.Fatalf("ValidateSessionView with the cache off: %+v, %v", v, err)
	}
	if e.a.CachedSessionView("malformed") != nil {
		t.Fatal("view of a malformed token")
	}
}

// TestSessionViewRace: views, memos, validations and invalidations of the
// same sessions from many goroutines (for the race detector), and no view
// answered after its user's invalidation returned.
func TestSessionViewRace(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheTTL: time.Hour})
	ctx := context.Background()
	u, s := e.session(t, map[string]any{"n": 0})
	key := new(int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				v, err := e.a.ValidateSessionView(ctx, s.Token)
				if err != nil {
					t.Error(err)
					return
				}
				v.Memo(key, func(s *auth.Session) (any, bool) { return s.User.Attributes["n"], true })
			}
		})
	}
	for i := 1; i <= 20; i++ {
		if _, err := e.a.UpdateUserAttributes(ctx, u.ID, map[string]any{"n": i}); err != nil {
			t.Fatal(err)
		}
		if v := e.a.CachedSessionView(s.Token); v != nil && v.Session.User.Attributes["n"] != float64(i) && v.Session.User.Attributes["n"] != i {
			t.Fatalf("after change %d: view shows n = %v", i, v.Session.User.Attributes["n"])
		}
	}
	wg.Wait()
}

// TestSessionViewRefresh: a shared view in use is renewed in the
// background from three quarters of the TTL, so that a busy session never
// drops out of the cache; the old snapshot answers meanwhile, and never
// past its TTL; a failed, raced or obsolete read is not kept.
func TestSessionViewRefresh(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheTTL: 4 * time.Second, TouchInterval: time.Hour})
	refreshed := make(chan struct{}, 8)
	auth.SetRefreshed(e.a, func() { refreshed <- struct{}{} })
	ctx := context.Background()
	u, s := e.session(t, map[string]any{"role": "admin"})
	waitRefresh := func() {
		t.Helper()
		select {
		case <-refreshed:
		case <-time.After(30 * time.Second): // a guard, not a synchronisation
			t.Fatal("no background refresh finished")
		}
	}
	noRefresh := func(why string) {
		t.Helper()
		if n := auth.RefreshesInFlight(e.a); n != 0 || len(refreshed) != 0 {
			t.Fatalf("%s: a refresh started (%d in flight, %d done)", why, n, len(refreshed))
		}
	}
	view := func(why string) *auth.SessionView {
		t.Helper()
		v := e.a.CachedSessionView(s.Token)
		if v == nil {
			t.Fatalf("%s: no view", why)
		}
		return v
	}
	setRole := func(role string) {
		t.Helper()
		// Behind the cache's back: no invalidation is published.
		if _, err := e.st.UpdateUser(ctx, u.ID, func(u *storage.User) error {
			u.Attributes = map[string]any{"role": role}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	e.wantValid(t, s.Token)
	v1 := view("just validated")
	e.clock.Advance(2999 * time.Millisecond)
	if view("before three quarters of the TTL") != v1 {
		t.Fatal("view changed without a change")
	}
	noRefresh("before three quarters of the TTL")

	// From 3 s (of 4): the snapshot in hand answers and one read renews it.
	setRole("viewer")
	e.clock.Advance(time.Millisecond)
	if v := view("at three quarters of the TTL"); v != v1 || v.Session.User.Attributes["role"] != "admin" {
		t.Fatalf("the old snapshot should answer while the refresh runs: %+v", v.Session.User.Attributes)
	}
	waitRefresh()
	e.wantLookups(t, 2, "one refresh")
	v2 := view("after the refresh")
	if v2 == v1 || v2.Session.User.Attributes["role"] != "viewer" {
		t.Fatalf("after the refresh: role %v; want the renewed snapshot's viewer", v2.Session.User.Attributes["role"])
	}
	noRefresh("a renewed snapshot")
	e.clock.Advance(1500 * time.Millisecond) // past the first read's TTL
	view("past the first read's TTL, within the refresh's")
	noRefresh("1.5 s into the renewed snapshot")
	e.wantLookups(t, 2, "hits after the refresh")

	// The database is down: the read fails, the snapshot answers until
	// its TTL and no further, and each later hit tries again.
	e.cs.down.Store(true)
	e.clock.Advance(1500 * time.Millisecond) // 3 s into the renewed snapshot
	view("refresh due, database down")
	waitRefresh()
	e.wantLookups(t, 3, "a failed refresh")
	e.clock.Advance(500 * time.Millisecond)
	view("after a failed refresh")
	waitRefresh()
	e.wantLookups(t, 4, "the claim of a failed refresh given up")
	e.clock.Advance(500 * time.Millisecond) // 4 s: the TTL
	if v := e.a.CachedSessionView(s.Token); v != nil {
		t.Fatal("a snapshot answered at its TTL because its refreshes failed")
	}
	e.cs.down.Store(false)

	// A read that races with an invalidation is not kept.
	e.wantValid(t, s.Token)
	e.clock.Advance(3 * time.Second)
	hold, reading := make(chan struct{}), make(chan struct{})
	e.cs.mu.Lock()
	e.cs.hold, e.cs.reading = hold, reading
	e.cs.mu.Unlock()
	view("refresh due, to be raced")
	<-reading
	if _, err := e.a.UpdateUserAttributes(ctx, u.ID, map[string]any{"role": "owner"}); err != nil {
		t.Fatal(err)
	}
	close(hold)
	waitRefresh()
	if v := e.a.CachedSessionView(s.Token); v != nil {
		t.Fatalf("a refresh that read before an invalidation was kept: role %v", v.Session.User.Attributes["role"])
	}
	if v, err := e.a.ValidateSessionView(ctx, s.Token); err != nil || v.Session.User.Attributes["role"] != "owner" {
		t.Fatalf("after the raced refresh: %+v, %v; want role owner", v, err)
	}

	// A session deleted behind the cache's back leaves it at its refresh,
	// before its TTL.
	if err := e.st.DeleteSession(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(3 * time.Second)
	view("refresh due, session deleted")
	waitRefresh()
	if v := e.a.CachedSessionView(s.Token); v != nil {
		t.Fatal("a session the refresh found deleted still answers")
	}
	e.wantInvalid(t, s.Token, "deleted, after the refresh")
}

// TestSessionViewRefreshDead: a refresh that finds the session dead in the
// database (its expiry moved behind the cache's back) drops it at once,
// before its snapshot's TTL.
func TestSessionViewRefreshDead(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, storagetest.OpenSQLite(t), nil, auth.Options{CacheTTL: 4 * time.Second, TouchInterval: time.Hour})
	refreshed := make(chan struct{}, 1)
	auth.SetRefreshed(e.a, func() { refreshed <- struct{}{} })
	_, s := e.session(t, nil)
	e.wantValid(t, s.Token)
	past := e.clock.Now().Add(-time.Second)
	if err := e.st.TouchSession(context.Background(), s.ID, past, past, past); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(3 * time.Second)
	if v := e.a.CachedSessionView(s.Token); v == nil {
		t.Fatal("no view of the cached snapshot while the refresh is due")
	}
	select {
	case <-refreshed:
	case <-time.After(30 * time.Second): // a guard, not a synchronisation
		t.Fatal("no background refresh finished")
	}
	if v := e.a.CachedSessionView(s.Token); v != nil {
		t.Fatal("a session the refresh found dead still answers")
	}
	if n := e.a.CacheLen(); n != 0 {
		t.Fatalf("CacheLen = %d after the refresh found the session dead; want 0", n)
	}
	e.wantInvalid(t, s.Token, "dead in the database")
}
