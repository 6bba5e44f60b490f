package auth_test

import (
	"context"
	"testing"

	"github.com/brokerauth/broker/auth"
	"github.com/brokerauth/broker/storage/sqlstore"
	"github.com/brokerauth/broker/storage/storagetest"
)

func benchBackends(b *testing.B, f func(b *testing.B, a *auth.Auth)) {
	for _, be := range []struct {
		name string
		open func(testing.TB) *sqlstore.Store
	}{{"sqlite", func(t testing.TB) *sqlstore.Store { return storagetest.OpenSQLite(t) }}, {"postgres", func(t testing.TB) *sqlstore.Store { return storagetest.OpenPostgres(t) }}} {
		b.Run(be.name, func(b *testing.B) {
			a, err := auth.New(be.open(b), auth.Options{Passwords: cheapHasher()})
			if err != nil {
				b.Fatal(err)
			}
			f(b, a)
		})
	}
}

// BenchmarkValidateSession validates an active session: one joined
// session+user lookup, no write.
func BenchmarkValidateSession(b *testing.B) {
	benchBackends(b, func(b *testing.B, a *auth.Auth) {
		ctx := context.Background()
		u, err := a.CreateUser(ctx, auth.CreateUserOptions{})
		if err != nil {
			b.Fatal(err)
		}
		s, err := a.CreateSession(ctx, u.ID, auth.SessionOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := a.ValidateSession(ctx, s.Token); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCreateSession creates sessions for one user.
func BenchmarkCreateSession(b *testing.B) {
	benchBackends(b, func(b *testing.B, a *auth.Auth) {
		ctx := context.Background()
		u, err := a.CreateUser(ctx, auth.CreateUserOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := a.CreateSession(ctx, u.ID, auth.SessionOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkValidateMalformed shows that a malformed token costs no
// database work.
func BenchmarkValidateMalformed(b *testing.B) {
	a, err := auth.New(storagetest.OpenSQLite(b), auth.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		_, _ = a.ValidateSession(ctx, "not-a-token")
	}
}
