package server_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/brokerauth/broker/internal/server"
	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/storagetest"
)

// TestSweepOnce deletes dead sessions, expired verification tokens and
// expired flow states in batches, and keeps everything still alive.
func TestSweepOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storagetest.OpenSQLite(t)
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	if err := st.CreateUser(ctx, storage.User{ID: "u1", CreatedAt: now, UpdatedAt: now}, nil); err != nil {
		t.Fatal(err)
	}
	session := func(id string, idle time.Time) {
		t.Helper()
		s := storage.Session{ID: id, UserID: "u1", ActiveExpires: idle.Add(-time.Hour), IdleExpires: idle,
			CreatedAt: now.Add(-48 * time.Hour), AuthenticatedAt: now.Add(-48 * time.Hour), LastSeenAt: now.Add(-48 * time.Hour)}
		if err := st.CreateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	dead := []string{}
	for i := range 7 {
		id := string(rune('a'+i)) + "dead"
		session(id, now.Add(-time.Duration(i+1)*time.Minute))
		dead = append(dead, id)
	}
	session("alive", now.Add(time.Minute))
	if err := st.CreateVerificationToken(ctx, storage.VerificationToken{Identifier: "a@x", TokenHash: "old", Expires: now.Add(-time.Second), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateVerificationToken(ctx, storage.VerificationToken{Identifier: "a@x", TokenHash: "new", Expires: now.Add(time.Hour), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := st.ConsumeFlowState(ctx, "flow-old", now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := st.ConsumeFlowState(ctx, "flow-new", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	n := server.SweepOnce(ctx, st, slog.New(slog.DiscardHandler), server.SweepOptions{BatchSize: 3, Now: func() time.Time { return now }})
	if n != 9 {
		t.Fatalf("swept %d rows; want 9 (7 sessions in batches of 3, 1 token, 1 flow state)", n)
	}
	for _, id := range dead {
		if _, err := st.GetSession(ctx, id); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("dead session %s survived: %v", id, err)
		}
	}
	if _, err := st.GetSession(ctx, "alive"); err != nil {
		t.Fatalf("live session swept: %v", err)
	}
	if _, err := st.UseVerificationToken(ctx, "a@x", "new", now); err != nil {
		t.Fatalf("live token swept: %v", err)
	}
	if err := st.ConsumeFlowState(ctx, "flow-new", now.Add(time.Hour)); !errors.Is(err, storage.ErrConsumed) {
		t.Fatalf("live flow state swept: %v", err)
	}
	if err := st.ConsumeFlowState(ctx, "flow-old", now.Add(time.Hour)); err != nil {
		t.Fatalf("expired flow state not swept: %v", err)
	}
}
