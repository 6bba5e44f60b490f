package auth

import (
	"crypto/rand"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/brokerauth/broker/storage"
)

// fillCache puts n sessions of n distinct users, shaped like a broker's
// (email, name, verified, one attribute, a user agent and IP), into c, and
// returns their keys.
func fillCache(c *sessionCache, n int) [][32]byte {
	now := time.Now().UTC()
	keys := make([][32]byte, 0, n)
	for i := range n {
		var k [32]byte
		_, _ = rand.Read(k[:])
		email, name := fmt.Sprintf("user%d@example.com", i), fmt.Sprintf("User %d", i)
		u := storage.User{
			ID: fmt.Sprintf("u%014d", i), Email: &email, Name: &name, EmailVerifiedAt: &now,
			Attributes: map[string]any{"role": "user"}, CreatedAt: now, UpdatedAt: now,
		}
		s := storage.Session{
			ID: hexID(&k), UserID: u.ID, ActiveExpires: now.Add(time.Hour), IdleExpires: now.Add(2 * time.Hour),
			CreatedAt: now, AuthenticatedAt: now, LastSeenAt: now,
			UserAgent: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
			IP:        fmt.Sprintf("192.0.2.%d", i%250+1), Attributes: map[string]any{},
		}
		c.put(&k, s, u, now.UnixNano(), c.gen.Load())
		keys = append(keys, k)
	}
	return keys
}

// BenchmarkCacheGC measures what a full session cache costs the garbage
// collector: the time of one collection with 32,768 cached sessions of
// distinct users, and the heap objects each cached session keeps (reported
// as objects/session). Every object is marked on every cycle, so the fewer,
// the cheaper each GC cycle of a busy broker.
//
// In "views", every cached session also has its shared view, as the
// sessions that /auth serves repeatedly do.
func BenchmarkCacheGC(b *testing.B) {
	b.Run("entries", func(b *testing.B) { benchmarkCacheGC(b, false) })
	b.Run("views", func(b *testing.B) { benchmarkCacheGC(b, true) })
}

func benchmarkCacheGC(b *testing.B, views bool) {
	const n = 32768
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	c := newSessionCache(n, time.Hour)
	keys := fillCache(c, n)
	if views {
		a := &Auth{now: time.Now, opts: Options{TouchInterval: time.Hour}, cache: c}
		built := 0
		for _, k := range keys {
			if a.cachedView(GenerateSessionToken(), &k) != nil {
				built++
			}
		}
		if built != c.len() {
			b.Fatalf("%d views of %d cached sessions", built, c.len())
		}
	}
	keys = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := c.len(); got < n*9/10 {
		b.Fatalf("cache holds %d sessions; want about %d", got, n)
	}
	for b.Loop() {
		runtime.GC()
	}
	runtime.KeepAlive(c)
	b.ReportMetric(float64(after.HeapObjects-before.HeapObjects)/n, "objects/session")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/session")
}

// TestCacheEntryRoundTrip: a cached session and its user come back as
// they were stored, whichever optional values they have, and the arena
// keeps each entry's values apart.
func TestCacheEntryRoundTrip(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Microsecond)
	str := func(s string) *string { return &s }
	full := storage.User{
		ID: "u1", Username: str("Ann"), Email: str("ann@example.com"), EmailVerifiedAt: &now,
		Name: str("Ann Ñandú"), Image: str("https://img.example.com/a.png"), WebAuthnHandle: []byte{1, 2, 3},
		Attributes: map[string]any{"role": "admin", "n": 2.0, "tags": []any{"a"}}, CreatedAt: now.Add(-time.Hour), UpdatedAt: now,
	}
	c := newSessionCache(64, time.Hour)
	for i, u := range []storage.User{
		full,
		{ID: "u2", CreatedAt: now, UpdatedAt: now},
		{ID: "u3", Email: str(""), Name: str("only a name"), WebAuthnHandle: []byte{}, CreatedAt: now, UpdatedAt: now},
	} {
		k := cacheKey(fmt.Sprint("token", i))
		s := storage.Session{
			ID: hexID(&k), UserID: u.ID, ActiveExpires: now.Add(time.Hour), IdleExpires: now.Add(2 * time.Hour),
			CreatedAt: now.Add(-time.Minute), AuthenticatedAt: now.Add(-time.Second), LastSeenAt: now,
			UserAgent: "agent " + u.ID, IP: "192.0.2.1",
		}
		if i == 0 {
			s.Attributes = map[string]any{"mfa": true, "amr": []any{"pwd"}}
		}
		if !c.put(&k, s, u, now.UnixNano(), c.gen.Load()) {
			t.Fatalf("put %s: not cached", u.ID)
		}
		got, ok := c.get(&k, now.UnixNano(), 0)
		if !ok {
			t.Fatalf("get %s: miss", u.ID)
		}
		want, wantS := u, s
		if want.Attributes == nil {
			want.Attributes = map[string]any{}
		}
		if wantS.Attributes == nil {
			wantS.Attributes = map[string]any{}
		}
		if !reflect.DeepEqual(got.user, want) {
			t.Errorf("user %s:\n got %+v\nwant %+v", u.ID, got.user, want)
		}
		if !reflect.DeepEqual(got.sess, wantS) {
			t.Errorf("session of %s:\n got %+v\nwant %+v", u.ID, got.sess, wantS)
		}
		// Each caller gets maps and pointed-to values of its own, though
		// the cache keeps the decoded values between hits.
		got.user.Attributes["x"] = 1
		got.sess.Attributes["x"] = 1
		if got.user.Email != nil {
			*got.user.Email = "changed@example.com"
		}
		again, _ := c.get(&k, now.UnixNano(), 0)
		if !reflect.DeepEqual(again.user, want) || !reflect.DeepEqual(again.sess, wantS) {
			t.Errorf("%s: a caller's change to its copy reached the cache:\n got %+v\n     %+v", u.ID, again.user, again.sess)
		}
	}
}

// TestCacheArenaCompaction: values survive the compaction that reclaims
// the arena space of evicted entries.
func TestCacheArenaCompaction(t *testing.T) {
	c := newSessionCache(4*cacheShards, time.Hour)
	now := time.Now().UTC().Truncate(time.Microsecond)
	big := strings.Repeat("x", 4096)
	var keep [][32]byte
	for i := range 2000 {
		k := cacheKey(fmt.Sprint("token", i))
		id := fmt.Sprintf("u%d", i)
		u := storage.User{ID: id, Name: &big, CreatedAt: now, UpdatedAt: now}
		s := storage.Session{ID: hexID(&k), UserID: id, ActiveExpires: now.Add(time.Hour), IdleExpires: now.Add(time.Hour), UserAgent: id}
		c.put(&k, s, u, now.UnixNano(), c.gen.Load())
		keep = append(keep, k)
	}
	compacted := false
	for i := range c.shards {
		sh := &c.shards[i]
		if len(sh.arena) < 8*(4096+64) {
			compacted = true
		}
	}
	if !compacted {
		t.Fatal("no shard's arena was compacted")
	}
	hits := 0
	for i, k := range keep {
		got, ok := c.get(&k, now.UnixNano(), 0)
		if !ok {
			continue
		}
		hits++
		if id := fmt.Sprintf("u%d", i); got.user.ID != id || got.sess.UserAgent != id || *got.user.Name != big {
			t.Fatalf("entry of %s came back as %s (agent %q)", id, got.user.ID, got.sess.UserAgent)
		}
	}
	if hits != c.len() || hits == 0 {
		t.Fatalf("%d hits, %d cached", hits, c.len())
	}
}

// TestCacheUserInvalidationSweep: a user invalidation evicts every cached
// session of that user, whichever shard holds it, and no other user's.
func TestCacheUserInvalidationSweep(t *testing.T) {
	c := newSessionCache(4096, time.Hour)
	now := time.Now().UTC().Truncate(time.Microsecond)
	keys := map[string][][32]byte{}
	for i := range 600 {
		id := []string{"alice", "bob", "carol"}[i%3]
		k := cacheKey(fmt.Sprint("token", i))
		u := storage.User{ID: id, CreatedAt: now, UpdatedAt: now}
		s := storage.Session{ID: hexID(&k), UserID: id, ActiveExpires: now.Add(time.Hour), IdleExpires: now.Add(time.Hour)}
		if !c.put(&k, s, u, now.UnixNano(), c.gen.Load()) {
			t.Fatal("put: not cached")
		}
		keys[id] = append(keys[id], k)
	}
	c.invalidate(Invalidation{UserID: "bob"})
	for id, ks := range keys {
		for _, k := range ks {
			got, ok := c.get(&k, now.UnixNano(), 0)
			if want := id != "bob"; ok != want {
				t.Fatalf("session of %s cached: %v; want %v", id, ok, want)
			}
			if ok && got.user.ID != id {
				t.Fatalf("session of %s came back with user %s", id, got.user.ID)
			}
		}
	}
	if got := c.len(); got != 400 {
		t.Fatalf("%d sessions cached after the sweep; want 400", got)
	}
}

// BenchmarkCacheUserInvalidation measures a user invalidation over a full
// cache of 32,768 sessions: the sweep of every shard for the user's
// entries.
func BenchmarkCacheUserInvalidation(b *testing.B) {
	c := newSessionCache(32768, time.Hour)
	fillCache(c, 32768)
	for b.Loop() {
		c.invalidate(Invalidation{UserID: "nobody"})
	}
}

// TestCacheValuesShared: the values a get keeps serve the entry's view
// too, read-only, and a caller's changes to its copy reach neither; a
// session whose attributes cannot be kept (not JSON) is not cached.
func TestCacheValuesShared(t *testing.T) {
	c := newSessionCache(64, time.Hour)
	now := time.Now().UTC().Truncate(time.Microsecond)
	email := "ann@example.com"
	u := storage.User{ID: "u1", Email: &email, Attributes: map[string]any{"role": "admin"}, CreatedAt: now, UpdatedAt: now}
	k := cacheKey("token")
	s := storage.Session{ID: hexID(&k), UserID: u.ID, ActiveExpires: now.Add(time.Hour), IdleExpires: now.Add(2 * time.Hour)}
	if !c.put(&k, s, u, now.UnixNano(), c.gen.Load()) {
		t.Fatal("put: not cached")
	}
	got, _ := c.get(&k, now.UnixNano(), 0)
	got.user.Attributes["role"] = "changed"
	*got.user.Email = "changed@example.com"
	var built cached
	v, _ := c.view(&k, now.UnixNano(), 0, func(cd cached) *SessionView { built = cd; return &SessionView{} })
	if v == nil {
		t.Fatal("view: none")
	}
	if built.user.Attributes["role"] != "admin" || *built.user.Email != email || built.sess.UserID != u.ID {
		t.Fatalf("view built from %+v; want the stored user, whatever a get's caller did to its copy", built.user)
	}
	if again, _ := c.view(&k, now.UnixNano(), 0, nil); again != v {
		t.Fatal("second view: not the kept one")
	}

	k2 := cacheKey("token2")
	s.ID, s.Attributes = hexID(&k2), map[string]any{"f": func() {}}
	if c.put(&k2, s, u, now.UnixNano(), c.gen.Load()) {
		t.Fatal("a session with attributes that are not JSON was cached")
	}
	if _, ok := c.get(&k2, now.UnixNano(), 0); ok {
		t.Fatal("a session with attributes that are not JSON is cached")
	}
}
