package auth_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokerauth/broker/auth"
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
	memo := func(s *auth.Session) any { computed.Add(1); return s.User.Attributes["role"] }
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
	if got := v1.Memo(new(int), func(*auth.Session) any { return "other" }); got != "other" {
		t.Fatalf("Memo with another key = %v; want its own value", got)
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
				v.Memo(key, func(s *auth.Session) any { return s.User.Attributes["n"] })
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
