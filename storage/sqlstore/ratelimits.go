package sqlstore

import (
	"context"
	"fmt"
	"time"
)

// hitRateLimitQuery adds to a bucket's count in one statement: it inserts
// a new window, or, when the bucket exists, either adds to its live window
// or (when that window has ended) replaces it with a new one. Within an
// ON CONFLICT ... DO UPDATE both dialects evaluate every SET expression
// against the row as it was, and the row is locked (PostgreSQL) or the
// database is (SQLite) for the statement, so concurrent hits all count.
// Parameters: bucket, hits of a new window, end of a new window, then
// now, n, n (for the live window), now, end of a new window.
const hitRateLimitQuery = `INSERT INTO rate_limits AS r (bucket, hits, expires) VALUES (?, ?, ?)
	ON CONFLICT (bucket) DO UPDATE SET
		hits = CASE WHEN r.expires <= ? THEN excluded.hits
			WHEN r.hits + ? < 0 THEN 0 ELSE r.hits + ? END,
		expires = CASE WHEN r.expires <= ? THEN ? ELSE r.expires END
	RETURNING hits, expires`

// HitRateLimit adds n to bucket's count in its current window and returns
// the new count and the window's end, in one atomic INSERT ... ON CONFLICT
// DO UPDATE ... RETURNING. A bucket without a live window (none, or one
// that ended at or before now) starts a new window [now, now+window)
// holding max(n, 0); the count never goes below 0.
func (s *Store) HitRateLimit(ctx context.Context, bucket string, n int, window time.Duration, now time.Time) (int, time.Time, error) {
	if window <= 0 {
		return 0, time.Time{}, fmt.Errorf("sqlstore: hit rate limit: window %v is not positive", window)
	}
	st, err := s.stmt(ctx, hitRateLimitQuery)
	if err != nil {
		return 0, time.Time{}, dbErr("hit rate limit", err)
	}
	end := s.tv(now.Add(window))
	var r struct {
		Hits    int    `db:"hits"`
		Expires dbTime `db:"expires"`
	}
	if err := st.GetContext(ctx, &r, bucket, max(n, 0), end, s.tv(now), n, n, s.tv(now), end); err != nil {
		return 0, time.Time{}, dbErr("hit rate limit", err)
	}
	return r.Hits, r.Expires.Time, nil
}

// ResetRateLimit deletes bucket's count; an unknown bucket is no error.
func (s *Store) ResetRateLimit(ctx context.Context, bucket string) error {
	_, err := s.db.ExecContext(ctx, s.q(`DELETE FROM rate_limits WHERE bucket = ?`), bucket)
	return dbErr("reset rate limit", err)
}

// DeleteExpiredRateLimits deletes up to limit buckets whose window ended at
// or before now, returning how many. limit must be positive.
func (s *Store) DeleteExpiredRateLimits(ctx context.Context, now time.Time, limit int) (int64, error) {
	return s.deleteBatch(ctx, "delete expired rate limits",
		`DELETE FROM rate_limits WHERE bucket IN (SELECT bucket FROM rate_limits WHERE expires <= ? LIMIT ?)`, now, limit)
}
