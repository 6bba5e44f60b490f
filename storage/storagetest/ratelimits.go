package storagetest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/brokerauth/broker/storage"
)

// rateLimitTests are the suite's subtests of [storage.RateLimits]; [Run]
// runs them with the others.
var rateLimitTests = []struct {
	name string
	fn   func(t *testing.T, s storage.Store)
}{
	{"RateLimits/Hit", testRateLimitHit},
	{"RateLimits/WindowEnds", testRateLimitWindowEnds},
	{"RateLimits/GiveBack", testRateLimitGiveBack},
	{"RateLimits/Reset", testRateLimitReset},
	{"RateLimits/Concurrent", testRateLimitConcurrent},
	{"RateLimits/DeleteExpired", testDeleteExpiredRateLimits},
}

func hit(t *testing.T, s storage.Store, bucket string, n int, window time.Duration, now time.Time) (int, time.Time) {
	t.Helper()
	c, reset, err := s.HitRateLimit(t.Context(), bucket, n, window, now)
	if err != nil {
		t.Fatalf("HitRateLimit(%s, %d) = %v", bucket, n, err)
	}
	return c, reset
}

func wantHit(t *testing.T, s storage.Store, bucket string, n int, window time.Duration, now time.Time, wantCount int, wantReset time.Time) {
	t.Helper()
	c, reset := hit(t, s, bucket, n, window, now)
	if c != wantCount || !reset.Equal(wantReset) {
		t.Errorf("HitRateLimit(%s, %d) at %v = %d, %v; want %d, %v", bucket, n, now.Sub(t0), c, reset.Sub(t0), wantCount, wantReset.Sub(t0))
	}
}

func testRateLimitHit(t *testing.T, s storage.Store) {
	w := 15 * time.Minute
	wantHit(t, s, "login-key:email:a@example.com", 1, w, t0, 1, at(w))
	// Later hits in the window count up and keep the window's end.
	wantHit(t, s, "login-key:email:a@example.com", 1, w, at(time.Minute), 2, at(w))
	wantHit(t, s, "login-key:email:a@example.com", 3, w, at(w-time.Microsecond), 5, at(w))
	// Buckets are independent, and compared exactly.
	wantHit(t, s, "login-key:email:A@example.com", 1, w, at(time.Minute), 1, at(time.Minute+w))
	wantHit(t, s, "login-ip:192.0.2.1", 1, time.Hour, at(time.Minute), 1, at(time.Minute+time.Hour))
	// n = 0 reads the count.
	wantHit(t, s, "login-key:email:a@example.com", 0, w, at(2*time.Minute), 5, at(w))
	if _, _, err := s.HitRateLimit(t.Context(), "b", 1, 0, t0); err == nil {
		t.Errorf("HitRateLimit(window 0) = nil error; want an error")
	}
}

func testRateLimitWindowEnds(t *testing.T, s storage.Store) {
	w := time.Minute
	wantHit(t, s, "b", 1, w, t0, 1, at(w))
	wantHit(t, s, "b", 1, w, t0, 2, at(w))
	// At the window's end a new window starts with this hit.
	wantHit(t, s, "b", 1, w, at(w), 1, at(2*w))
	wantHit(t, s, "b", 1, w, at(w+time.Second), 2, at(2*w))
	// Long after, too; the new window may be of another length.
	wantHit(t, s, "b", 2, time.Hour, at(10*w), 2, at(10*w+time.Hour))
}

func testRateLimitGiveBack(t *testing.T, s storage.Store) {
	w := time.Minute
	wantHit(t, s, "b", 2, w, t0, 2, at(w))
	wantHit(t, s, "b", -1, w, t0, 1, at(w))
	wantHit(t, s, "b", -5, w, t0, 0, at(w)) // never below 0
	wantHit(t, s, "b", 1, w, t0, 1, at(w))
	// Giving back to a new or ended window starts it at 0.
	wantHit(t, s, "new", -1, w, t0, 0, at(w))
	wantHit(t, s, "b", -1, w, at(w), 0, at(2*w))
}

func testRateLimitReset(t *testing.T, s storage.Store) {
	w := time.Minute
	wantHit(t, s, "b", 3, w, t0, 3, at(w))
	wantHit(t, s, "other", 1, w, t0, 1, at(w))
	noErr(t, "ResetRateLimit", s.ResetRateLimit(t.Context(), "b"))
	wantHit(t, s, "b", 1, w, at(time.Second), 1, at(time.Second+w))
	wantHit(t, s, "other", 1, w, at(time.Second), 2, at(w))
	noErr(t, "ResetRateLimit(unknown)", s.ResetRateLimit(t.Context(), "unknown"))
}

// HitRateLimitConcurrently hits bucket n times at once, spread over stores
// (e.g. two Stores on one database, as two replicas have), and checks that
// every hit counted: the counts returned are exactly 1..n.
func HitRateLimitConcurrently(t *testing.T, bucket string, n int, stores ...storage.Store) {
	t.Helper()
	counts := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			counts[i], _, errs[i] = stores[i%len(stores)].HitRateLimit(t.Context(), bucket, 1, time.Hour, t0)
		})
	}
	wg.Wait()
	for _, err := range errs {
		noErr(t, "HitRateLimit(concurrent)", err)
	}
	slices.Sort(counts)
	want := make([]int, n)
	for i := range want {
		want[i] = i + 1
	}
	diff(t, "counts returned by concurrent HitRateLimit", want, counts)
}

func testRateLimitConcurrent(t *testing.T, s storage.Store) {
	HitRateLimitConcurrently(t, "race", 16, s)
}

func testDeleteExpiredRateLimits(t *testing.T, s storage.Store) {
	ctx := t.Context()
	for _, b := range []string{"e1", "e2", "e3"} {
		hit(t, s, b, 1, time.Minute, t0)
	}
	hit(t, s, "live", 4, time.Minute+time.Microsecond, t0)
	now := at(time.Minute)
	var counts []int64
	for range 3 {
		n, err := s.DeleteExpiredRateLimits(ctx, now, 2)
		noErr(t, "DeleteExpiredRateLimits", err)
		counts = append(counts, n)
	}
	diff(t, "DeleteExpiredRateLimits batches", []int64{2, 1, 0}, counts)
	wantHit(t, s, "live", 0, time.Minute, now, 4, at(time.Minute+time.Microsecond))
	if _, err := s.DeleteExpiredRateLimits(ctx, now, 0); err == nil {
		t.Errorf("DeleteExpiredRateLimits(limit 0) = nil error; want an error")
	}
}
