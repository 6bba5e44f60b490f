package sqlstore_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"testing"
	"time"

	"github.com/brokerauth/broker/storage"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

// backends are the databases the benchmarks run on.
var backends = []struct {
	name string
	open func(testing.TB) *sqlstore.Store
}{
	{"sqlite", storagetest.OpenSQLite},
	{"postgres", storagetest.OpenPostgres},
}

func benchSessionID(i int) string {
	h := sha256.Sum256([]byte("token-" + strconv.Itoa(i)))
	return hex.EncodeToString(h[:])
}

func benchSession(id string, now time.Time) storage.Session {
	return storage.Session{
		ID: id, UserID: "u1",
		ActiveExpires: now.Add(24 * time.Hour), IdleExpires: now.Add(15 * 24 * time.Hour),
		CreatedAt: now, AuthenticatedAt: now, LastSeenAt: now,
		UserAgent: "Mozilla/5.0 (X11; Linux x86_64)", IP: "192.0.2.1",
		Attributes: map[string]any{"theme": "dark"},
	}
}

func benchStore(b *testing.B, open func(testing.TB) *sqlstore.Store) *sqlstore.Store {
	s := open(b)
	now := time.Now()
	email := "alice@example.com"
	u := storage.User{ID: "u1", Email: &email, EmailVerifiedAt: &now, Attributes: map[string]any{"role": "admin"}, CreatedAt: now, UpdatedAt: now}
	if err := s.CreateUser(b.Context(), u, nil); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkGetSessionAndUser measures the lookup behind every session
// validation.
func BenchmarkGetSessionAndUser(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			s := benchStore(b, be.open)
			ctx := b.Context()
			id := benchSessionID(0)
			if err := s.CreateSession(ctx, benchSession(id, time.Now())); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, _, err := s.GetSessionAndUser(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCreateSession measures a sign-in's write.
func BenchmarkCreateSession(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			s := benchStore(b, be.open)
			ctx := b.Context()
			now := time.Now()
			i := 0
			for b.Loop() {
				i++
				if err := s.CreateSession(ctx, benchSession(benchSessionID(i), now)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
