package auth

import (
	"crypto/rand"
	"fmt"
	"reflect"
	"runtime"
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

// TestCompactUser: a cached user comes back as it was stored, whichever
// optional values it has.
func TestCompactUser(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Microsecond)
	str := func(s string) *string { return &s }
	full := storage.User{
		ID: "u1", Username: str("Ann"), Email: str("ann@example.com"), EmailVerifiedAt: &now,
		Name: str("Ann Ñandú"), Image: str("https://img.example.com/a.png"), WebAuthnHandle: []byte{1, 2, 3},
		Attributes: map[string]any{"role": "admin", "n": 2.0, "tags": []any{"a"}}, CreatedAt: now.Add(-time.Hour), UpdatedAt: now,
	}
	for _, u := range []storage.User{
		full,
		{ID: "u2", CreatedAt: now, UpdatedAt: now},
		{ID: "u3", Email: str(""), Name: str("only a name"), CreatedAt: now, UpdatedAt: now},
	} {
		cu := newCompactUser(&u)
		got := cu.user()
		got.Attributes = attrMap(cu.attrs)
		want := u
		if want.Attributes == nil {
			want.Attributes = map[string]any{}
		}
		if cu.id() != u.ID || !reflect.DeepEqual(got, want) {
			t.Errorf("round trip of %s:\n got %+v\nwant %+v", u.ID, got, want)
		}
		// Shared views get the same values, built once.
		shared, again := cu.sharedUser(), cu.sharedUser()
		if !reflect.DeepEqual(shared, want) {
			t.Errorf("shared user of %s:\n got %+v\nwant %+v", u.ID, shared, want)
		}
		if shared.Email != again.Email || reflect.ValueOf(shared.Attributes).Pointer() != reflect.ValueOf(again.Attributes).Pointer() {
			t.Errorf("shared user of %s built twice", u.ID)
		}
	}
}
