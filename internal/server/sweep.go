package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/brokerauth/broker/storage"
)

// SweepOptions configure [Sweep].
type SweepOptions struct {
	Interval  time.Duration    // default 5m
	BatchSize int              // rows per DELETE, default 1000
	Now       func() time.Time // default time.Now
	// AuditRetention is how long audit events are kept (audit.retention):
	// older ones are deleted. 0 keeps them all.
	AuditRetention time.Duration
}

// Sweep deletes dead sessions, expired verification tokens, expired
// consumed flow states, ended rate-limit windows and audit events older
// than AuditRetention every Interval, in batches so that no statement
// holds locks for long, until ctx ends. Every replica may run it: the
// deletes are idempotent.
func Sweep(ctx context.Context, st storage.Store, log *slog.Logger, o SweepOptions) {
	if o.Interval <= 0 {
		o.Interval = 5 * time.Minute
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 1000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		SweepOnce(ctx, st, log, o)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SweepOnce runs one sweep and returns how many rows it deleted.
func SweepOnce(ctx context.Context, st storage.Store, log *slog.Logger, o SweepOptions) int64 {
	if o.BatchSize <= 0 {
		o.BatchSize = 1000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	var total int64
	for _, job := range []struct {
		name string
		del  func(context.Context, time.Time, int) (int64, error)
	}{
		{"sessions", st.DeleteDeadSessions},
		{"verification_tokens", st.DeleteExpiredVerificationTokens},
		{"flow_states", st.DeleteExpiredFlowStates},
		{"rate_limits", st.DeleteExpiredRateLimits},
		{"audit_log", func(ctx context.Context, now time.Time, n int) (int64, error) {
			if o.AuditRetention <= 0 {
				return 0, nil
			}
			return st.DeleteAuditBefore(ctx, now.Add(-o.AuditRetention), n)
		}},
	} {
		for ctx.Err() == nil {
			n, err := job.del(ctx, o.Now().UTC(), o.BatchSize)
			if err != nil {
				log.Warn("sweep failed", "table", job.name, "err", err)
				break
			}
			total += n
			if n < int64(o.BatchSize) {
				break
			}
		}
	}
	if total > 0 {
		log.Info("swept expired rows", "rows", total)
	}
	return total
}
